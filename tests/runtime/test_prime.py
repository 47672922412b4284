"""Priming a plan (`ExecutablePlan.prime`, `StagedGraph.prime`): first-call work done ahead.

A primed plan must give exactly the outputs of one never primed (every
backend; bitwise: same kernels, same order), must have run each kernel once
and written its whole arena, and a primed staged graph must be as if never
called (no kept slow-stage results, no slow run counted).
"""

from __future__ import annotations

import numpy as np
import pytest

from rlx.backends.reference import run_graph
from rlx.errors import RlxError
from rlx.ir import GraphBuilder
from rlx.runtime.compiler import compile_graph
from rlx.runtime.staged import compile_staged
from tests.models.sam.decoder_fixtures import PROFILES

RNG = np.random.default_rng(7)
WEIGHTS = {"w1": RNG.standard_normal((32, 48)).astype(np.float32),
           "b1": RNG.standard_normal((48,)).astype(np.float32),
           "w2": RNG.standard_normal((48, 32)).astype(np.float32),
           "g": RNG.standard_normal((32,)).astype(np.float32),
           "beta": RNG.standard_normal((32,)).astype(np.float32)}


def _graph():
    """img (slow) and q (fast): projections, attention-like softmax, layer norm, a reduction,
    transposes -- intermediates that live in the arena between kernels."""
    b = GraphBuilder("primed")
    img = b.input("img", (1, 32, 64))
    q = b.input("q", (1, 8, 32))
    tokens = b.transpose(img, perm=(0, 2, 1))                       # [1, 64, 32]
    k = b.relu(b.add(b.matmul(tokens, b.weight("w1", (32, 48))), b.weight("b1", (48,))))
    v = b.matmul(k, b.weight("w2", (48, 32)))                         # [1, 64, 32]
    scores = b.softmax(b.matmul(q, v, transpose_b=True), axis=2)      # [1, 8, 64]
    attn = b.add(b.matmul(scores, v), q)
    out = b.layer_norm(attn, b.weight("g", (32,)), b.weight("beta", (32,)), axis=2, eps=1e-5)
    total = b.reduce_sum(b.mul(out, out), axes=(2,))
    b.output(out, total, k)
    return b.build()


def _inputs(seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((1, 32, 64)).astype(np.float32),
            rng.standard_normal((1, 8, 32)).astype(np.float32)]


class _Counting:
    """A kernel wrapper counting its calls."""

    def __init__(self, kernel):
        self.kernel, self.calls = kernel, 0
        self.info = kernel.info

    def __call__(self, ins, outs):
        self.calls += 1
        return self.kernel(ins, outs)


@pytest.mark.parametrize("profile", PROFILES)
def test_a_primed_plan_gives_the_outputs_of_an_unprimed_one(profile):
    graph = _graph()
    plain = compile_graph(graph, profile, WEIGHTS)
    primed = compile_graph(graph, profile, WEIGHTS)
    assert primed.plan.arena_bytes > 0
    counted = [_Counting(k) if k is not None else None for k in primed.plan.kernels]
    primed.plan.kernels = counted
    primed.plan.prime()
    assert all(k.calls == 1 for k in counted if k is not None)
    # What prime relies on: a call computes every intermediate before reading it, so
    # whatever the arena holds (here NaN bytes) does not reach the outputs.
    primed.plan._arena[...] = 0xFF
    for seed in (1, 2):
        want = plain(*_inputs(seed))
        got = primed(*_inputs(seed))
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
        ref = run_graph(graph, _inputs(seed), WEIGHTS)
        for g, r in zip(got, ref):
            np.testing.assert_allclose(g, r, rtol=2e-4, atol=2e-4)


def test_prime_without_running_writes_the_whole_arena_and_runs_nothing():
    compiled = compile_graph(_graph(), "llvm", WEIGHTS)
    compiled.plan._arena[...] = 0xFF
    counted = [_Counting(k) if k is not None else None for k in compiled.plan.kernels]
    compiled.plan.kernels = counted
    compiled.plan.prime(run=False)
    assert not compiled.plan._arena.any()
    assert all(k.calls == 0 for k in counted if k is not None)


def test_prime_takes_example_inputs_and_needs_weights():
    graph = _graph()
    compiled = compile_graph(graph, "numba", WEIGHTS)
    compiled.plan.prime(_inputs(5))
    np.testing.assert_allclose(compiled(*_inputs(1))[0], run_graph(graph, _inputs(1), WEIGHTS)[0],
                               rtol=2e-4, atol=2e-4)
    unbound = compile_graph(graph, "numba")
    with pytest.raises(RlxError, match="bind weights before priming"):
        unbound.plan.prime()


@pytest.mark.parametrize("profile", PROFILES)
def test_a_primed_staged_graph_is_as_if_never_called(profile):
    graph = _graph()
    staged = compile_staged(graph, profile, WEIGHTS, slow=["img"])
    assert staged.slow is not None
    plain = compile_staged(graph, profile, WEIGHTS, slow=["img"])
    counted = {}
    for stage in staged.stages:
        stage.plan.kernels = [_Counting(k) if k is not None else None for k in stage.plan.kernels]
        counted[stage.name] = stage.plan.kernels
    staged.prime()
    assert all(k.calls == 1 for ks in counted.values() for k in ks if k is not None)
    assert staged.slow_runs == 0 and staged._kept is None
    img, q = _inputs(3)
    zeros = np.zeros_like(img)
    zeros.setflags(write=False)
    # zeros: what prime ran on; still computed for real (nothing was kept from the prime)
    for inputs in ([zeros, q], [img, q]):
        got, want = staged(*inputs), plain(*inputs)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
    assert staged.slow_runs == 2


@pytest.mark.parametrize("profile", PROFILES)
def test_run_writes_into_given_output_arrays(profile):
    graph = _graph()
    compiled = compile_graph(graph, profile, WEIGHTS)
    first = compiled.plan.run(_inputs(1))
    wrong = np.empty((3,), np.float32)                   # wrong shape: ignored
    again = compiled.plan.run(_inputs(2), out=[first[0], wrong, None])
    assert again[0] is first[0] and again[1] is not wrong and again[2] is not first[2]
    for g, r in zip(again, run_graph(graph, _inputs(2), WEIGHTS)):
        np.testing.assert_allclose(g, r, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("profile", PROFILES)
def test_slow_reruns_reuse_the_memory_of_the_primed_and_previous_runs(profile):
    graph = _graph()
    staged = compile_staged(graph, profile, WEIGHTS, slow=["img"])
    staged.prime()
    spare = list(staged._spare)
    for seed in (1, 2, 3):
        got = staged(*_inputs(seed))
        assert all(k is s for k, s in zip(staged._kept, spare))
        for g, r in zip(got, run_graph(graph, _inputs(seed), WEIGHTS)):
            np.testing.assert_allclose(g, r, rtol=2e-4, atol=2e-4)
    assert staged.slow_runs == 3


@pytest.mark.parametrize("profile", PROFILES)
def test_priming_only_the_memory_runs_no_kernel_and_the_first_run_uses_it(profile):
    graph = _graph()
    staged = compile_staged(graph, profile, WEIGHTS, slow=["img"])
    counted = []
    for stage in staged.stages:
        stage.plan.kernels = [_Counting(k) if k is not None else None for k in stage.plan.kernels]
        counted += [k for k in stage.plan.kernels if k is not None]
        stage.plan._arena[...] = 0xFF
    staged.prime(run=False)
    assert all(k.calls == 0 for k in counted)
    assert all(not s.plan._arena.any() for s in staged.stages)  # written: mapped in
    spare, snaps = list(staged._spare), list(staged._snaps)
    assert spare and snaps and staged._kept is None and staged.slow_runs == 0
    got = staged(*_inputs(4))
    assert staged.slow_runs == 1
    assert all(k is s for k, s in zip(staged._kept, spare))       # written over, not new
    assert staged._snaps[0] is snaps[0]
    for g, r in zip(got, run_graph(graph, _inputs(4), WEIGHTS)):
        np.testing.assert_allclose(g, r, rtol=2e-4, atol=2e-4)
