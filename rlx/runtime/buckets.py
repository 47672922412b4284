"""Batch buckets: one compiled graph per batch size, for any number of items.

Shapes are static, so a graph that takes a batch of B items is compiled for
that B. A caller with n items (a grid of prompts, a list of images) runs
them in batches of at most ``max_batch``; the last batch is usually smaller.
`BatchBuckets` compiles graphs for power-of-two batch sizes up to
``max_batch`` (and ``max_batch`` itself) on first use, runs n items in the
smallest bucket that holds them, padding the batched inputs by repeating
their last item (real values: no NaN or overflow in the padding rows) and
cutting the padding off every output. So at most about log2(max_batch)
graphs are compiled, and padding wastes less than half a bucket.

Inputs are either *shared* (the same for every item: an image embedding,
passed without a batch axis of its own) or *batched* (leading axis = the
batch). The graphs are staged (`rlx.runtime.staged`): inputs named in
``slow`` -- typically the shared ones -- have their dependent work computed
once and kept, per bucket. Every output must have the batch as its leading
axis.

Data parallelism (``replicas=k``): many small kernels over a batch scale
poorly across cores -- each kernel is a fork-join whose hand-off costs more
than its work once the machine is busy, and every thread streams the same
batch-sized arrays through the cache. With ``k`` replicas each bucket is
compiled for ``threads // k`` threads and kept ``k`` times (own arena, own
kept slow-stage results); up to ``k`` `run` calls from different threads
proceed at once, each on a replica of its own, and a caller feeds them whole
batches (e.g. from a thread pool of ``k`` workers). The replicas share the
kernels (the kernel and plan caches); each runs its slow stage once per
shared input.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Callable, Dict, List, Mapping, Sequence

import numpy as np

from rlx.errors import InputError
from rlx.ir.graph import Graph
from rlx.runtime.profile import CompileProfile, resolve_profile
from rlx.runtime.staged import StagedGraph, compile_staged

__all__ = ["BatchBuckets", "bucket_sizes"]


def bucket_sizes(max_batch: int) -> List[int]:
    """Powers of two below ``max_batch``, then ``max_batch``: the batch sizes compiled."""
    if int(max_batch) < 1:
        raise InputError(f"max_batch must be at least 1, got {max_batch}")
    sizes, s = [], 1
    while s < max_batch:
        sizes.append(s)
        s *= 2
    return sizes + [int(max_batch)]


class BatchBuckets:
    """Compiled graphs of one family, ``build(batch) -> Graph``, keyed by batch size."""

    def __init__(self, build: Callable[[int], Graph], max_batch: int,
                 profile: "CompileProfile | str | None" = None,
                 weights: Mapping[str, np.ndarray] | None = None,
                 batched: Sequence[str] = (), slow: Sequence[str] = (), replicas: int = 1):
        if type(replicas) is not int or replicas < 1:
            raise InputError(f"replicas must be a positive int, got {replicas!r}")
        self.build = build
        self.sizes = bucket_sizes(max_batch)
        self.max_batch = self.sizes[-1]
        profile = resolve_profile(profile)
        self.replicas = replicas
        if replicas > 1:  # each replica gets its share of the cores
            profile = dataclasses.replace(
                profile, threads=max(1, profile.effective_threads // replicas))
        self.profile = profile
        self.weights = weights
        self.batched = tuple(batched)
        self.slow = tuple(slow)
        self._graphs: Dict[int, StagedGraph] = {}   # the first replica of each size
        self._free: Dict[int, List[StagedGraph]] = {}
        self._made: Dict[int, int] = {}
        self._lock = threading.RLock()
        self._returned = threading.Condition(self._lock)

    def size_for(self, n: int) -> int:
        """The smallest bucket holding ``n`` items (1 <= n <= max_batch)."""
        if not 1 <= n <= self.max_batch:
            raise InputError(f"a batch holds 1..{self.max_batch} items, got {n}")
        return next(s for s in self.sizes if s >= n)

    def _compile(self, size: int) -> StagedGraph:
        return compile_staged(self.build(size), self.profile, self.weights, slow=self.slow)

    def graph(self, size: int) -> StagedGraph:
        """The compiled graph of bucket ``size`` (compiled and bound on first use)."""
        with self._lock:
            g = self._graphs.get(size)
            if g is None:
                g = self._compile(size)
                self._graphs[size] = g
                self._free.setdefault(size, []).append(g)
                self._made[size] = 1
            return g

    def _acquire(self, size: int) -> StagedGraph:
        """A replica of bucket ``size`` for one call: a free one, a new one while fewer
        than ``replicas`` exist, else wait for one to come back."""
        self.graph(size)
        with self._lock:
            while True:
                free = self._free[size]
                if free:
                    return free.pop()
                if self._made[size] < self.replicas:
                    self._made[size] += 1
                    break
                self._returned.wait()
        try:  # compiled outside the lock: other sizes and free replicas stay usable
            return self._compile(size)
        except BaseException:
            with self._lock:
                self._made[size] -= 1
                self._returned.notify()
            raise

    def _release(self, size: int, g: StagedGraph) -> None:
        with self._lock:
            self._free[size].append(g)
            self._returned.notify()

    @property
    def compiled(self) -> Dict[int, StagedGraph]:
        return dict(self._graphs)

    def run(self, n: int, **inputs: np.ndarray) -> List[np.ndarray]:
        """Run ``n`` items (batched inputs have ``n`` rows); outputs cut to ``n`` rows."""
        size = self.size_for(n)
        args = {}
        for name, value in inputs.items():
            if name in self.batched:
                a = np.asarray(value)
                if a.shape[:1] != (n,):
                    raise InputError(f"batched input {name!r} must have {n} rows, "
                                     f"got shape {list(a.shape)}")
                if size > n:  # pad by repeating the last item
                    a = np.concatenate([a, np.repeat(a[-1:], size - n, axis=0)], axis=0)
                args[name] = a
            else:
                args[name] = value
        g = self._acquire(size)
        try:
            outs = g.run(**args)
        finally:
            self._release(size, g)
        return [o[:n] if size > n else o for o in outs]
