"""`rlx compile`: compile every subgraph of a model and report what happened.

Per subgraph: node count before and after the pass pipeline, kernels (and
how many fell back to the reference), compile time, and whether the kernels
came from the persistent cache. The profile is a preset, a profile file, or
(with --checkpoint and no --profile) the profile file stored next to the
checkpoint.
"""

from __future__ import annotations

from rlx.runtime.profile import DEVICES

import json
import sys
import time


def add_arguments(p) -> None:
    p.add_argument("model", help="a registered model (see `rlx list`)")
    p.add_argument("--subgraph", "-s", action="append",
                   help="compile only this subgraph (repeatable; default: all)")
    p.add_argument("--checkpoint", help="checkpoint whose neighbouring profile file to use "
                                        "(weights are not needed to compile)")
    p.add_argument("--profile", "-p", help="preset name or .toml/.json profile file")
    p.add_argument("--device", choices=DEVICES,
                   help="target CPU (overrides the profile's device)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


class Progress:
    """A one-line progress bar on stderr (redrawn on a terminal, plain lines otherwise)."""

    def __init__(self, total: int, stream=None):
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.done = 0

    def start(self, label: str) -> None:
        bar = self._bar()
        if self.tty:
            self.stream.write(f"\r{bar} compiling {label} ...\033[K")
        else:
            self.stream.write(f"{bar} compiling {label} ...\n")
        self.stream.flush()

    def step(self) -> None:
        self.done += 1

    def finish(self) -> None:
        if self.tty:
            self.stream.write(f"\r{self._bar()} done\033[K\n")
            self.stream.flush()

    def _bar(self, width: int = 20) -> str:
        filled = width * self.done // max(self.total, 1)
        return f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}"


def selected_subgraphs(spec, names) -> list[str]:
    from rlx.errors import RlxError

    if not names:
        return list(spec.subgraphs)
    for n in names:
        if n not in spec.subgraphs:
            raise RlxError(f"model {spec.name} has no subgraph {n!r}; subgraphs: "
                           f"{', '.join(spec.subgraphs)}")
    return list(names)


def report_row(name: str, report, seconds: float) -> dict:
    return {
        "subgraph": name, "backend": report.backend, "nodes_before": report.nodes_before,
        "nodes_after": report.nodes_after, "kernels": report.kernels,
        "fallback_kernels": report.fallback_kernels, "cached_kernels": report.cached_kernels,
        "codeless_kernels": report.codeless_kernels, "from_cache": report.from_cache,
        "compile_seconds": round(seconds, 3),
        "pass_seconds": round(report.pass_seconds, 3), "flops": report.flops,
        "arena_bytes": report.arena_bytes,
    }


def run(args) -> int:
    from rlx.runtime import compile_graph
    from rlx.runtime.profile import resolve_profile
    from rlx.zoo import get_model

    spec = get_model(args.model)
    profile = resolve_profile(args.profile, checkpoint=args.checkpoint)
    if args.device:
        profile = profile.replace(device=args.device)
    names = selected_subgraphs(spec, args.subgraph)
    progress = Progress(len(names))
    rows = []
    for name in names:
        progress.start(name)
        graph = spec.build(name)
        t0 = time.perf_counter()
        compiled = compile_graph(graph, profile)
        rows.append(report_row(name, compiled.report, time.perf_counter() - t0))
        progress.step()
    progress.finish()
    from rlx.runtime.device import device_info, device_summary

    if args.json:
        print(json.dumps({"model": spec.name, "profile": profile.name,
                          "profile_source": profile.source, "device": device_info(profile),
                          "subgraphs": rows}, indent=1))
        return 0
    print(f"model {spec.name}, profile {profile.name} ({profile.source or 'given'}), "
          f"backend {profile.backend}, device {device_summary(profile)}")
    head = f"{'subgraph':<20}{'nodes':>14}{'kernels':>9}{'fallback':>10}{'seconds':>9}  cache"
    print(head)
    total = 0.0
    for r in rows:
        total += r["compile_seconds"]
        nodes = f"{r['nodes_before']} -> {r['nodes_after']}"
        generated = r["kernels"] - r["fallback_kernels"] - r["codeless_kernels"]
        if generated == 0:
            cache = "-"
        elif r["from_cache"]:
            cache = "hit"
        elif r["cached_kernels"] == 0:
            cache = "miss (compiled)"
        else:
            cache = f"{r['cached_kernels']}/{generated} cached"
        print(f"{r['subgraph']:<20}{nodes:>14}{r['kernels']:>9}{r['fallback_kernels']:>10}"
              f"{r['compile_seconds']:>9.2f}  {cache}")
    print(f"total {total:.2f} s")
    return 0
