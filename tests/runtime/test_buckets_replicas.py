"""Batch buckets with replicas: several calls at once, each on a copy of its own.

Many threads calling `BatchBuckets.run` at once must each get the answer of
the reference interpreter for their own batch (a shared arena or shared kept
slow-stage results would mix them up), never more than ``replicas`` copies of
a bucket may exist, and each copy is compiled for its share of the threads.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from rlx.backends.reference import run_graph
from rlx.errors import InputError
from rlx.ir import GraphBuilder
from rlx.runtime.buckets import BatchBuckets
from rlx.runtime.profile import resolve_profile
from tests.support.threads import run_threads

RNG = np.random.default_rng(0)
WEIGHTS = {"w": RNG.standard_normal((16, 16)).astype(np.float32)}
SHARED = RNG.standard_normal((8, 16)).astype(np.float32)


def _build(n: int):
    """x [n, 8, 16] (batched) and a shared [8, 16] (slow) -> relu(x @ w + shared @ w)."""
    b = GraphBuilder(f"replicated_b{n}")
    x = b.input("x", (n, 8, 16))
    a = b.input("a", (8, 16))
    w = b.weight("w", (16, 16))
    b.output(b.relu(b.add(b.matmul(x, w), b.matmul(a, w))))
    return b.build()


def _want(x):
    return run_graph(_build(len(x)), [x, SHARED], WEIGHTS)[0]


class _Watched(BatchBuckets):
    """Buckets whose compiled copies report overlapping calls (a copy used by two
    threads at once) and how many copies ran at the same moment."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.watch = threading.Lock()
        self.active: dict = {}
        self.overlaps = 0
        self.most_at_once = 0

    def _compile(self, size):
        g = super()._compile(size)
        run = g.run

        def watched(*a, **k):
            with self.watch:
                self.overlaps += self.active.get(id(g), 0)
                self.active[id(g)] = self.active.get(id(g), 0) + 1
                self.most_at_once = max(self.most_at_once, sum(self.active.values()))
            try:
                time.sleep(0.005)  # widen the window in which two calls could meet
                return run(*a, **k)
            finally:
                with self.watch:
                    self.active[id(g)] -= 1

        g.run = watched
        return g


@pytest.mark.parametrize("backend", ["numba", "llvm"])
def test_concurrent_calls_get_their_own_answers(backend):
    profile = resolve_profile(backend)
    buckets = _Watched(_build, 4, profile, WEIGHTS, batched=["x"], slow=["a"], replicas=2)
    batches = [np.random.default_rng(i).standard_normal((3 + i % 2, 8, 16)).astype(np.float32)
               for i in range(12)]
    got = [None] * len(batches)

    def worker(k):
        for i in range(k, len(batches), 4):
            got[i] = buckets.run(len(batches[i]), x=batches[i], a=SHARED)[0]

    run_threads(worker, 4)
    for x, g in zip(batches, got):
        np.testing.assert_allclose(g, _want(x), rtol=1e-5, atol=1e-5)
    # one bucket (4), four threads, two replicas: no copy ever ran two calls at once, two
    # calls did run at the same moment, never more than two
    assert buckets.overlaps == 0
    assert buckets.most_at_once == 2


def test_each_replica_gets_its_share_of_the_threads():
    profile = resolve_profile("numba")
    import dataclasses

    four = dataclasses.replace(profile, threads=4)
    assert BatchBuckets(_build, 2, four, WEIGHTS, replicas=2).profile.threads == 2
    assert BatchBuckets(_build, 2, four, WEIGHTS, replicas=8).profile.threads == 1
    assert BatchBuckets(_build, 2, four, WEIGHTS).profile.threads == 4


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2"])
def test_bad_replica_count_is_refused(bad):
    with pytest.raises(InputError, match="replicas"):
        BatchBuckets(_build, 2, "numba", WEIGHTS, replicas=bad)
