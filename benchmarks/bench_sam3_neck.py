"""The SAM3 detection neck: rlx against the official torch module, branch by branch.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        python -m benchmarks.bench_sam3_neck --threads 2 --repeat 7

One process, both systems on the same synthetic weights and input
(``[1,1024,72,72]``), both at ``--threads``. Each branch (scales 4, 2, 1, 0.5)
and then the whole neck (the four branches back to back, as
``Sam3Neck.__call__`` runs them) is timed in rounds that alternate the
systems (rlx, torch, rlx, torch, ...), so load from other work on the
machine hits both alike; after warm-up calls. Each timed call starts after
``--settle`` seconds (default 0.05) of idling, so that it does not share the
cores with the other system's still-spinning worker threads (``SETTLE_S``);
``--settle 0`` times them back to back. Reported: median and min per
system, and the ratio of the medians rlx / torch (< 1: rlx is faster). The
outputs are compared too (max abs difference), so a fast wrong answer shows.
Nothing passes or fails on speed. ``--parts branch_1x,branch_0_5x`` times a subset
(``neck`` for the whole neck). ``--kernels`` then runs each timed rlx part
``--repeat`` more times with per-kernel timing on (`rlx.runtime.timing`, after
the timed rounds, so its clock reads do not touch them) and prints where the
time went, kernel by kernel.

On a shared machine, look at the per-kernel figures before reading much into
a ratio: the branches' outputs are fresh allocations (85 MB for the 4x
branch), and in a VM whose free huge pages run short their first touch
sometimes costs 0.1-1.5 s of system time inside the last kernel, in either
system's run.

What rlx compiles here (default profile): the 3x3 convolutions as Winograd
F(4x4, 3x3) (``lower-conv-winograd``; ``winograd = 0`` in a profile file
brings back the im2col GEMM), the 1x1 convolution after each transposed
convolution folded into it (``fold-pointwise-conv``), the max-pool as one
fused kernel over strided slices (``lower-pool``).

Needs torch and the official ``sam3`` package (see models/sam3/official.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from rlx.utils.fs import atomic_write_text

#: idle time before each timed call: both systems leave worker threads spinning after a
#: call (torch's OpenMP pool, rlx's fork-join worker, ~1 ms or more); on 2 cores the next
#: call, whichever system's, then shares its cores with them. Measured 2026-12-05 (quiet,
#: 2 threads): rlx's 0.5x branch 11.1 ms alone, 21.3 ms right after each torch call.
SETTLE_S = 0.05


def time_rounds(fns: dict, x, repeat: int, warmup: int, settle: float = 0.0) -> dict:
    """name -> list of seconds; the systems alternate within every round, each timed call
    after `settle` seconds of idling (see the module docstring)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn(x)
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            if settle:
                time.sleep(settle)
            t = time.perf_counter()
            fn(x)
            times[name].append(time.perf_counter() - t)
    return times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", "-n", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--settle", type=float, default=SETTLE_S,
                   help="seconds of idling before each timed call (0: back to back)")
    p.add_argument("--profile", default="default", help="rlx compile profile")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--kernels", action="store_true",
                   help="after timing, print rlx's per-kernel times for the timed parts")
    p.add_argument("--parts", default="",
                   help="comma-separated subset to time (e.g. branch_1x,branch_0_5x); "
                        "default: every branch and the whole neck")
    args = p.parse_args(argv)

    from models.sam3.config import DEFAULT, branch_name

    known = [branch_name(s) for s in DEFAULT.scale_factors] + ["neck"]
    wanted = [part for part in args.parts.split(",") if part]
    unknown = [part for part in wanted if part not in known]
    if unknown:  # before anything is compiled
        p.error(f"unknown part(s) {', '.join(unknown)}; known: {', '.join(known)}")

    import numpy as np
    import torch

    from models.sam3.neck import Sam3Neck
    from models.sam3.official import torch_peer
    from models.sam3.weights import synthetic_weights
    from rlx.runtime import resolve_profile

    torch.set_num_threads(args.threads)
    weights = synthetic_weights(args.seed)
    profile = resolve_profile(args.profile).replace(threads=args.threads)
    neck = Sam3Neck(weights, profile)
    x = np.random.default_rng(args.seed).standard_normal(DEFAULT.input_shape, dtype=np.float32)
    names = [branch_name(s) for s in DEFAULT.scale_factors]
    peers = [torch_peer(n, weights, args.threads) for n in names]

    rows = []
    systems = {}
    for name, compiled, peer in zip(names, neck.branches, peers):
        systems[name] = {"rlx": lambda a, c=compiled: c(a), "torch": peer}
    systems["neck (4 branches)"] = {
        "rlx": lambda a: [c(a) for c in neck.branches],
        "torch": lambda a: [f(a) for f in peers]}
    print(f"SAM3 neck, [1,1024,72,72] -> 4 levels; rlx profile {profile.name} "
          f"({profile.backend}), {args.threads} threads, {args.repeat} alternating rounds, "
          f"{args.settle * 1e3:.0f} ms idle before each call; ms (median / min)")
    print(f"{'part':<20}{'rlx':>18}{'torch':>18}{'rlx/torch':>11}{'max |diff|':>12}")
    for part, fns in systems.items():
        if wanted and part not in wanted and not (part.startswith("neck") and "neck" in wanted):
            continue
        times = time_rounds(fns, x, args.repeat, args.warmup, args.settle)
        ours, theirs = fns["rlx"](x), fns["torch"](x)
        ours = ours if isinstance(ours[0], np.ndarray) else [o[0] for o in ours]
        theirs = theirs if isinstance(theirs[0], np.ndarray) else [t[0] for t in theirs]
        diff = max(float(np.abs(a - b).max()) for a, b in zip(ours, theirs))
        med = {k: statistics.median(v) for k, v in times.items()}
        row = {"part": part, "ratio": med["rlx"] / med["torch"], "max_abs_diff": diff,
               **{f"{k}_median_s": v for k, v in med.items()},
               **{f"{k}_min_s": min(v) for k, v in times.items()},
               "samples": times}
        rows.append(row)
        print(f"{part:<20}" + "".join(f"{med[k] * 1e3:>9.1f} / {min(times[k]) * 1e3:<6.1f}"
                                      for k in ("rlx", "torch"))
              + f"{row['ratio']:>11.2f}{diff:>12.2e}")
    if args.kernels:
        from rlx.runtime import timing
        timing.reset()
        timing.set_enabled(True)
        try:
            for part, fns in systems.items():
                if wanted and part not in wanted and not (part.startswith("neck")
                                                          and "neck" in wanted):
                    continue
                for _ in range(args.repeat):
                    fns["rlx"](x)
        finally:
            timing.set_enabled(False)
        print()
        print(timing.report(top=30))
    if args.json:
        atomic_write_text(args.json, json.dumps({"threads": args.threads, "repeat": args.repeat,
                                                 "settle_s": args.settle,
                                                 "parts": wanted or "all",
                                                 "profile": profile.name, "rows": rows},
                                                indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
