"""Where time goes: per-subgraph and per-kernel timing, switched on by RLX_PROFILE=1.

Timing costs two clock reads per kernel, so it is off unless asked for. When
on, totals accumulate for the whole process and print to stderr at exit (and
on demand through `report()`).
"""

from __future__ import annotations

import atexit
import os
import sys
from collections import defaultdict

ENABLED = os.environ.get("RLX_PROFILE", "") not in ("", "0")

# (subgraph) -> [calls, seconds]; (subgraph, kernel name, kind) -> [calls, seconds]
_graphs: dict[str, list] = defaultdict(lambda: [0, 0.0])
_kernels: dict[tuple[str, str, str], list] = defaultdict(lambda: [0, 0.0])


def enabled() -> bool:
    return ENABLED


def set_enabled(flag: bool) -> None:
    global ENABLED
    ENABLED = flag


def record_graph(graph: str, seconds: float) -> None:
    entry = _graphs[graph]
    entry[0] += 1
    entry[1] += seconds


def record_kernel(graph: str, name: str, kind: str, seconds: float) -> None:
    entry = _kernels[(graph, name, kind)]
    entry[0] += 1
    entry[1] += seconds


def reset() -> None:
    _graphs.clear()
    _kernels.clear()


def report(top: int = 25) -> str:
    if not _graphs:
        return "rlx profile: nothing ran"
    lines = ["rlx profile (RLX_PROFILE=1)", f"{'subgraph':<32}{'calls':>7}{'total ms':>12}"
             f"{'ms/call':>10}"]
    for name, (calls, secs) in sorted(_graphs.items(), key=lambda kv: -kv[1][1]):
        lines.append(f"{name:<32}{calls:>7}{secs * 1e3:>12.2f}{secs * 1e3 / calls:>10.2f}")
    by_kind: dict[tuple[str, str], list] = defaultdict(lambda: [0, 0.0])
    for (g, _, kind), (calls, secs) in _kernels.items():
        by_kind[(g, kind)][0] += calls
        by_kind[(g, kind)][1] += secs
    lines.append("")
    lines.append(f"{'subgraph / kernel kind':<48}{'calls':>7}{'total ms':>12}{'share':>8}")
    for (g, kind), (calls, secs) in sorted(by_kind.items(), key=lambda kv: -kv[1][1]):
        share = secs / max(_graphs[g][1], 1e-12)
        lines.append(f"{g + ' / ' + kind:<48}{calls:>7}{secs * 1e3:>12.2f}{share:>8.1%}")
    lines.append("")
    lines.append(f"top {top} kernels{'':<35}{'calls':>7}{'total ms':>12}")
    ranked = sorted(_kernels.items(), key=lambda kv: -kv[1][1])[:top]
    for (g, name, kind), (calls, secs) in ranked:
        label = f"{g}:{name} ({kind})"
        lines.append(f"{label[:64]:<64}{calls:>7}{secs * 1e3:>12.2f}")
    return "\n".join(lines)


@atexit.register
def _print_at_exit() -> None:  # pragma: no cover - exercised via subprocess tests
    if ENABLED and _graphs:
        print(report(), file=sys.stderr)
