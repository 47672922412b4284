"""lower-linear: linear -> 2-D matmul with transpose_b (+ bias add, + reshapes for rank != 2)."""

from __future__ import annotations

from rlx.ir import GraphBuilder
from tests.support.opcheck import check_pass


def _graph():
    b = GraphBuilder("lin")
    w = b.weight("fc.weight", (6, 5))
    bias = b.weight("fc.bias", (6,))
    x3 = b.input("x3", (2, 3, 5))
    x2 = b.input("x2", (4, 5))
    x1 = b.input("x1", (5,))
    b.output(b.linear(x3, w, bias), b.linear(x2, w), b.linear(x1, w, bias))
    return b.build()


def test_lower_linear_keeps_outputs_and_removes_every_linear():
    g = _graph()
    new = check_pass("lower-linear", g)
    counts = new.op_counts()
    assert "linear" not in counts
    assert counts["matmul"] == 3
    assert counts["add"] == 2  # the two biased layers
    assert all(n.attrs["transpose_b"] for n in new.nodes if n.op == "matmul")
    # the weight is read in place: no transpose of it, no new weights
    assert "transpose" not in counts and set(new.weights) == set(g.weights)
    # rank-2 input needs no reshape; rank 3 and rank 1 get one before and one after
    assert counts["reshape"] == 4
    mm_a = [n.inputs[0].shape for n in new.nodes if n.op == "matmul"]
    assert mm_a == [(6, 5), (4, 5), (1, 5)]


def test_lower_linear_leaves_other_ops_alone():
    b = GraphBuilder("no-linear")
    b.output(b.gelu(b.input("x", (2, 3))))
    g = b.build()
    assert check_pass("lower-linear", g, exact=True).op_counts() == {"gelu": 1}
