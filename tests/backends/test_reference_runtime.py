"""Runtime basics on the reference backend: compile_graph(graph, "reference", weights)
computes what the reference interpreter computes, across presets, repeated calls,
late binding and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from models.example import build_classifier, synthetic_weights
from rlx.backends.reference import run_graph
from rlx.errors import InputError, RlxError, VerifyError
from rlx.ir import GraphBuilder
from rlx.runtime import PRESETS, compile_graph, lower
from rlx.runtime import timing
from tests.support.opcheck import kitchen_sink, random_inputs, random_weights

RNG = np.random.default_rng(21)


@pytest.fixture(scope="module")
def example():
    g = build_classifier(batch=2)
    w = synthetic_weights(5)
    x = RNG.standard_normal((2, 3, 32, 32)).astype(np.float32)
    return g, w, x, run_graph(g, [x], w)[0]


def test_compiled_reference_graph_equals_run_graph(example):
    g, w, x, want = example
    cg = compile_graph(g, "reference", w)
    (got,) = cg(x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    # the plan runs the lowered graph's own reference semantics: bit-identical to it
    np.testing.assert_array_equal(got, run_graph(cg.graph, [x], w)[0])
    assert cg.hir is g and cg.name == "classifier"


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_on_the_reference_backend(preset):
    """Each preset's pass options (fusion, attention, verify) with reference kernels."""
    profile = PRESETS[preset].replace(backend="reference")
    g = kitchen_sink()
    ins, ws = random_inputs(g), random_weights(g)
    want = run_graph(g, ins, ws)
    if profile.precision != "f32":  # what the precision pass asks, unfused, is the reference
        from rlx.runtime.compiler import lower

        f32, want = want, run_graph(lower(g, profile.replace(fusion=False))[0], ins, ws)
        for a, b in zip(want, f32):
            assert np.abs(a - b).max() <= 0.05 * np.abs(b).max() + 1e-6
    cg = compile_graph(g, profile, ws)
    for a, b in zip(cg(*ins), want):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    counts = cg.graph.op_counts()
    fused = any(k.startswith("fused") for k in counts)
    assert fused == profile.fusion
    if profile.attention == "decomposed":
        assert "attention" not in counts
    assert cg.report.fallback_kernels == 0


def test_repeated_calls_reuse_the_arena_without_clobbering_results(example):
    g, w, x, want = example
    cg = compile_graph(g, "reference", w)
    x2 = RNG.standard_normal(x.shape).astype(np.float32)
    (r1,) = cg(x)
    keep = r1.copy()
    (r2,) = cg(image=x2)
    (r3,) = cg(x)
    np.testing.assert_array_equal(r1, keep)           # not overwritten by later calls
    np.testing.assert_array_equal(r3, keep)
    np.testing.assert_allclose(r2, run_graph(g, [x2], w)[0], rtol=1e-5, atol=1e-7)
    assert r1 is not r3 and not np.shares_memory(r1, r3)


def test_outputs_that_are_inputs_or_weights_are_copies():
    b = GraphBuilder("passthrough")
    x = b.input("x", (2, 3))
    w = b.weight("w", (3,))
    b.output(x, b.reshape(x, shape=(3, 2)), w, b.add(x, w))
    g = b.build()
    xv, wv = np.ones((2, 3), np.float32), np.full(3, 2.0, np.float32)
    outs = compile_graph(g, "reference", {"w": wv})(xv)
    for o in outs:
        assert not np.shares_memory(o, xv) and not np.shares_memory(o, wv)
    np.testing.assert_array_equal(outs[3], xv + wv)


def test_compile_first_bind_later(example):
    g, w, x, want = example
    cg = compile_graph(g, "reference")
    with pytest.raises(RlxError, match="bind weights before running"):
        cg(x)
    with pytest.raises(VerifyError, match="missing weights: head.bias"):
        cg.bind({k: v for k, v in w.items() if k != "head.bias"})
    (got,) = cg.bind(w)(x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_bad_inputs_to_a_compiled_graph(example):
    g, w, x, _ = example
    cg = compile_graph(g, "reference", w)
    with pytest.raises(InputError, match=r"input %image: expected f32\[2,3,32,32\]"):
        cg(x[:1])
    with pytest.raises(InputError, match="takes 1 inputs"):
        cg(x, x)
    with pytest.raises(InputError, match=r"missing inputs \['image'\]"):
        cg(img=x)


def test_compile_report(example):
    g, w, _, _ = example
    cg = compile_graph(g, "reference", w)
    r = cg.report
    assert r.backend == "reference" and r.graph == "classifier"
    assert r.nodes_before == len(g.nodes) and r.nodes_after == len(cg.graph.nodes)
    assert r.kernels == sum(1 for n in cg.graph.nodes if n.op != "reshape")
    assert r.fallback_kernels == 0 and not r.from_cache
    assert r.flops > 2 * 16 * 27 * 32 * 32 * 2  # at least the first convolution
    assert r.arena_bytes > 0 and [p.name for p in r.passes][0] == "infer-shapes"


def test_lower_stops_after_a_named_pass(example):
    g = example[0]
    lowered, pm = lower(g, PRESETS["reference"], stop_after="lower-conv")
    assert pm.records[-1].name == "lower-conv" and "conv2d" not in lowered.op_counts()


def test_profile_timing_records_subgraphs_and_kernels(example):
    g, w, x, _ = example
    cg = compile_graph(g, "reference", w)
    was = timing.enabled()
    timing.reset()
    timing.set_enabled(True)
    try:
        cg(x)
        report = timing.report()
    finally:
        timing.set_enabled(was)
        timing.reset()
    assert "classifier" in report and "reference." in report
