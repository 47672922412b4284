"""`rlx bench`: time compiled subgraphs on synthetic inputs.

For each (subgraph, profile) pair: compile (cache permitting), bind synthetic
weights (or a checkpoint's), run once to warm up, then `--repeat` timed runs.
Reports min and median wall time, GFLOP/s from the graph's own FLOP count
(`CompileReport.flops`, the HIR before lowering) and the process's peak
resident memory after the runs (RSS high-water mark; it only grows, so later
rows include earlier ones — bench one profile per process for a clean figure).
Several profiles (`--profile a --profile b` or `--profile a,b`) print side by
side per subgraph. `--peer NAME` adds rows for another implementation the
model registered (e.g. ``torch``: the official PyTorch module) on the same
weights and inputs, timed the same way in the same run.
"""

from __future__ import annotations

from rlx.runtime.profile import DEVICES

import json
import resource
import statistics
import time


def add_arguments(p) -> None:
    p.add_argument("model", help="a registered model (see `rlx list`)")
    p.add_argument("--subgraph", "-s", action="append",
                   help="bench only this subgraph (repeatable; default: all)")
    p.add_argument("--profile", "-p", action="append",
                   help="preset or profile file; repeat or comma-separate to compare")
    p.add_argument("--checkpoint", help="real weights instead of synthetic ones")
    p.add_argument("--repeat", "-n", type=int, default=5, help="timed runs (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of synthetic weights and inputs")
    p.add_argument("--device", choices=DEVICES,
                   help="target CPU (overrides the profile's device)")
    p.add_argument("--peer", action="append", default=[],
                   help="also time this peer implementation registered by the model (e.g. torch;"
                        " repeatable; `all` for every peer)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def profiles_from(args) -> list:
    from rlx.runtime.profile import resolve_profile

    specs = []
    for item in args.profile or [None]:
        if item is None:
            specs.append(None)
        else:
            specs.extend(s.strip() for s in item.split(",") if s.strip())
    profiles = [resolve_profile(s, checkpoint=args.checkpoint) for s in specs]
    if args.device:
        profiles = [p.replace(device=args.device) for p in profiles]
    return profiles


def bench_one(spec, name: str, profile, weights, inputs, repeat: int) -> dict:
    from rlx.runtime import compile_graph
    from rlx.runtime.device import device_summary

    t0 = time.perf_counter()
    compiled = compile_graph(spec.build(name), profile)
    compile_s = time.perf_counter() - t0
    compiled.bind(weights)
    times = time_calls(compiled, inputs, repeat)  # warm-up first-touches arena and BLAS buffers
    med = statistics.median(times)
    r = compiled.report
    return {
        "subgraph": name, "profile": profile.name, "backend": r.backend,
        "min_s": min(times), "median_s": med, "repeat": repeat,
        "gflops": r.flops / med / 1e9 if med > 0 else 0.0, "flops": r.flops,
        "peak_rss_mb": peak_rss_bytes() / 2 ** 20, "compile_s": compile_s,
        "kernels": r.kernels, "fallback_kernels": r.fallback_kernels,
        "from_cache": r.from_cache, "device": device_summary(profile),
    }


def time_calls(fn, inputs, repeat: int) -> list[float]:
    fn(*inputs)  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(*inputs)
        times.append(time.perf_counter() - t)
    return times


def bench_peer(spec, name: str, peer: str, weights, inputs, repeat: int, threads: int,
               flops: int) -> dict | None:
    """A row for a registered peer, None if it has no counterpart of this subgraph."""
    from rlx.errors import RlxError

    factory = spec.peers[peer]
    t0 = time.perf_counter()
    try:
        fn = factory(name, weights, threads)
    except ImportError as e:
        raise RlxError(f"peer {peer!r} of {spec.name} is not available: {e}") from None
    if fn is None:
        return None
    setup_s = time.perf_counter() - t0
    times = time_calls(fn, inputs, repeat)
    med = statistics.median(times)
    return {"subgraph": name, "profile": peer, "backend": peer, "min_s": min(times),
            "median_s": med, "repeat": repeat, "gflops": flops / med / 1e9 if med > 0 else 0.0,
            "flops": flops, "peak_rss_mb": peak_rss_bytes() / 2 ** 20, "compile_s": setup_s,
            "kernels": 0, "fallback_kernels": 0, "from_cache": False}


def run(args) -> int:
    from rlx.cli.compile import selected_subgraphs
    from rlx.errors import RlxError
    from rlx.zoo import get_model

    if args.repeat < 1:
        raise RlxError("--repeat must be at least 1")
    spec = get_model(args.model)
    names = selected_subgraphs(spec, args.subgraph)
    profiles = profiles_from(args)
    if args.checkpoint:
        if spec.load_weights is None:
            raise RlxError(f"model {spec.name} has no checkpoint loader")
        weights = spec.load_weights(args.checkpoint)
    else:
        weights = spec.synthetic_weights(args.seed)
    peers = list(spec.peers) if "all" in args.peer else args.peer
    unknown = [p for p in peers if p not in spec.peers]
    if unknown:
        raise RlxError(f"model {spec.name} has no peer {', '.join(unknown)}; peers: "
                       f"{', '.join(spec.peers) or 'none'}")
    rows = []
    for name in names:
        inputs = spec.inputs_for(name, args.seed)
        for profile in profiles:
            rows.append(bench_one(spec, name, profile, weights, inputs, args.repeat))
        for peer in peers:
            row = bench_peer(spec, name, peer, weights, inputs, args.repeat,
                             profiles[0].effective_threads, rows[-1]["flops"])
            if row is not None:
                rows.append(row)
    if args.json:
        print(json.dumps({"model": spec.name, "synthetic_weights": not args.checkpoint,
                          "rows": rows}, indent=1))
        return 0
    print(f"model {spec.name} ({'checkpoint' if args.checkpoint else 'synthetic weights'}), "
          f"{args.repeat} runs each")
    from rlx.runtime.device import device_summary

    for profile in profiles:
        print(f"profile {profile.name}: device {device_summary(profile)}")
    print(f"{'subgraph':<22}{'profile':<12}{'backend':<10}{'min ms':>10}{'median ms':>11}"
          f"{'GFLOP/s':>9}{'peak MB':>9}{'compile s':>11}")
    for r in rows:
        print(f"{r['subgraph']:<22}{r['profile']:<12}{r['backend']:<10}{r['min_s'] * 1e3:>10.2f}"
              f"{r['median_s'] * 1e3:>11.2f}{r['gflops']:>9.2f}{r['peak_rss_mb']:>9.0f}"
              f"{r['compile_s']:>11.2f}")
    return 0
