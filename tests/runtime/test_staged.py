"""Staged graphs: slow-input-only work split off, kept, and re-run only when needed.

The staged result must equal the reference interpreter on the whole graph for
every backend, whatever the outputs are (fast values, slow values, the inputs
themselves, weight-only values), and the kept slow-stage results must never
be stale: same read-only array -> reused without a look, same or equal
writeable array -> compared, modified in place or new contents -> recomputed.
"""

from __future__ import annotations

import numpy as np
import pytest

from rlx.backends.reference import run_graph
from rlx.errors import InputError, RlxError
from rlx.ir import GraphBuilder
from rlx.passes.split_stages import FAST, SLOW, split_stages
from rlx.runtime.staged import compile_staged, is_frozen
from tests.models.sam.decoder_fixtures import PROFILES

RNG = np.random.default_rng(0)
WEIGHTS = {"w": RNG.standard_normal((8, 8)).astype(np.float32),
           "b": RNG.standard_normal((8,)).astype(np.float32)}


def _graph():
    """a (slow) and x (fast) -> five outputs of every provenance."""
    b = GraphBuilder("staged")
    a = b.input("a", (4, 8))
    x = b.input("x", (4, 8))
    w, bias = b.weight("w", (8, 8)), b.weight("b", (8,))
    h = b.relu(b.add(b.matmul(a, w), bias))           # slow only
    h2 = b.relu(b.add(b.matmul(a, w), bias))          # the same again (CSE: crosses once)
    flat1 = b.reshape(h, shape=(32,))                 # two reshapes of one slow value
    flat2 = b.reshape(h2, shape=(2, 16))
    y = b.add(b.mul(x, h), b.reshape(flat1, shape=(4, 8)))
    z = b.sub(b.reshape(flat2, shape=(4, 8)), x)
    const = b.mul(w, 2.0)                              # weights only
    b.output(y, h, x, a, const, z)
    return b.build()


def _inputs(seed=1):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((4, 8)).astype(np.float32) for _ in range(2)]


def _check(staged, graph, inputs):
    got = staged(*inputs)
    want = run_graph(graph, inputs, WEIGHTS)
    assert len(got) == len(want)
    for g, e in zip(got, want):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-6)
    return got


def test_split_puts_slow_only_work_in_the_slow_stage():
    graph = _graph()
    split = split_stages(graph, ["a"])
    slow_ops = {n.op for n in split.slow_graph.nodes}
    fast_ops = {n.op for n in split.fast_graph.nodes}
    assert "matmul" in slow_ops and "matmul" not in fast_ops
    # one crossing value for the two equal computations and all three reshapes of them,
    # and the slow input a, which is returned
    h = split.slow_graph.outputs[0]
    assert split.boundary == (h.name, "a") and h.producer.op == "relu"
    assert [v.name for v in split.fast_graph.inputs] == ["x", h.name]
    assert [v.name for v in split.slow_graph.inputs] == ["a"]
    # h and a come back from the slow stage, the rest from the fast one
    assert [w for w, _ in split.outputs] == [FAST, SLOW, FAST, SLOW, FAST, FAST]


def test_no_slow_work_means_a_single_fast_stage():
    b = GraphBuilder("nothing_slow")
    a, x = b.input("a", (3,)), b.input("x", (3,))
    b.output(b.add(a, x))
    graph = b.build()
    staged = compile_staged(graph, "reference", {}, slow=["a"])
    assert staged.slow is None and staged.split.fast_graph is graph
    a_, x_ = np.ones(3, np.float32), np.arange(3, dtype=np.float32)
    np.testing.assert_array_equal(staged(a_, x_)[0], a_ + x_)


def test_unknown_slow_input_is_a_clear_error():
    with pytest.raises(RlxError, match="no input.*'?nope'?"):
        split_stages(_graph(), ["nope"])


@pytest.mark.parametrize("profile", PROFILES)
def test_staged_equals_the_whole_graph(profile):
    graph = _graph()
    staged = compile_staged(graph, profile, WEIGHTS, slow=["a"])
    a, x = _inputs()
    _check(staged, graph, [a, x])
    _check(staged, graph, [a, _inputs(2)[1]])      # new fast input, kept slow results
    assert staged.slow_runs == 1
    _check(staged, graph, _inputs(3))               # new slow input
    assert staged.slow_runs == 2
    # named inputs work like positional ones
    named = staged(x=x, a=a)
    np.testing.assert_allclose(named[0], run_graph(graph, [a, x], WEIGHTS)[0], rtol=1e-6)


def test_slow_stage_reruns_exactly_when_a_slow_input_changes():
    graph = _graph()
    staged = compile_staged(graph, "reference", WEIGHTS, slow=["a"])
    a, x = _inputs()
    _check(staged, graph, [a, x])
    assert staged.slow_runs == 1
    _check(staged, graph, [a, x])                   # same writeable array, unchanged
    _check(staged, graph, [a.copy(), x])            # another array, same contents
    assert staged.slow_runs == 1
    a[1, 2] += 1.0                                  # modified in place: must be noticed
    _check(staged, graph, [a, x])
    assert staged.slow_runs == 2
    frozen = a.copy()
    frozen.setflags(write=False)
    _check(staged, graph, [frozen, x])              # equal contents: compared, kept
    assert staged.slow_runs == 2
    _check(staged, graph, [frozen, x])              # same read-only object: not even compared
    assert staged.slow_runs == 2 and staged._keys[0][0] is frozen
    staged.forget()
    _check(staged, graph, [frozen, x])
    assert staged.slow_runs == 3
    frozen.setflags(write=True)                     # thawed and changed: compared, recomputed
    frozen[0, 0] += 3.0
    _check(staged, graph, [frozen, x])
    assert staged.slow_runs == 4


def test_a_read_only_view_of_a_writeable_array_is_compared():
    base = _inputs()[0]
    view = base[:]
    view.setflags(write=False)
    assert not is_frozen(view) and is_frozen(np.frombuffer(bytes(16), np.float32))
    graph = _graph()
    staged = compile_staged(graph, "reference", WEIGHTS, slow=["a"])
    x = _inputs()[1]
    _check(staged, graph, [view, x])
    base[0, 0] -= 2.0                               # changes the read-only view's contents
    _check(staged, graph, [view, x])
    assert staged.slow_runs == 2


def test_returned_slow_results_are_copies_and_prepare_runs_the_slow_stage():
    graph = _graph()
    staged = compile_staged(graph, "reference", WEIGHTS, slow=["a"])
    a, x = _inputs()
    assert staged.prepare(a) is True and staged.prepare(a=a) is False
    out = staged(a, x)
    out[1][...] = 1e9                               # the caller scribbles on h
    out[3][...] = 1e9                               # ... and on the returned input a
    _check(staged, graph, [a, x])
    assert staged.slow_runs == 1
    with pytest.raises(InputError):
        staged(a)                                   # the whole graph's signature is checked


def test_report_adds_up_both_stages():
    staged = compile_staged(_graph(), "numba", WEIGHTS, slow=["a"])
    r = staged.report
    assert r.kernels == sum(s.report.kernels for s in staged.stages) == len(staged.kernels)
    assert r.graph == "staged" and r.fallback_kernels == 0


def test_the_same_frozen_array_is_not_compared(monkeypatch):
    graph = _graph()
    staged = compile_staged(graph, "reference", WEIGHTS, slow=["a"])
    a, x = _inputs()
    a.setflags(write=False)
    _check(staged, graph, [a, x])
    compared = []
    real = np.array_equal
    monkeypatch.setattr(np, "array_equal", lambda *args, **kw: compared.append(1) or real(*args))
    for _ in range(3):
        staged(a, x)
    assert not compared and staged.slow_runs == 1
    staged(a.copy(), x)                             # an equal writeable array is compared
    assert compared == [1] and staged.slow_runs == 1


def _chain_graph():
    """Slow and fast stages that both keep intermediates in their arenas (softmax between
    products: nothing fuses them away)."""
    b = GraphBuilder("staged_arena")
    a = b.input("a", (16, 8))
    x = b.input("x", (16, 8))
    w = b.weight("w", (8, 8))
    h = b.matmul(b.softmax(b.matmul(a, w), axis=-1), w)        # slow only
    k = b.matmul(b.softmax(b.matmul(b.add(x, h), w), axis=-1), w)
    b.output(b.softmax(b.mul(k, h), axis=0), h)
    return b.build()


@pytest.mark.parametrize("profile", PROFILES)
def test_the_two_stages_share_one_arena(profile):
    """The stages never run at once, so one arena (the larger) serves both; results stay
    right whichever stage last wrote it, also after binding other weights."""
    graph = _chain_graph()
    staged = compile_staged(graph, profile, WEIGHTS, slow=["a"])
    slow, fast = staged.slow.plan, staged.fast.plan
    assert slow.arena_bytes > 0 and fast.arena_bytes > 0
    assert slow._arena is fast._arena
    assert slow._arena.nbytes == max(slow.arena_bytes, fast.arena_bytes)
    rng = np.random.default_rng(5)
    slows = [rng.standard_normal((16, 8)).astype(np.float32) for _ in range(2)]
    for weights in (WEIGHTS, {"w": rng.standard_normal((8, 8)).astype(np.float32),
                              "b": WEIGHTS["b"]}):
        staged.bind(weights)
        for i in range(4):
            a, x = slows[i % 2], rng.standard_normal((16, 8)).astype(np.float32)
            for got, want in zip(staged(a, x), run_graph(graph, [a, x], weights)):
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
