"""A parallel plan on a machine that other processes keep busy: 1 thread against 2.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        python -m benchmarks.bench_contention --busy 0,1,2 --repeat 60

The llvm backend's fork-join hands each kernel's second half to a worker
thread. When another process has that worker's core, the half waits for the
scheduler: before take-back and keeping workers off their caller's core
(`rlx.backends.llvm.forkjoin`), a 2-thread plan beside one busy process took
~1.8x as long as the same plan on one thread. This runs one plan (15 rounds of
``exp(tanh(x W) Wᵀ)``, [256, 1024] x [1024, 256]: ~30 GEMM kernels of ~0.4 ms a
half, the size of SAM decoder's largest) compiled for 1 and for 2 threads,
with 0, 1, 2 ... processes spinning beside it (``--busy``), the two builds
alternating call by call, and reports the median and 90th percentile per
call and the ratio 2 threads / 1 thread (< 1: the second thread helps).
Nothing passes or fails on speed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rlx.utils.fs import atomic_write_text

ROUNDS = 15
SHAPE = (256, 1024)


def _graph():
    from rlx.ir import GraphBuilder

    b = GraphBuilder("contention")
    x = b.input("x", SHAPE)
    w = b.input("w", SHAPE[::-1])
    y = x
    for _ in range(ROUNDS):
        y = b.exp(b.mul(b.matmul(b.tanh(b.matmul(y, w)), b.transpose(w, perm=(1, 0))), 1e-3))
    b.output(y)
    return b.build()


def _p90(values):
    s = sorted(values)
    return s[min(len(s) - 1, int(0.9 * len(s)))]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--busy", default="0,1,2",
                   help="comma-separated counts of busy processes to run beside the plan")
    p.add_argument("--repeat", "-n", type=int, default=60)
    p.add_argument("--pause", type=float, default=0.003,
                   help="seconds between calls (a user between clicks)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    try:
        busy_counts = [int(v) for v in args.busy.split(",") if v]
    except ValueError:
        p.error(f"--busy takes whole numbers, got {args.busy!r}")
    if any(v < 0 for v in busy_counts):
        p.error("--busy counts must be >= 0")

    import numpy as np

    from rlx.runtime import compile_graph, resolve_profile

    graph = _graph()
    rng = np.random.default_rng(0)
    x = rng.standard_normal(SHAPE, dtype=np.float32)
    w = rng.standard_normal(SHAPE[::-1], dtype=np.float32) * 0.03
    plans = {f"{t} thread{'s' if t > 1 else ''}":
             compile_graph(graph, resolve_profile("default").replace(threads=t), weights={})
             for t in (1, 2)}
    print(f"plan: {ROUNDS} x exp(tanh(x W) W^T), x {list(SHAPE)}; ms per call (median / p90), "
          f"{args.repeat} calls per build, builds alternating")
    print(f"{'busy':>5}{'1 thread':>18}{'2 threads':>18}{'2t / 1t':>10}")
    rows = []
    for busy in busy_counts:
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(busy)]
        try:
            time.sleep(0.3)
            for plan in plans.values():
                for _ in range(5):
                    plan(x, w)
            times = {name: [] for name in plans}
            for _ in range(args.repeat):
                for name, plan in plans.items():
                    t = time.perf_counter()
                    plan(x, w)
                    times[name].append(time.perf_counter() - t)
                    time.sleep(args.pause)
        finally:
            for h in hogs:
                h.kill()
                h.wait()
        med = {k: statistics.median(v) for k, v in times.items()}
        one, two = med["1 thread"], med["2 threads"]
        rows.append({"busy": busy, "ratio": two / one,
                     **{f"{k}_median_s": v for k, v in med.items()},
                     **{f"{k}_p90_s": _p90(v) for k, v in times.items()}, "samples": times})
        print(f"{busy:>5}" + "".join(f"{med[k] * 1e3:>9.1f} / {_p90(times[k]) * 1e3:<6.1f}"
                                     for k in plans) + f"{two / one:>10.2f}")
    if args.json:
        atomic_write_text(args.json, json.dumps({"repeat": args.repeat, "rows": rows},
                                                indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
