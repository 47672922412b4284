"""The verifier rejects each kind of broken graph with a message naming the culprit.

Graphs are built correctly with the builder and then broken by hand, the way a
buggy pass would break them.
"""

from __future__ import annotations

import numpy as np
import pytest

from rlx.errors import VerifyError
from rlx.ir import GraphBuilder, TensorType, verify
from rlx.ir.graph import RESULT, WEIGHT, Node, Value
from rlx.ir.ops import OPS
from tests.support.opcheck import sample_graph


def _graph():
    """x -> neg -> add(@w) -> softmax, with a derived weight @w2 = neg(@w) used by mul."""
    b = GraphBuilder("g")
    x = b.input("x", (2, 3))
    w = b.weight("w", (3,))
    y = b.neg(x)
    z = b.add(y, w)
    s = b.softmax(z, axis=-1)
    b.output(s)
    return b.build()


def _with_derived():
    from rlx.passes.fold_constants import fold_constants

    b = GraphBuilder("d")
    x = b.input("x", (2, 3))
    w = b.weight("w", (3,))
    b.output(b.mul(x, b.neg(w)))
    g = fold_constants(b.build())
    assert len(g.derived) == 1
    return g


@pytest.mark.parametrize("op", sorted(OPS))
def test_every_sample_graph_verifies(op):
    verify(sample_graph(op))


def _fails(g, *fragments, weights=None):
    with pytest.raises(VerifyError) as info:
        verify(g, weights)
    msg = str(info.value)
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"
    return msg


def test_unknown_op():
    g = _graph()
    g.nodes[0].op = "frob"
    _fails(g, "graph g", "node %neg = frob", "unknown op 'frob'")


def test_wrong_result_type():
    g = _graph()
    g.nodes[1].outputs[0].type = TensorType((2, 4))
    _fails(g, "node %add = add", "result types ['f32[2,4]'] but the op infers ['f32[2,3]']")


def test_wrong_result_dtype():
    g = _graph()
    g.nodes[0].outputs[0].type = TensorType((2, 3), "f64")
    _fails(g, "%neg", "['f64[2,3]']", "['f32[2,3]']")


def test_non_canonical_attributes():
    g = _graph()
    g.nodes[2].attrs["axis"] = -1  # canonical form is the non-negative axis
    _fails(g, "node %softmax = softmax", "not canonical", "'axis': -1", "'axis': 1")


def test_missing_default_attribute_is_not_canonical():
    g = _graph()
    del g.nodes[2].attrs["axis"]
    _fails(g, "softmax", "not canonical")


def test_unknown_attribute():
    g = _graph()
    g.nodes[0].attrs["alpha"] = 1.0
    _fails(g, "node %neg = neg", "unknown attribute(s) ['alpha']")


def test_operand_shape_broken():
    g = _graph()
    g.weights["w"].type = TensorType((4,))
    _fails(g, "node %add = add", "shapes do not broadcast", "f32[4]")


def test_use_before_definition():
    g = _graph()
    g.nodes[0], g.nodes[1] = g.nodes[1], g.nodes[0]
    _fails(g, "node %add = add", "operand %neg is used before it is defined")


def test_cycle():
    g = _graph()
    neg, add = g.nodes[0], g.nodes[1]
    neg.inputs[0] = add.outputs[0]  # neg reads add, add reads neg
    _fails(g, "node %neg = neg", "operand %add is used before it is defined", "cycle")


def test_operand_from_another_graph():
    g = _graph()
    stranger = Value("x", TensorType((2, 3)), "input")
    g.nodes[0].inputs[0] = stranger
    _fails(g, "operand %x is used before it is defined", "not defined in this graph")


def test_value_defined_twice():
    g = _graph()
    g.nodes.insert(1, g.nodes[0])  # a pass emitted the same node twice
    _fails(g, "node %neg = neg", "value %neg defined twice")


def test_value_shared_by_two_nodes():
    g = _graph()
    g.nodes[1].outputs = [g.nodes[0].outputs[0]]
    _fails(g, "node %neg = add", "result %neg does not point back")


def test_name_defined_twice():
    g = _graph()
    g.nodes[1].outputs[0].name = "neg"
    _fails(g, "node %neg = add", "name %neg defined twice")


def test_dangling_output():
    g = _graph()
    g.outputs = [Value("ghost", TensorType((2, 3)), RESULT)]
    _fails(g, "graph g", "output %ghost is not defined in the graph")


def test_no_outputs():
    g = _graph()
    g.outputs = []
    _fails(g, "graph g", "no outputs")


def test_wrong_arity():
    g = _graph()
    g.nodes[1].inputs.append(g.inputs[0])
    _fails(g, "node %add = add", "add takes 2 inputs", "got 3")


def test_result_not_pointing_back_to_its_node():
    g = _graph()
    g.nodes[0].outputs[0].producer = g.nodes[1]
    _fails(g, "result %neg does not point back")


def test_value_kind_mismatch():
    g = _graph()
    g.inputs[0].kind = RESULT
    _fails(g, "%x has kind result, expected input")


def test_weight_table_key_mismatch():
    g = _graph()
    g.weights["v"] = g.weights.pop("w")
    _fails(g, "weight table key 'v' holds @w")


def test_undeclared_weight():
    g = _graph()
    del g.weights["w"]
    _fails(g, "operand @w is used before it is defined")


def test_derived_weight_reading_a_non_weight():
    g = _with_derived()
    verify(g)
    g.derived[0].inputs[0] = g.inputs[0]
    g.derived[0].outputs[0].type = TensorType((2, 3))
    g.nodes[0].outputs[0].type = TensorType((2, 3))
    _fails(g, "derived weight reads non-weight %x")


def test_derived_weight_missing_from_weight_table():
    g = _with_derived()
    name = g.derived[0].output.name
    del g.weights[name]
    _fails(g, f"@{name}", "not in the weight table")


def test_body_on_a_non_fused_op():
    g = _graph()
    g.nodes[0].body = sample_graph("neg")
    _fails(g, "node %neg = neg", "op neg cannot have a body")


def test_fused_without_body():
    g = sample_graph("fused")
    g.nodes[0].body = None
    _fails(g, "op fused needs a body")


def test_broken_body_is_reported():
    g = sample_graph("fused")
    g.nodes[0].body.nodes[0].op = "frob"
    _fails(g, "graph body", "unknown op 'frob'")


def test_body_declaring_weights():
    g = sample_graph("fused")
    body = g.nodes[0].body
    body.weights["v"] = Value("v", TensorType((1,)), WEIGHT)
    _fails(g, "a region body cannot declare weights")


def test_derived_node_with_two_results():
    g = _with_derived()
    d = g.derived[0]
    d.outputs.append(Value("extra", TensorType((3,)), WEIGHT, d, 1))
    _fails(g, "derived nodes have one result")


def test_missing_and_misshaped_weights_when_weights_are_passed():
    g = _graph()
    verify(g, {"w": np.zeros(3, np.float32)})
    _fails(g, "graph g", "missing weights: w", weights={})
    _fails(g, "wrong weights: w: expected f32[3], got float32[4]",
           weights={"w": np.zeros(4, np.float32)})
    _fails(g, "wrong weights: w: expected f32[3], got float64[3]",
           weights={"w": np.zeros(3, np.float64)})


def test_derived_weights_are_not_required_from_the_caller():
    g = _with_derived()
    verify(g, {"w": np.zeros(3, np.float32)})


def test_many_missing_weights_are_summarized():
    b = GraphBuilder("many")
    x = b.input("x", (2,))
    for i in range(15):
        x = b.add(x, b.weight(f"w{i}", (2,)))
    b.output(x)
    msg = _fails(b.build(), "missing weights: w0, w1", "... and 5 more", weights={})
    assert "w14" not in msg


def test_node_without_outputs_is_named():
    g = _graph()
    g.nodes.insert(0, Node("neg", [g.inputs[0]], {}, []))
    _fails(g, "(no outputs)", "result types [] but the op infers ['f32[2,3]']")
