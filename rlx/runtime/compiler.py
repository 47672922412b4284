"""compile_graph: HIR graph + compile profile -> a callable compiled graph.

The steps, each visible on its own: run the pass pipeline the profile implies
(lowering, cleanup, fusion), hand every non-view node to the profile's backend
(nodes it declines run on the reference kernels), plan memory, and wrap it all
in an `ExecutablePlan`. Weights are bound separately, so a graph can be
compiled (and its kernels cached) before any checkpoint is read.
"""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from rlx.backends.base import Backend, KernelContext, get_backend
from rlx.backends.reference.backend import ReferenceKernel
from rlx.ir.analysis import graph_flops
from rlx.ir.graph import Graph
from rlx.passes import PassManager, PassOptions, default_pipeline, get_pass
from rlx.passes.plan_memory import VIEW_OPS, plan_memory
from rlx.runtime import plan_cache
from rlx.runtime.plan import ExecutablePlan
from rlx.runtime.device import check_device
from rlx.runtime.gc_pause import gc_paused
from rlx.runtime.profile import CompileProfile, resolve_profile


@dataclass
class CompileReport:
    graph: str
    backend: str
    nodes_before: int
    nodes_after: int
    kernels: int
    fallback_kernels: int
    cached_kernels: int
    pass_seconds: float
    kernel_seconds: float
    arena_bytes: int
    flops: int
    passes: list = field(default_factory=list)
    #: kernels that needed no generated code (numpy calls), so they cannot be cache hits
    codeless_kernels: int = 0
    #: the lowered graph and kernel descriptions came from the plan cache (no passes ran;
    #: `pass_seconds` is then the time to load them)
    plan_from_cache: bool = False

    @property
    def seconds(self) -> float:
        return self.pass_seconds + self.kernel_seconds

    @property
    def from_cache(self) -> bool:
        """True when every compiled kernel came from the on-disk cache."""
        compiled = self.kernels - self.fallback_kernels - self.codeless_kernels
        return compiled > 0 and self.cached_kernels == compiled


def pass_options(profile: CompileProfile, backend: Backend) -> PassOptions:
    caps = backend.capabilities()
    return PassOptions(
        lower_attention=profile.attention == "decomposed" or not caps.blocked_attention,
        fuse=profile.fusion,
        fuse_epilogues=profile.epilogue_fusion,
        verify=profile.verify,
        precision=profile.precision,
        winograd=profile.winograd,
    )


def lower(graph: Graph, profile: CompileProfile, backend: Backend | None = None,
          stop_after: str | None = None) -> tuple[Graph, PassManager]:
    """Run the profile's pass pipeline (optionally stopping after a named pass)."""
    backend = backend or get_backend(profile.backend)
    options = pass_options(profile, backend)
    pm = PassManager([get_pass(n) for n in default_pipeline(options)], options,
                     stop_after=stop_after)
    return pm.run(graph), pm


#: outputs at least this large are recycled (see `CompiledGraph.run`)
RECYCLE_MIN_BYTES = 1 << 20


class CompiledGraph:
    """A compiled subgraph. Call it with numpy inputs (positional or by name).

    Outputs are the caller's arrays. A large output the caller has let go of
    by the next call (no reference left but the graph's own) is written over
    by that call instead of fresh memory: fresh memory is mapped in page by
    page on first touch -- for the multi-MB outputs of a batch or a feature
    map that cost as much as the kernel writing it, and on a busy VM's huge
    pages far more. An output still referenced anywhere (a variable, a list,
    a view of it) is never reused.
    """

    def __init__(self, hir: Graph, graph: Graph, plan: ExecutablePlan, profile: CompileProfile,
                 report: CompileReport, backend: Backend, ctx: KernelContext):
        self.hir = hir
        self.graph = graph
        self.plan = plan
        self.profile = profile
        self.report = report
        self.backend = backend
        self._ctx = ctx
        self._last: list | None = None  # the previous call's large outputs

    @property
    def name(self) -> str:
        return self.graph.name

    @property
    def flops(self) -> int:
        return self.report.flops

    def bind(self, weights: Mapping[str, np.ndarray]) -> "CompiledGraph":
        self.plan.bind(weights)
        return self

    def run(self, *inputs, **named) -> list[np.ndarray]:
        outs = self.plan.run(named if named else list(inputs), out=self._released())
        self._last = [a if isinstance(a, np.ndarray) and a.nbytes >= RECYCLE_MIN_BYTES
                      else None for a in outs]
        return outs

    def _released(self) -> list | None:
        """The previous call's large outputs that nobody else references any more."""
        last, self._last = self._last, None
        if last is None:
            return None
        free = []
        for i in range(len(last)):
            a = last[i]
            # referenced by `last`, by `a` and by getrefcount's argument: 3 when released
            if a is None or sys.getrefcount(a) > 3:
                free.append(None)
                continue
            base = a.base  # an output that views a buffer: nothing else may hold that either
            # referenced by `a`, by `base` and by the argument
            free.append(a if base is None or sys.getrefcount(base) <= 3 else None)
            del base
        return free

    __call__ = run

    def dump(self, fmt: str) -> str:
        nodes = [n for n, k in zip(self.graph.nodes, self.plan.kernels) if k is not None]
        return self.backend.dump(nodes, fmt, self._ctx)


def compile_graph(graph: Graph, profile: "CompileProfile | str | None" = None,
                  weights: Mapping[str, np.ndarray] | None = None) -> CompiledGraph:
    profile = resolve_profile(profile)
    backend = get_backend(profile.backend)
    check_device(profile)
    cache = _open_cache(profile)
    ctx = KernelContext(profile=profile, cache=cache)
    t0 = time.perf_counter()
    # A warm start: the plan cache holds the lowered graph and every kernel's description
    # (optional Backend methods kernel_state / restore_many; without them the kernels are
    # compiled from the cached lowered graph, which still skips the passes).
    key = record = None
    if cache is not None:
        with gc_paused():  # unpickling a plan: see rlx.runtime.gc_pause
            key = plan_cache.plan_key(graph, profile, backend.name, cache)
            record = plan_cache.load(cache, key) if key is not None else None
    # A hit only rebuilds objects (a few ms of work, but a full collection of a large
    # process would cost tens); a cold compile runs the passes with the collector on.
    with gc_paused() if record is not None else nullcontext():
        return _finish(graph, profile, weights, backend, cache, ctx, key, record, t0)


def _finish(graph, profile, weights, backend, cache, ctx, key, record, t0) -> CompiledGraph:
    if record is not None:
        lowered, pass_records = record.lowered, record.passes
        to_compile = sorted(i for i, s in record.kernels.items() if s is not None)
        fallback = sorted(i for i, s in record.kernels.items() if s is None)
    else:
        lowered, pm = lower(graph, profile, backend)
        pass_records = pm.records
        to_compile, fallback = [], []
        for i, node in enumerate(lowered.nodes):
            if node.op in VIEW_OPS:
                continue
            (to_compile if backend.supports(node) else fallback).append(i)
    t1 = time.perf_counter()
    kernels = [None] * len(lowered.nodes)
    nodes = [lowered.nodes[i] for i in to_compile]
    if record is not None and hasattr(backend, "restore_many"):
        compiled = backend.restore_many(nodes, [record.kernels[i] for i in to_compile], ctx)
    else:
        compiled = backend.compile_many(nodes, ctx)
    for i, k in zip(to_compile, compiled):
        kernels[i] = k
    for i in fallback:
        kernels[i] = ReferenceKernel(lowered.nodes[i])
    if key is not None and record is None:
        describe = getattr(backend, "kernel_state", lambda node, kernel, ctx: True)
        states = {i: describe(lowered.nodes[i], k, ctx) for i, k in zip(to_compile, compiled)}
        states.update((i, None) for i in fallback)
        plan_cache.store(cache, key, plan_cache.PlanRecord(lowered, pass_records, states))
    t2 = time.perf_counter()
    memory = plan_memory(lowered)
    # A backend may ask for a setting around each call (numba: OpenBLAS at one thread for
    # the whole call, not toggled per GEMM kernel); optional part of the Backend protocol.
    plan = ExecutablePlan(lowered, kernels, memory, getattr(backend, "run_context", None))
    report = CompileReport(
        graph=graph.name, backend=backend.name, nodes_before=len(graph.nodes),
        nodes_after=len(lowered.nodes), kernels=sum(k is not None for k in kernels),
        fallback_kernels=len(fallback),
        cached_kernels=sum(1 for k in compiled if k.info.from_cache),
        pass_seconds=t1 - t0, kernel_seconds=t2 - t1, arena_bytes=memory.arena_bytes,
        flops=graph_flops(graph), passes=pass_records,
        codeless_kernels=sum(1 for k in compiled if not k.info.extra.get("compiled", True)),
        plan_from_cache=record is not None)
    cg = CompiledGraph(graph, lowered, plan, profile, report, backend, ctx)
    if weights is not None:
        cg.bind(weights)
    return cg


def _open_cache(profile: CompileProfile):
    if not profile.cache or profile.backend == "reference":
        return None
    from rlx.backends.common.kernel_store import KernelCache

    return KernelCache(profile.resolved_cache_dir(), device=profile.device,
                       max_mb=profile.cache_max_mb)
