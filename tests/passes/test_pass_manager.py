"""The pass manager and the default pipeline on a graph that uses every HIR op kind.

Every intermediate stage must compute what the HIR computed (reference
interpreter), and the pipeline must leave no op its lowering passes remove.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.example import build_classifier, synthetic_weights
from rlx.backends.reference import run_graph
from rlx.errors import RlxError, VerifyError
from rlx.ir import TensorType
from rlx.passes import PassManager, PassOptions, run_passes
from rlx.passes.manager import Pass
from rlx.passes.registry import PASSES, default_pipeline, get_pass, register
from tests.support.opcheck import kitchen_sink, random_inputs, random_weights


@pytest.fixture(scope="module")
def sink():
    g = kitchen_sink()
    return g, random_inputs(g), random_weights(g)


@pytest.mark.parametrize("lower_attention", [False, True])
def test_every_stage_of_the_pipeline_computes_the_same(sink, lower_attention):
    g, ins, ws = sink
    want = run_graph(g, ins, ws)
    options = PassOptions(lower_attention=lower_attention, verify=True)
    names = default_pipeline(options)
    pm = PassManager([get_pass(n) for n in names], options, dump_after=set(names))
    final = pm.run(g)
    assert [r.name for r in pm.records] == names
    for name in names:
        got = run_graph(pm.snapshots[name], ins, ws)
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6, err_msg=name)
    counts = final.op_counts()
    gone = {"linear", "window_partition", "window_unpartition"} | (
        {"attention"} if lower_attention else set())
    assert not gone & set(counts), counts
    attention = counts.get("attention", 0) + counts.get("fused.attention", 0)  # fuse-attention
    assert attention == (0 if lower_attention else 1)
    assert counts["conv2d"] == 1                 # the grouped one stays for the backend
    assert counts["max_pool2d"] == 1             # the overlapping one stays
    assert "conv_transpose2d" not in counts and "gather" not in counts
    assert final.derived, "weight-only work should have been folded"


def test_example_model_through_the_pipeline(sink):
    g = build_classifier()
    w = synthetic_weights(1)
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    (want,) = run_graph(g, [x], w)
    final = run_passes(g, default_pipeline(), PassOptions(verify=True))
    (got,) = run_graph(final, [x], w)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert "conv2d" not in final.op_counts() and "linear" not in final.op_counts()


def test_stop_after_and_records():
    g = build_classifier()
    names = default_pipeline()
    pm = PassManager([get_pass(n) for n in names], PassOptions(), stop_after="lower-conv")
    out = pm.run(g)
    assert [r.name for r in pm.records] == names[:names.index("lower-conv") + 1]
    assert "conv2d" not in out.op_counts() and "linear" not in out.op_counts()
    assert pm.records[-1].nodes_after == len(out.nodes)
    report = pm.report()
    assert "lower-conv" in report and "fold-constants" not in report


def test_unknown_pass_names_are_errors():
    with pytest.raises(RlxError, match="unknown pass 'nope'; known: infer-shapes"):
        get_pass("nope")
    with pytest.raises(RlxError, match="no pass named 'nope' in this pipeline"):
        PassManager([get_pass("dce")], PassOptions(), stop_after="nope")
    with pytest.raises(RlxError, match="no pass named 'cse' in this pipeline"):
        PassManager([get_pass("dce")], PassOptions(), dump_after={"cse"})
    with pytest.raises(ValueError, match="already registered"):
        register(PASSES["dce"])


def test_verify_names_the_pass_that_broke_the_graph():
    def breaker(graph, options):
        new = get_pass("dce")(graph, options)
        new.nodes[0].outputs[0].type = TensorType((9,))
        return new

    pm = PassManager([get_pass("cse"), Pass("breaker", breaker, "breaks types"),
                      get_pass("dce")], PassOptions(verify=True))
    with pytest.raises(VerifyError, match=r"^after pass breaker: graph classifier"):
        pm.run(build_classifier())
    # without verification the broken graph goes through (that is what verify is for)
    PassManager([Pass("breaker", breaker, "")], PassOptions(verify=False)).run(build_classifier())


def test_manager_verifies_its_input_when_asked():
    g = build_classifier()
    g.nodes[0].attrs["groups"] = 2
    with pytest.raises(VerifyError, match="conv2d"):
        PassManager([get_pass("dce")], PassOptions(verify=True)).run(g)
