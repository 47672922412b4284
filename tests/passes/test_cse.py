"""cse: one node per distinct (op, operands, attributes, body)."""

from __future__ import annotations

from rlx.ir import GraphBuilder
from tests.support.opcheck import check_pass, sample_graph


def test_identical_computations_merge_and_different_ones_do_not():
    b = GraphBuilder("cse")
    x = b.input("x", (2, 3))
    a1 = b.softmax(b.neg(x), axis=1)
    a2 = b.softmax(b.neg(x), axis=1)        # same as a1 (after neg merges)
    a3 = b.softmax(b.neg(x), axis=0)        # different attribute
    c1 = b.add(x, 2.0)
    c2 = b.add(x, 2.0)                       # the two consts merge, then the adds
    c3 = b.add(x, 3.0)                       # different literal
    b.output(a1, a2, a3, c1, c2, c3)
    g = b.build()
    assert g.op_counts() == {"neg": 3, "softmax": 3, "const": 3, "add": 3}
    new = check_pass("cse", g, exact=True)
    assert new.op_counts() == {"neg": 1, "softmax": 2, "const": 2, "add": 2}
    assert new.outputs[0] is new.outputs[1] and new.outputs[3] is new.outputs[4]
    assert new.outputs[0] is not new.outputs[2]


def test_operand_order_matters():
    b = GraphBuilder("order")
    x, y = b.input("x", (3,)), b.input("y", (3,))
    b.output(b.sub(x, y), b.sub(y, x))
    assert check_pass("cse", b.build(), exact=True).op_counts() == {"sub": 2}


def test_fused_nodes_merge_only_with_identical_bodies():
    g = sample_graph("fused")
    b = GraphBuilder("two-fused")
    x = b.input("x", (2, 8))
    w = b.weight("bias", (8,))
    body = g.nodes[0].body
    f1 = b.fused(x, w, kind="elementwise", body=body)
    f2 = b.fused(x, w, kind="elementwise", body=body)
    other = sample_graph("fused").nodes[0].body
    other.nodes[1].attrs["approximate"] = "none"
    f3 = b.fused(x, w, kind="elementwise", body=other)
    b.output(*f1, *f2, *f3)
    new = check_pass("cse", b.build(), exact=True)
    assert new.op_counts() == {"fused.elementwise": 2}
