"""The numpy reference interpreter: input validation, weights, memory freeing, reuse,
and the ReferenceBackend kernels the runtime falls back to."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from models.example import build_classifier, synthetic_weights
from rlx.backends.base import KernelContext
from rlx.backends.reference import (ReferenceBackend, ReferenceRunner, materialize_weights,
                                    run_graph)
from rlx.errors import InputError, VerifyError
from rlx.ir import GraphBuilder
from rlx.passes import PassOptions, run_passes
from rlx.passes.registry import default_pipeline
from rlx.runtime import PRESETS
from tests.support.opcheck import random_inputs, random_weights, sample_graph


def _two_inputs():
    b = GraphBuilder("two")
    a = b.input("a", (2, 3))
    m = b.input("mask", (3,), "bool")
    w = b.weight("w", (3,))
    b.output(b.where(m, b.mul(a, w), a))
    return b.build()


A = np.arange(6, dtype=np.float32).reshape(2, 3)
M = np.array([True, False, True])
W = {"w": np.array([2.0, 3.0, 4.0], np.float32)}


def test_positional_and_named_inputs_agree_with_numpy():
    g = _two_inputs()
    want = np.where(M, A * W["w"], A)
    np.testing.assert_array_equal(run_graph(g, [A, M], W)[0], want)
    np.testing.assert_array_equal(run_graph(g, {"mask": M, "a": A}, W)[0], want)


@pytest.mark.parametrize("inputs,fragment", [
    ([A], "graph two takes 2 inputs (%a, %mask), got 1"),
    ([A, M, M], "takes 2 inputs"),
    ([A.T.copy(), M], "input %a: expected f32[2,3], got float32[3,2]"),
    ([A.astype(np.float64), M], "input %a: expected f32[2,3], got float64[2,3]"),
    ([A, M.astype(np.int64)], "input %mask: expected bool[3], got int64[3]"),
    ([A.tolist(), M], "input %a must be a numpy array, got list"),
    ({"a": A}, "missing inputs ['mask']"),
    ({"a": A, "mask": M, "extra": A}, "unknown inputs ['extra']"),
])
def test_bad_inputs_are_input_errors_naming_the_input(inputs, fragment):
    with pytest.raises(InputError) as info:
        run_graph(_two_inputs(), inputs, W)
    assert fragment in str(info.value)


def test_missing_and_misshaped_weights_are_named():
    g = _two_inputs()
    with pytest.raises(VerifyError, match="missing weights: w"):
        run_graph(g, [A, M], {})
    with pytest.raises(VerifyError, match=r"wrong weights: w: expected f32\[3\], got float32\[4\]"):
        run_graph(g, [A, M], {"w": np.zeros(4, np.float32)})
    with pytest.raises(VerifyError, match=r"wrong weights: w: expected f32\[3\], got float64\[3\]"):
        ReferenceRunner(g, {"w": np.zeros(3)})


def test_extra_weights_are_ignored():
    g = _two_inputs()
    run_graph(g, [A, M], {**W, "unused": np.zeros(1)})


def test_intermediates_are_freed_after_their_last_use():
    """A chain of 24 ops on 4 MB tensors must not hold all 24 results at once."""
    b = GraphBuilder("chain")
    x = b.input("x", (1 << 20,))
    y = x
    for _ in range(24):
        y = b.neg(y)
    b.output(y)
    g = b.build()
    xv = np.ones(1 << 20, np.float32)
    tracemalloc.start()
    try:
        (out,) = run_graph(g, [xv], {})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(out, xv)
    assert peak < 5 * xv.nbytes, f"peak {peak / 2**20:.1f} MiB: intermediates were kept"


def test_freeing_does_not_break_outputs_or_later_readers():
    """An output that later nodes also read, a value read by several nodes, an output
    that is an input or a weight: all must come back intact."""
    b = GraphBuilder("shared")
    x = b.input("x", (4,))
    w = b.weight("w", (4,))
    e = b.exp(x)          # output AND read by two later nodes
    s = b.add(e, w)
    t = b.mul(e, s)
    u = b.neg(t)          # t is dead after this
    b.output(e, u, x, w, e)
    g = b.build()
    xv = np.linspace(-1, 1, 4).astype(np.float32)
    wv = np.full(4, 0.5, np.float32)
    outs = run_graph(g, [xv], {"w": wv})
    ev = np.exp(xv)
    np.testing.assert_allclose(outs[0], ev, rtol=1e-6)
    np.testing.assert_allclose(outs[1], -(ev * (ev + wv)), rtol=1e-6)
    np.testing.assert_array_equal(outs[2], xv)
    np.testing.assert_array_equal(outs[3], wv)
    np.testing.assert_array_equal(outs[4], outs[0])


def test_outputs_never_alias_inputs_or_weights_and_are_writeable():
    b = GraphBuilder("views")
    x = b.input("x", (2, 3))
    w = b.weight("w", (3,))
    b.output(b.reshape(x, shape=(3, 2)), x, w, b.broadcast_to(w, shape=(3,)),
             b.reshape(w, shape=(1, 3)), b.slice(x, ends=(2, 3)))
    g = b.build()
    xv = np.ones((2, 3), np.float32)
    wv = np.ones(3, np.float32)
    wv.setflags(write=False)  # WeightStore arrays are read-only
    outs = run_graph(g, [xv], {"w": wv})
    for o in outs:
        assert o.flags.writeable
        assert not np.shares_memory(o, xv) and not np.shares_memory(o, wv)
        o += 1
    assert (xv == 1).all() and (wv == 1).all()


def test_runner_reuse_gives_independent_results():
    g = run_passes(build_classifier(batch=2), default_pipeline(PassOptions()), PassOptions())
    w = synthetic_weights(3)
    runner = ReferenceRunner(g, w)
    assert set(runner.weights) == set(g.weights)  # derived weights materialized once
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    x2 = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    (r1,) = runner(x1)
    (r2,) = runner(image=x2)
    (r1_again,) = runner(x1)
    np.testing.assert_array_equal(r1, r1_again)
    assert not np.array_equal(r1, r2)
    np.testing.assert_array_equal(r1, run_graph(g, [x1], w)[0])
    np.testing.assert_allclose(r1, run_graph(build_classifier(batch=2), [x1], w)[0],
                               rtol=1e-5, atol=1e-7)


def test_materialize_weights_conforms_derived_dtypes_and_checks_sources():
    g = run_passes(build_classifier(), ["lower-conv", "fold-constants"], PassOptions())
    w = synthetic_weights(0)
    m = materialize_weights(g, w)
    for node in g.derived:
        arr = m[node.output.name]
        assert arr.dtype == node.output.type.np_dtype and arr.shape == node.output.shape
        assert arr.flags.c_contiguous
    with pytest.raises(VerifyError, match="missing weights: conv1.weight"):
        materialize_weights(g, {k: v for k, v in w.items() if k != "conv1.weight"})


@pytest.mark.parametrize("op", ["conv2d", "attention", "fused", "gather", "slice"])
def test_reference_backend_kernels_write_into_preallocated_outputs(op):
    g = sample_graph(op)
    ins, ws = random_inputs(g), random_weights(g)
    want = run_graph(g, ins, ws)
    backend = ReferenceBackend()
    ctx = KernelContext(profile=PRESETS["reference"])
    (kernel,) = backend.compile_many(g.nodes, ctx)
    env = {id(v): a for v, a in zip(g.inputs, ins)}
    env.update({id(v): ws[k] for k, v in g.weights.items()})
    outs = [np.full(v.shape, np.nan, v.type.np_dtype) if v.type.np_dtype.kind == "f"
            else np.zeros(v.shape, v.type.np_dtype) for v in g.nodes[0].outputs]
    kernel([env[id(v)] if v is not None else None for v in g.nodes[0].inputs], outs)
    for o, w_ in zip(outs, want):
        np.testing.assert_array_equal(o, w_)
    assert backend.supports(g.nodes[0]) and op in backend.capabilities().ops
    assert kernel.info.kind.startswith("reference.")


def test_reference_backend_dump_shows_fused_bodies():
    g = sample_graph("fused")
    text = ReferenceBackend().dump(g.nodes, "text", KernelContext(profile=PRESETS["reference"]))
    assert "fused.elementwise" in text and "gelu(%add)" in text


def test_rank_zero_derived_weights_stay_rank_zero():
    from rlx.passes.registry import get_pass

    b = GraphBuilder("scalar")
    x = b.input("x", (3,))
    w = b.weight("w", (3,))
    s = b.reduce_sum(w)                      # weight-only, rank 0: becomes a derived weight
    b.output(b.mul(x, b.transpose(s, perm=())), s)
    g = get_pass("fold-constants")(b.build())
    assert [n.output.shape for n in g.derived] == [(), ()]
    wv = np.array([1.0, 2.0, 3.0], np.float32)
    assert materialize_weights(g, {"w": wv})[g.derived[0].output.name].shape == ()
    out, total = run_graph(g, [np.ones(3, np.float32)], {"w": wv})
    assert total.shape == () and float(total) == 6.0
    np.testing.assert_array_equal(out, [6.0, 6.0, 6.0])
