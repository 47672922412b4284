"""The executable plan: kernel calls over preallocated buffers.

Everything that can be decided once is decided at bind time: the arena, the
view of every intermediate into it, the weights (derived ones materialized).
A call validates the inputs, allocates only the outputs it returns, and then
is a loop of kernel calls. A plan is not re-entrant: one call at a time (the
arena is shared between calls).

Priming (`prime`) moves a plan's first-call costs off the first real call:
measured on SAM's prompt graph (a 2-core VM), the first call took 2-10x the
later ones although it computes the same, because fresh memory is mapped on
first touch -- an arena page fault cost up to ~100 us there (the host backs
guest pages lazily), ~1000 of them per arena -- and because the first call of
each kernel builds its per-call state (pointer arrays, address caches) and
leaves malloc holding the outputs' memory. A caller that knows a plan will be
wanted (a click after an image is encoded) primes it in the background.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Callable, ContextManager, Mapping, Sequence

import numpy as np

from rlx.backends.base import Kernel
from rlx.backends.reference.interpreter import check_inputs, materialize_weights
from rlx.ir.graph import Graph
from rlx.passes.plan_memory import MemoryPlan
from rlx.runtime import timing


class ExecutablePlan:
    def __init__(self, graph: Graph, kernels: Sequence[Kernel | None], memory: MemoryPlan,
                 run_context: Callable[[], ContextManager] | None = None):
        self.graph = graph
        self.kernels = list(kernels)  # None for view nodes (reshape aliases)
        self.memory = memory
        #: entered around each run's kernel loop (a backend's process-wide setting its
        #: kernels need, made once per call instead of once per kernel)
        self.run_context = run_context
        self.weights: dict[str, np.ndarray] | None = None
        self._arena: np.ndarray | None = None
        self._static: dict[int, np.ndarray] = {}

    # ---- binding ----------------------------------------------------------------

    def bind(self, weights: Mapping[str, np.ndarray]) -> None:
        """Check and attach weights, materialize derived ones, lay out the arena."""
        self.weights = materialize_weights(self.graph, weights)
        static: dict[int, np.ndarray] = {}
        for name, v in self.graph.weights.items():
            static[id(v)] = self.weights[name]
        if self._arena is None:
            self._arena = np.empty(max(self.memory.arena_bytes, 1), dtype=np.uint8)
        self._static = static
        self._place()
        # optional kernel method: convert / pack its weights now, once (bf16 GEMMs)
        for node, kernel in zip(self.graph.nodes, self.kernels):
            bind = getattr(kernel, "bind_weights", None)
            if bind is not None:
                bind([static.get(id(v)) if v is not None else None for v in node.inputs])

    def _place(self) -> None:
        """Views of the arena for every intermediate the memory plan placed in it."""
        for node in self.graph.nodes:
            for v in node.outputs:
                placed = self.memory.placement.get(id(v))
                if placed is not None:
                    off, nbytes = placed
                    self._static[id(v)] = self._arena[off:off + nbytes] \
                        .view(v.type.np_dtype).reshape(v.shape)

    def use_arena(self, arena: np.ndarray) -> None:
        """Keep the intermediates in `arena` (uint8, at least `arena_bytes` long) instead
        of an arena of this plan's own.

        For plans that never run at the same time -- the two stages of a staged graph
        -- one arena the size of the larger serves both: a call computes every
        intermediate before reading it, so what another plan left there is never read.
        The caller guarantees that the plans sharing it never run concurrently.
        """
        if arena.dtype != np.uint8 or arena.ndim != 1 or arena.nbytes < self.arena_bytes:
            raise ValueError(f"graph {self.graph.name}: an arena must be a uint8 vector of at "
                             f"least {self.arena_bytes} bytes")
        self._arena = arena
        if self.weights is not None:
            self._place()

    @property
    def arena_bytes(self) -> int:
        return self.memory.arena_bytes

    @property
    def arena(self) -> np.ndarray | None:
        """The buffer the intermediates live in (None until `bind` or `use_arena`)."""
        return self._arena

    # ---- priming ------------------------------------------------------------------

    def example_inputs(self) -> list[np.ndarray]:
        """Zeros of every input's shape and dtype (what `prime` runs on by default)."""
        return [np.zeros(v.shape, dtype=v.type.np_dtype) for v in self.graph.inputs]

    def prime(self, inputs=None, run: bool = True) -> None:
        """Do a first call's one-time work now, so that the next call runs like a later one.

        Writes every page of the arena (mapping it in), then, with `run`, runs the plan
        once on `inputs` (default: `example_inputs`, zeros) and drops the results: every
        kernel's first-call work happens and the outputs' memory is left with malloc.
        The results of later calls are unaffected -- every call computes each
        intermediate before reading it, whatever the arena held. Give `inputs` when
        zeros are not a valid input of the graph. Like `run`, not concurrently with
        another call of this plan.
        """
        if self.weights is None:
            from rlx.errors import RlxError

            raise RlxError(f"graph {self.graph.name}: bind weights before priming")
        self._arena.fill(0)
        if run:
            self.run(self.example_inputs() if inputs is None else inputs)

    # ---- running ------------------------------------------------------------------

    def run(self, inputs, out: Sequence[np.ndarray | None] | None = None) -> list[np.ndarray]:
        """The outputs for `inputs` (by position or name).

        `out` (optional, one entry per output, None to skip) gives arrays to write
        outputs into instead of fresh memory -- e.g. the previous call's results, when
        the caller no longer needs them: no new pages to map. An entry is used when its
        output is computed by the plan (not an input, weight or view) and the array is
        C-contiguous, writeable and of the output's shape and dtype; otherwise the
        output gets fresh memory as usual. Used entries are the arrays returned. For an
        output that is a reshape of a computed buffer, the given array's base is that
        buffer and is what gets written (the returned output is a new view of it).
        """
        if self.weights is None:
            from rlx.errors import RlxError

            raise RlxError(f"graph {self.graph.name}: bind weights before running")
        arrays = check_inputs(self.graph, inputs)
        env = dict(self._static)
        for v, a in zip(self.graph.inputs, arrays):
            env[id(v)] = np.require(a, requirements="C")  # keeps rank 0 (ascontiguousarray would not)
        fresh = self.memory.fresh
        if out is not None:
            for v, buf in zip(self.graph.outputs, out):
                root = self.memory.alias_of.get(id(v))
                if buf is not None and root is not None and id(v) not in fresh:
                    v, buf = root, buf.base  # a reshape of a computed buffer: write its base
                if (isinstance(buf, np.ndarray) and id(v) in fresh and id(v) not in env
                        and buf.shape == v.shape and buf.dtype == v.type.np_dtype
                        and buf.flags.c_contiguous and buf.flags.writeable):
                    env[id(v)] = buf
        profiling = timing.enabled()
        gname = self.graph.name
        t_start = time.perf_counter()
        with self.run_context() if self.run_context is not None else nullcontext():
            self._loop(env, fresh, profiling, gname)
        if profiling:
            timing.record_graph(gname, time.perf_counter() - t_start)
        results = []
        for v in self.graph.outputs:
            a = env[id(v)]
            owned = id(v) in fresh or id(self.memory.alias_of.get(id(v), v)) in fresh
            results.append(a if owned else a.copy())
        return results

    def _loop(self, env: dict, fresh, profiling: bool, gname: str) -> None:
        for node, kernel in zip(self.graph.nodes, self.kernels):
            if kernel is None:  # a view: reshape of a contiguous buffer
                src = env[id(node.inputs[0])]
                out = env.get(id(node.output))
                env[id(node.output)] = out if out is not None else src.reshape(node.output.shape)
                continue
            outs = []
            for v in node.outputs:
                buf = env.get(id(v))
                if buf is None and id(v) in fresh:
                    buf = np.empty(v.shape, dtype=v.type.np_dtype)
                    env[id(v)] = buf
                outs.append(buf)
            ins = [env[id(v)] if v is not None else None for v in node.inputs]
            if profiling:
                t0 = time.perf_counter()
                kernel(ins, outs)
                timing.record_kernel(gname, kernel.info.name, kernel.info.kind,
                                     time.perf_counter() - t0)
            else:
                kernel(ins, outs)
