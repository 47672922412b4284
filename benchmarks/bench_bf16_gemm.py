"""bf16 GEMM micro-benchmark: rlx's bf16 kernel (AMX or AVX512-BF16) against rlx f32, numpy's
sgemm and torch's bf16 matmul, on SAM ViT-B's linear layers (issue 14).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        python -m benchmarks.bench_bf16_gemm --threads 2 --rounds 5

What it is for: tuning `rlx.backends.llvm.gemm_bf16` (MR, MC, the loop order, the B
layout) on a CPU with bf16 units, and telling which unit ran. Each shape is one
linear layer with its fused epilogue, as the ViT-B encoder runs it (tokens 64 x 64 =
4096 rows): qkv [4096,768]x[768,2304]+bias, proj [4096,768]x[768,768]+bias, fc1
[4096,768]x[768,3072]+bias+GELU, fc2 [4096,3072]x[3072,768]+bias.

Systems, interleaved inside every round (the table gives the median over rounds and
the spread): ``rlx_bf16`` (the unit the device has, or ``--unit``), ``rlx_f32`` (the
llvm backend's f32 GEMM, BLAS + fused epilogue), ``numpy_f32`` (sgemm only, no
epilogue), ``torch_bf16`` (A converted to bf16 per call, B converted once, matmul
only). GFLOP/s count 2 M N K. ``--check`` reports rlx_bf16's error against numpy's
product of the bf16-rounded operands (the reference semantics).

On a CPU without bf16 units it refuses (exit 2) unless ``--unit emulated``, which
runs the plain-IR emulation: only to check this script, its times mean nothing.
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

#: name -> (M, K, N, activation)
SHAPES = {
    "qkv": (4096, 768, 2304, None),
    "proj": (4096, 768, 768, None),
    "fc1": (4096, 768, 3072, "gelu"),
    "fc2": (4096, 3072, 768, None),
}


def _set_threads(threads: int) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "NUMBA_NUM_THREADS", "RLX_NUM_THREADS"):
        os.environ[var] = str(threads)


def _graph(m, k, n, act, bf16: bool):
    from rlx.ir import GraphBuilder

    g = GraphBuilder("linear")
    x = g.input("x", (m, k))
    attrs = {"precision": "bf16"} if bf16 else {}
    y = g.add(g.matmul(x, g.weight("w", (n, k)), transpose_b=True, **attrs),
              g.weight("bias", (n,)))
    g.output(g.gelu(y, approximate="none") if act == "gelu" else y)
    return g.build()


def _time(fn, runs: int) -> float:
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def run(names, threads: int, rounds: int, runs: int, unit: str | None, cache_dir: str,
        check: bool) -> dict:
    _set_threads(threads)
    import numpy as np
    import torch

    from rlx.backends.llvm.gemm_bf16 import emulation_for_tests, unit_for
    from rlx.ir.ops.linalg import round_bf16
    from rlx.runtime import compile_graph
    from rlx.runtime.profile import PRESETS

    torch.set_num_threads(threads)
    prof = PRESETS["llvm"].replace(threads=threads, cache_dir=cache_dir, name="bench-bf16")
    used = unit or unit_for("cpu")
    out = {"threads": threads, "rounds": rounds, "runs": runs, "unit": used, "shapes": {}}
    for name in names:
        m, k, n, act = SHAPES[name]
        rng = np.random.default_rng(0)
        x = rng.standard_normal((m, k), dtype=np.float32)
        weights = {"w": (rng.standard_normal((n, k), dtype=np.float32) / np.float32(np.sqrt(k))),
                   "bias": rng.standard_normal(n, dtype=np.float32)}
        with emulation_for_tests(used):
            bf16 = compile_graph(_graph(m, k, n, act, True), prof, weights=weights)
        f32 = compile_graph(_graph(m, k, n, act, False), prof, weights=weights)
        kinds = [kern.info.extra.get("bf16_unit") for kern in bf16.plan.kernels if kern]
        c = np.empty((m, n), np.float32)
        wt = np.ascontiguousarray(weights["w"].T)
        tx, tw = torch.from_numpy(x), torch.from_numpy(wt).to(torch.bfloat16)

        def f_torch():
            with torch.no_grad():
                torch.matmul(tx.to(torch.bfloat16), tw)

        systems = {"rlx_bf16": lambda: bf16(x), "rlx_f32": lambda: f32(x),
                   "numpy_f32": lambda: np.matmul(x, wt, out=c), "torch_bf16": f_torch}
        for fn in systems.values():
            fn()
        times = {s: [] for s in systems}
        for _ in range(rounds):
            for s, fn in systems.items():
                times[s].append(_time(fn, runs))
        flops = 2.0 * m * k * n
        rows = {s: {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts),
                    "gflops": flops / statistics.median(ts) / 1e9} for s, ts in times.items()}
        entry = {"mkn": (m, k, n), "epilogue": "bias" + ("+gelu" if act else ""),
                 "kernel_units": kinds, "systems": rows,
                 "rlx_bf16_over_rlx_f32": rows["rlx_bf16"]["median_s"] /
                 rows["rlx_f32"]["median_s"]}
        if check:
            ref = round_bf16(x) @ round_bf16(weights["w"]).T  # the product rlx must compute
            got = bf16(x)[0] - weights["bias"]
            if act is None:
                entry["rel_l2_vs_bf16_reference"] = float(
                    np.linalg.norm(got - ref) / np.linalg.norm(ref))
        out["shapes"][name] = entry
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="rlx bf16 GEMM vs rlx f32, numpy, torch bf16")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--unit", choices=("amx", "avx512bf16", "emulated"), default=None,
                    help="force a path (default: AMX if the CPU has it, else AVX512-BF16)")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "rlx-bench-bf16"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    names = [s for s in args.shapes.split(",") if s]
    bad = [s for s in names if s not in SHAPES]
    if bad:
        print(f"unknown shape(s) {bad}; choose from {', '.join(SHAPES)}", file=sys.stderr)
        return 2
    from rlx.backends.llvm.gemm_bf16 import unit_for
    from rlx.backends.llvm.target import matrix_units

    if args.unit is None and unit_for("cpu") is None:
        print("this CPU has no bf16 matrix unit (AVX512-BF16 or AMX-BF16); "
              "--unit emulated only checks the script", file=sys.stderr)
        return 2
    if args.unit in ("amx", "avx512bf16") and \
            {"amx": "amx-bf16", "avx512bf16": "avx512bf16"}[args.unit] not in matrix_units("cpu"):
        print(f"this CPU lacks {args.unit}", file=sys.stderr)
        return 2
    res = run(names, args.threads, args.rounds, args.runs, args.unit, args.cache_dir,
              args.check)
    import llvmlite.binding as llvm

    res.update(machine=platform.processor() or platform.machine(),
               llvm_cpu=llvm.get_host_cpu_name(),
               date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    print(f"{res['llvm_cpu']}, unit {res['unit']}, {args.threads} threads, "
          f"{args.rounds} rounds x {args.runs} runs")
    for name, r in res["shapes"].items():
        print(f"{name} {r['mkn']} +{r['epilogue']}  kernels: {r['kernel_units']}  "
              f"bf16/f32 time {r['rlx_bf16_over_rlx_f32']:.2f}"
              + (f"  rel-L2 {r['rel_l2_vs_bf16_reference']:.1e}"
                 if "rel_l2_vs_bf16_reference" in r else ""))
        for s, row in r["systems"].items():
            print(f"  {s:<11s} {1e3 * row['median_s']:9.2f} ms ({1e3 * row['min_s']:.2f} - "
                  f"{1e3 * row['max_s']:.2f})  {row['gflops']:7.1f} GFLOP/s")
    if args.json:
        from rlx.utils.fs import atomic_write_text

        atomic_write_text(args.json, json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
