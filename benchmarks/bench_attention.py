"""Attention micro-benchmark: rlx's blocked attention kernel against torch SDPA and the GEMM rate.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        python -m benchmarks.bench_attention --threads 2 --rounds 5

Why: in SAM 2's hiera_t image side the three global attention blocks (4
heads x 4096 x 4096, head dim 96) are about a third of rlx's time, and the
question is how close the kernel is to what the CPU can do -- measured as
GFLOP/s (2 FLOP per multiply-add of q k^T and p v; softmax not counted) next
to the GEMM rate of the same products done by numpy's sgemm and torch's
matmul, and next to torch's ``F.scaled_dot_product_attention`` (what the
official SAM 2 code calls) on the same operands.

The operands are laid out as the models lay them out: q, k and v are
strided views into one packed ``[tokens, 3 * heads * d]`` qkv projection
(rlx reads them in place, torch gets the same non-contiguous views).

Shapes (``--shapes``, comma separated):

* ``hiera_t_global``  4 heads x 4096 x 4096 x 96 (SAM 2 hiera_t stage 3, 3 blocks)
* ``hiera_bp_global`` 8 heads x 4096 x 4096 x 56 (hiera_b+ stage 3, 3 blocks)
* ``vit_b_global``    12 heads x 4096 x 4096 x 64 (SAM v1 ViT-B, no rel-pos here)
* ``hiera_t_win14``   25 windows x 4 heads x 196 x 196 x 96 (hiera_t stage 3 windowed)
* ``hiera_t_win8``    1024 windows x 1 head x 64 x 64 x 96 (hiera_t stage 1)

Everything runs in one process (threads set before numpy and torch load
their libraries); the systems are interleaved inside every round, each
round times ``--runs`` calls per system, and the table gives the median over
rounds (and min - max). Nothing is asserted: timing is reported only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

# shape name -> (batch entries (windows), heads, tokens, head dim)
SHAPES = {
    "hiera_t_global": (1, 4, 4096, 96),
    "hiera_bp_global": (1, 8, 4096, 56),
    "vit_b_global": (1, 12, 4096, 64),
    "hiera_t_win14": (25, 4, 196, 96),
    "hiera_t_win8": (1024, 1, 64, 96),
}


def _set_threads(threads: int) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "NUMBA_NUM_THREADS", "RLX_NUM_THREADS"):
        os.environ[var] = str(threads)


def attention_flops(shape) -> float:
    b, h, n, d = shape
    return 2.0 * 2 * b * h * n * n * d


def _rlx_attention(shape, threads: int, cache_dir: str):
    """Compiled rlx graph: packed qkv [b, n, 3*h*d] -> attention [b*h, n, d] (the hiera layout)."""
    from rlx.ir import GraphBuilder
    from rlx.runtime import compile_graph
    from rlx.runtime.profile import PRESETS

    b, h, n, d = shape
    g = GraphBuilder("attention")
    qkv = g.reshape(g.input("qkv", (b, n, 3 * h * d)), shape=(b, n, 3, h, d))

    def heads_first(j):
        t = g.reshape(g.slice_axis(qkv, 2, j, j + 1), shape=(b, n, h, d))
        return g.reshape(g.transpose(t, perm=(0, 2, 1, 3)), shape=(b * h, n, d))

    g.output(g.attention(heads_first(0), heads_first(1), heads_first(2), scale=d ** -0.5))
    prof = PRESETS["default"].replace(threads=threads, cache_dir=cache_dir, name="bench-attn")
    return compile_graph(g.build(), prof, weights={})


def _time(fn, runs: int) -> float:
    best = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        best.append(time.perf_counter() - t)
    return statistics.median(best)


def run(shapes, threads: int, rounds: int, runs: int, cache_dir: str, check: bool) -> dict:
    _set_threads(threads)
    import numpy as np
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    out = {"threads": threads, "rounds": rounds, "runs": runs, "shapes": {}}
    for name in shapes:
        shape = SHAPES[name]
        b, h, n, d = shape
        rng = np.random.default_rng(0)
        qkv = rng.standard_normal((b, n, 3 * h * d), dtype=np.float32)
        compiled = _rlx_attention(shape, threads, cache_dir)
        t_qkv = torch.from_numpy(qkv).reshape(b, n, 3, h, d)
        q, k, v = (t_qkv[:, :, j].transpose(1, 2) for j in range(3))  # [b, h, n, d] views
        # the same products as plain GEMMs, batched over (b*h) with contiguous operands
        qa = np.ascontiguousarray(qkv.reshape(b, n, 3, h, d)[:, :, 0].transpose(0, 2, 1, 3)
                                  ).reshape(b * h, n, d)
        ka = np.ascontiguousarray(qkv.reshape(b, n, 3, h, d)[:, :, 1].transpose(0, 2, 3, 1)
                                  ).reshape(b * h, d, n)
        s_np = np.empty((b * h, n, n), np.float32)
        tq, tk = torch.from_numpy(qa), torch.from_numpy(ka)
        s_t = torch.empty(b * h, n, n)

        def f_rlx():
            compiled(qkv)

        def f_sdpa():
            with torch.no_grad():
                F.scaled_dot_product_attention(q, k, v)

        def f_np_gemm():  # q k^T only: its FLOPs are half the attention's
            np.matmul(qa, ka, out=s_np)

        def f_torch_gemm():
            torch.bmm(tq, tk, out=s_t)

        systems = {"rlx": f_rlx, "torch_sdpa": f_sdpa, "numpy_sgemm_qk": f_np_gemm,
                   "torch_bmm_qk": f_torch_gemm}
        if check:
            with torch.no_grad():
                ref = F.scaled_dot_product_attention(q, k, v).reshape(b * h, n, d).numpy()
            got = compiled(qkv)[0]
            err = float(np.abs(got - ref).max())
            out.setdefault("max_abs_diff_vs_sdpa", {})[name] = err
        for fn in systems.values():  # warm-up (first call pays page faults / lazy init)
            fn()
        times = {s: [] for s in systems}
        for _ in range(rounds):
            for s, fn in systems.items():
                times[s].append(_time(fn, runs))
        flops = attention_flops(shape)
        rows = {}
        for s, ts in times.items():
            f = flops / 2 if s.endswith("_qk") else flops
            med = statistics.median(ts)
            rows[s] = {"median_s": med, "min_s": min(ts), "max_s": max(ts),
                       "gflops": f / med / 1e9}
        out["shapes"][name] = {"shape (windows, heads, tokens, d)": shape,
                               "gflop": flops / 1e9, "systems": rows}
    return out


# (M, K, N, what): the GEMMs of SAM 2's image side that carry the most FLOPs
GEMM_SHAPES = (
    (4096, 384, 1152, "hiera_t stage 3 qkv"),
    (4096, 384, 1536, "hiera_t stage 3 mlp fc1"),
    (4096, 1536, 384, "hiera_t stage 3 mlp fc2"),
    (65536, 96, 384, "hiera_t stage 1 mlp fc1"),
    (4096, 448, 1792, "hiera_b+ stage 3 mlp fc1"),
    (4096, 1792, 448, "hiera_b+ stage 3 mlp fc2"),
)


def gemm_rates(threads: int, rounds: int) -> list:
    """Best-of-rounds GFLOP/s of numpy's sgemm and torch's matmul, interleaved per shape."""
    _set_threads(threads)
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    rows = []
    for m, k, n, what in GEMM_SHAPES:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        c = np.empty((m, n), np.float32)
        ta, tb, tc = torch.from_numpy(a), torch.from_numpy(b), torch.empty(m, n)
        fns = {"numpy": lambda: np.matmul(a, b, out=c), "torch": lambda: torch.mm(ta, tb, out=tc)}
        for fn in fns.values():
            fn()
        ts = {s: [] for s in fns}
        for _ in range(rounds):
            for s, fn in fns.items():
                ts[s].append(_time(fn, 3))
        f = 2.0 * m * k * n
        rows.append({"m": m, "k": k, "n": n, "what": what,
                     **{f"{s}_gflops_best": f / min(v) / 1e9 for s, v in ts.items()},
                     **{f"{s}_gflops_median": f / statistics.median(v) / 1e9
                        for s, v in ts.items()}})
    return rows


def _load() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="blocked attention vs torch SDPA vs GEMM rate")
    ap.add_argument("--shapes", help="comma separated; '' for none", default="hiera_t_global,hiera_bp_global,vit_b_global,"
                                        "hiera_t_win14,hiera_t_win8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--check", action="store_true", help="also report max |rlx - sdpa|")
    ap.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "rlx-bench-attn"))
    ap.add_argument("--gemm", action="store_true",
                    help="also the numpy / torch GEMM rates on SAM 2's big GEMM shapes")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    names = [s for s in args.shapes.split(",") if s]
    unknown = [s for s in names if s not in SHAPES]
    if unknown:
        print(f"unknown shape(s) {unknown}; choose from {', '.join(SHAPES)}", file=sys.stderr)
        return 2
    load0 = _load()
    res = run(names, args.threads, args.rounds, args.runs, args.cache_dir, args.check)
    res.update(machine=platform.processor() or platform.machine(), load_before=load0,
               load_after=_load(),
               date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    print(f"{args.threads} threads, {args.rounds} rounds x {args.runs} runs, "
          f"load avg before {load0}, after {res['load_after']}")
    for name, r in res["shapes"].items():
        print(f"{name} {r['shape (windows, heads, tokens, d)']}: {r['gflop']:.2f} GFLOP")
        for s, row in r["systems"].items():
            print(f"  {s:<16s} {1e3 * row['median_s']:9.2f} ms ({1e3 * row['min_s']:.2f} - "
                  f"{1e3 * row['max_s']:.2f})  {row['gflops']:7.1f} GFLOP/s")
    if args.gemm:
        res["gemm"] = gemm_rates(args.threads, args.rounds)
        print("GEMM rates (GFLOP/s, best / median over rounds):")
        for r in res["gemm"]:
            print(f"  {r['what']:<26s} {r['m']}x{r['k']}x{r['n']}: numpy "
                  f"{r['numpy_gflops_best']:6.1f} / {r['numpy_gflops_median']:6.1f}   torch "
                  f"{r['torch_gflops_best']:6.1f} / {r['torch_gflops_median']:6.1f}")
    if args.check:
        print("max |rlx - sdpa|:", res["max_abs_diff_vs_sdpa"])
    if args.json:
        from rlx.utils.fs import atomic_write_text

        atomic_write_text(args.json, json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
