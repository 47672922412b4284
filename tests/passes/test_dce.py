"""dce: nodes, weights and derived weights that no output needs are dropped."""

from __future__ import annotations

from rlx.ir import GraphBuilder
from rlx.passes.registry import get_pass
from tests.support.opcheck import check_pass, sample_graph


def test_dead_nodes_and_weights_are_dropped():
    b = GraphBuilder("dce")
    x = b.input("x", (2, 3))
    unused_input = b.input("unused", (4,))
    w = b.weight("w", (3,))
    dead_w = b.weight("dead", (3,))
    b.exp(b.add(x, dead_w))          # dead chain reading a weight
    b.neg(unused_input)              # dead, reading an input
    b.output(b.mul(x, w))
    g = b.build()
    new = check_pass("dce", g, exact=True)
    assert new.op_counts() == {"mul": 1}
    assert set(new.weights) == {"w"}
    assert [v.name for v in new.inputs] == ["x", "unused"]  # the signature never changes


def test_dead_derived_weights_are_dropped_with_their_sources():
    b = GraphBuilder("derived")
    x = b.input("x", (3,))
    w = b.weight("w", (3,))
    v = b.weight("v", (3,))
    y = b.add(x, b.exp(w))
    b.neg(b.exp(v))                 # dead after folding
    b.output(y)
    folded = get_pass("fold-constants")(b.build())
    assert len(folded.derived) == 3  # exp(w), exp(v), neg(exp(v))
    new = check_pass("dce", folded, exact=True)
    assert [n.inputs[0].name for n in new.derived] == ["w"]
    assert set(new.source_weights()) == {"w"}


def test_a_multi_result_node_stays_if_any_result_is_used():
    g = sample_graph("fused")
    g.outputs = g.outputs[1:]
    new = check_pass("dce", g, exact=True)
    assert new.op_counts() == {"fused.elementwise": 1}


def test_live_graph_is_unchanged():
    g = sample_graph("conv2d")
    new = check_pass("dce", g, exact=True)
    assert new.op_counts() == g.op_counts() and set(new.weights) == set(g.weights)
