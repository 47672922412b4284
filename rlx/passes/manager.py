"""The pass manager: an ordered, named pipeline with timing, verification and dumps.

`dump_after` snapshots the graph after named passes (what `rlx dump-ir --after`
prints); `stop_after` ends the pipeline early. Each pass's wall time and node
counts are recorded, so a slow or explosive pass is easy to spot.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from rlx.errors import RlxError, VerifyError
from rlx.ir.graph import Graph
from rlx.ir.verifier import verify
from rlx.passes.options import PassOptions


@dataclass(frozen=True)
class Pass:
    name: str
    fn: Callable[[Graph, PassOptions], Graph]
    doc: str

    def __call__(self, graph: Graph, options: PassOptions | None = None) -> Graph:
        return self.fn(graph, options or PassOptions())


@dataclass
class PassRecord:
    name: str
    seconds: float
    nodes_before: int
    nodes_after: int


@dataclass
class PassManager:
    passes: list[Pass]
    options: PassOptions = field(default_factory=PassOptions)
    dump_after: set[str] = field(default_factory=set)
    stop_after: str | None = None
    records: list[PassRecord] = field(default_factory=list)
    snapshots: dict[str, Graph] = field(default_factory=dict)

    def __post_init__(self):
        names = [p.name for p in self.passes]
        for wanted in list(self.dump_after) + ([self.stop_after] if self.stop_after else []):
            if wanted not in names:
                raise RlxError(f"no pass named {wanted!r} in this pipeline; passes: "
                               f"{', '.join(names)}")

    def run(self, graph: Graph) -> Graph:
        if self.options.verify:
            verify(graph)
        for p in self.passes:
            before = len(graph.nodes)
            t0 = time.perf_counter()
            graph = p(graph, self.options)
            dt = time.perf_counter() - t0
            self.records.append(PassRecord(p.name, dt, before, len(graph.nodes)))
            if self.options.verify:
                try:
                    verify(graph)
                except VerifyError as e:
                    raise VerifyError(f"after pass {p.name}: {e}") from None
            if p.name in self.dump_after:
                self.snapshots[p.name] = graph
            if p.name == self.stop_after:
                break
        return graph

    def report(self) -> str:
        lines = [f"{'pass':<24}{'ms':>9}{'nodes':>14}"]
        for r in self.records:
            lines.append(f"{r.name:<24}{r.seconds * 1e3:>9.2f}{r.nodes_before:>7} -> "
                         f"{r.nodes_after:<5}")
        return "\n".join(lines)


def run_passes(graph: Graph, names: Iterable[str], options: PassOptions | None = None) -> Graph:
    from rlx.passes.registry import get_pass

    return PassManager([get_pass(n) for n in names], options or PassOptions()).run(graph)
