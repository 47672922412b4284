"""Staged graphs: work that depends only on rarely changing inputs runs once, not per call.

`compile_staged(graph, profile, weights, slow=["image_embedding"])` splits the
graph with `rlx.passes.split_stages` and compiles both stages. A call looks
like a call of the whole graph (same inputs, same outputs); behind it the slow
stage runs only when a slow input differs from the one its kept results were
computed from, and the fast stage runs every time.

How a slow input is recognised as unchanged:

* the very same array object, read-only all the way down (not writeable, and
  neither is any array it is a view of): it cannot have changed, so nothing
  is compared -- this is the fast path, and why callers that keep one input
  for many calls (a predictor's image embedding) should freeze it
  (``a.setflags(write=False)``);
* otherwise the contents are compared with a private snapshot taken when
  the slow stage last ran (a memory-bound pass over the input; still far
  cheaper than the work it saves). A changed or differently shaped input
  re-runs the slow stage.

Results that come from the kept slow stage are returned as copies, so a
caller cannot corrupt them -- and so that the next slow run may write its
results over the kept ones instead of into fresh memory. Like a compiled graph, a staged graph runs one
call at a time -- which lets its two stages share one arena (the larger of the two).

`prime()` runs both stages once on example inputs (zeros unless given) and
forgets the result (see `rlx.runtime.plan.ExecutablePlan.prime`): the first
real call then pays neither stage's first-call costs; ``prime(run=False)``
prepares only the memory (arenas, the slow stage's result arrays), which is
most of those costs and runs no kernel. `prepare(slow inputs)`
runs the slow stage ahead of the first call that needs it -- e.g. on a
background thread as soon as a new image embedding exists.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Mapping

import numpy as np

from rlx.backends.reference.interpreter import check_inputs
from rlx.ir.analysis import graph_flops
from rlx.ir.graph import Graph
from rlx.passes.split_stages import SLOW, StageSplit, split_stages
from rlx.runtime.compiler import CompiledGraph, CompileReport, compile_graph
from rlx.runtime.gc_pause import gc_paused
from rlx.runtime.profile import CompileProfile, resolve_profile

__all__ = ["StagedGraph", "compile_staged", "is_frozen"]


def is_frozen(a: np.ndarray) -> bool:
    """True when `a` cannot change: not writeable, and neither is anything it views."""
    x = a
    while isinstance(x, np.ndarray):
        if x.flags.writeable:
            return False
        x = x.base
    return x is None or isinstance(x, bytes)


class StagedGraph:
    """A graph compiled as a slow stage (kept results) and a fast stage (every call)."""

    def __init__(self, split: StageSplit, slow: CompiledGraph | None, fast: CompiledGraph):
        self.split = split
        self.hir: Graph = split.graph
        self.slow = slow
        self.fast = fast
        self._kept: list[np.ndarray] | None = None
        self._keys: list[tuple[np.ndarray, np.ndarray | None]] = []
        #: the last slow results and input snapshots, reused as the next run's memory
        #: (kept after `forget`, so that a primed graph's first real run maps no pages)
        self._spare: list[np.ndarray] | None = None
        self._snaps: list[np.ndarray] = []
        #: how many times the slow stage ran (for tests and reports)
        self.slow_runs = 0

    @property
    def name(self) -> str:
        return self.hir.name

    @property
    def stages(self) -> list[CompiledGraph]:
        return [s for s in (self.slow, self.fast) if s is not None]

    @property
    def kernels(self) -> list:
        return [k for s in self.stages for k in s.plan.kernels if k is not None]

    @property
    def report(self) -> CompileReport:
        """Both stages' compile reports added up (``flops``: the whole graph's)."""
        reports = [s.report for s in self.stages]
        merged = {}
        for f in fields(CompileReport):
            vals = [getattr(r, f.name) for r in reports]
            if f.name in ("graph", "backend"):
                merged[f.name] = self.hir.name if f.name == "graph" else vals[0]
            elif f.name == "passes":
                merged[f.name] = [p for v in vals for p in v]
            elif f.name == "nodes_before":
                merged[f.name] = len(self.hir.nodes)
            elif f.name == "flops":
                merged[f.name] = graph_flops(self.hir)
            elif f.name == "plan_from_cache":
                merged[f.name] = all(vals)
            else:
                merged[f.name] = sum(vals)
        return CompileReport(**merged)

    @property
    def flops(self) -> int:
        return sum(s.flops for s in self.stages)

    def bind(self, weights: Mapping[str, np.ndarray]) -> "StagedGraph":
        # The stages run one after the other, never at once: one arena serves both
        # (segment-everything's token graph: 61 MB instead of 40 + 61 per copy).
        if len(self.stages) > 1 and all(s.plan.arena is None for s in self.stages):
            arena = np.empty(max(max(s.plan.arena_bytes for s in self.stages), 1), np.uint8)
            for s in self.stages:
                s.plan.use_arena(arena)
        for s in self.stages:
            s.bind(weights)
        self.forget()
        return self

    def prime(self, *inputs, run: bool = True, **named) -> None:
        """Pay the first call's one-time costs now; afterwards the graph is as if never
        called (no kept slow-stage results, `slow_runs` unchanged).

        With `run`, both stages run once on example inputs (default: zeros) and the
        result is forgotten. With ``run=False`` only memory is prepared, and no kernel
        runs: both arenas are written (mapped in), and the slow stage's result and
        input-snapshot arrays are allocated and written, for its first real run to
        write over. On a machine whose cores are busy with other work (an encoder) that
        is most of the gain for a fraction of the interference: first-call costs are
        mostly fresh pages.
        """
        seen = set()
        for s in self.stages:  # the whole arena, not only what a run touches; once if shared
            if id(s.plan.arena) not in seen:
                seen.add(id(s.plan.arena))
                s.plan.prime(run=False)
        if not run:
            if self.slow is not None and self._spare is None:
                self._spare = [_touched(v) for v in self.slow.plan.graph.outputs]
                self._snaps = [_touched(v) for v in self.slow.hir.inputs]
            return
        if inputs or named:
            arrays = check_inputs(self.hir, named if named else list(inputs))
        else:
            arrays = [np.zeros(v.shape, dtype=v.type.np_dtype) for v in self.hir.inputs]
        runs = self.slow_runs
        try:
            self.run(*arrays)
        finally:
            self.forget()
            self.slow_runs = runs

    def forget(self) -> None:
        """Drop the kept slow-stage results (the next call recomputes them)."""
        self._kept = None
        self._keys = []

    # ---- running ------------------------------------------------------------------

    def _current(self, slow_arrays: list[np.ndarray]) -> bool:
        if self._kept is None or len(self._keys) != len(slow_arrays):
            return False
        keys = []
        for a, (ref, copy) in zip(slow_arrays, self._keys):
            if a is ref and is_frozen(a):
                keys.append((ref, copy))
                continue
            if copy.shape != a.shape or not np.array_equal(a, copy):
                return False
            keys.append((a, copy))  # equal: a frozen `a` skips the comparison next time
        self._keys = keys
        return True

    def prepare(self, *inputs, **named) -> bool:
        """Run the slow stage for these slow inputs unless its kept results match them.

        Takes the slow inputs only (by position in graph order, or by name).
        Returns True if the slow stage ran.
        """
        if self.slow is None:
            return False
        slow_arrays = check_inputs(self.slow.hir, named if named else list(inputs))
        return self._prepare(slow_arrays)

    def _prepare(self, slow_arrays: list[np.ndarray]) -> bool:
        if self._current(slow_arrays):
            return False
        self._kept = None
        self._keys = []
        # The previous results and snapshots are written over, not reallocated: fresh
        # memory must be mapped in page by page, which cost more than the copy itself.
        kept = self.slow.plan.run(slow_arrays, out=self._spare)
        # A private snapshot even of frozen arrays: a caller may make one writeable again.
        snaps = []
        for i, a in enumerate(slow_arrays):
            old = self._snaps[i] if i < len(self._snaps) else None
            if old is not None and old.shape == a.shape and old.dtype == a.dtype:
                np.copyto(old, a)
                snaps.append(old)
            else:
                snaps.append(a.copy())
        self._keys = list(zip(slow_arrays, snaps))
        self._kept = kept
        self._spare, self._snaps = kept, snaps
        self.slow_runs += 1
        return True

    def run(self, *inputs, **named) -> list[np.ndarray]:
        arrays = check_inputs(self.hir, named if named else list(inputs))
        by_name = {v.name: a for v, a in zip(self.hir.inputs, arrays)}
        carried: dict[str, np.ndarray] = {}
        if self.slow is not None:
            self._prepare([by_name[v.name] for v in self.slow.hir.inputs])
            carried = dict(zip(self.split.boundary, self._kept))
        fast_in = [carried[v.name] if v.name in carried else by_name[v.name]
                   for v in self.fast.hir.inputs]
        fast_out = self.fast.run(*fast_in)
        return [self._kept[i].copy() if where == SLOW else fast_out[i]
                for where, i in self.split.outputs]

    __call__ = run


def _touched(v) -> np.ndarray:
    """A written (hence mapped-in) array of value `v`'s shape and dtype."""
    a = np.empty(v.shape, dtype=v.type.np_dtype)
    a.fill(0)
    return a


def compile_staged(graph: Graph, profile: "CompileProfile | str | None" = None,
                   weights: Mapping[str, np.ndarray] | None = None,
                   slow=()) -> StagedGraph:
    """Compile `graph` in two stages; inputs named in `slow` change rarely (see module doc)."""
    profile = resolve_profile(profile)
    with gc_paused():  # rebuilding two small graphs: see rlx.runtime.gc_pause
        split = split_stages(graph, slow)
    slow_cg = compile_graph(split.slow_graph, profile) if split.slow_graph is not None else None
    fast_cg = compile_graph(split.fast_graph, profile)
    staged = StagedGraph(split, slow_cg, fast_cg)
    if weights is not None:
        staged.bind(weights)
    return staged
