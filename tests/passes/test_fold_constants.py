"""fold-constants: weight-only subexpressions become derived weights (evaluated at bind)."""

from __future__ import annotations

import numpy as np

from rlx.backends.reference import materialize_weights
from rlx.ir import GraphBuilder
from tests.support.opcheck import check_pass


def test_weight_only_chains_and_literals_fold_into_derived_weights():
    b = GraphBuilder("fold")
    x = b.input("x", (2, 4))
    w = b.weight("w", (3, 4))
    scale = b.weight("scale", (3,))
    wt = b.transpose(w, perm=(1, 0))                 # weight-only
    ws = b.mul(wt, b.reshape(scale, shape=(1, 3)))   # weight-only, two levels deep
    ws2 = b.mul(ws, 0.5)                             # weight times a literal
    y = b.matmul(x, ws2)                             # reads an input: stays
    b.output(b.add(y, 1.0))                          # literal + input: stays
    g = b.build()
    new = check_pass("fold-constants", g)
    assert [n.op for n in new.derived] == ["transpose", "reshape", "mul", "const", "mul"]
    live = {n.op for n in new.nodes}
    assert {"matmul", "add"} <= live and "transpose" not in live and "mul" not in live
    mm = next(n for n in new.nodes if n.op == "matmul")
    assert mm.inputs[1].kind == "weight" and mm.inputs[1].name in new.weights
    # derived weights are computed once from the source weights
    rng = np.random.default_rng(0)
    src = {"w": rng.standard_normal((3, 4)).astype(np.float32),
           "scale": rng.standard_normal(3).astype(np.float32)}
    m = materialize_weights(new, src)
    np.testing.assert_allclose(m[mm.inputs[1].name], src["w"].T * src["scale"] * 0.5,
                               rtol=1e-6)


def test_identical_weight_expressions_share_one_derived_weight():
    b = GraphBuilder("share")
    x = b.input("x", (2, 3))
    w = b.weight("w", (3, 3))
    y1 = b.matmul(x, b.transpose(w, perm=(1, 0)))
    y2 = b.matmul(x, b.transpose(w, perm=(1, 0)))
    b.output(b.add(y1, y2))
    new = check_pass("fold-constants", b.build(), exact=True)
    assert len(new.derived) == 1
    mms = [n for n in new.nodes if n.op == "matmul"]
    assert mms[0].inputs[1] is mms[1].inputs[1]


def test_a_folded_value_can_be_a_graph_output():
    b = GraphBuilder("out")
    x = b.input("x", (3,))
    w = b.weight("w", (3,))
    b.output(b.exp(w), b.add(x, w))
    new = check_pass("fold-constants", b.build(), exact=True)
    assert new.outputs[0].kind == "weight" and len(new.derived) == 1


def test_broadcasts_that_would_blow_a_weight_up_are_not_folded():
    b = GraphBuilder("blowup")
    x = b.input("x", (4200, 1024))
    w = b.weight("w", (1024,))
    big = b.broadcast_to(w, shape=(4200, 1024))  # > 16 MiB from 4 KiB: keep per call
    small = b.broadcast_to(w, shape=(2, 1024))   # small: fold
    b.output(b.add(x, big), small)
    new = check_pass("fold-constants", b.build(), exact=True)
    assert [n.op for n in new.nodes].count("broadcast_to") == 1
    assert len(new.derived) == 1 and new.derived[0].output.shape == (2, 1024)


def test_a_computed_table_folds_at_any_size():
    # a bicubic resize of a small table (Hiera's position embedding) is computed, not
    # replicated: folding it beats recomputing it per call, however large it is
    b = GraphBuilder("resize")
    x = b.input("x", (1, 96, 256, 256))
    table = b.weight("pos", (1, 96, 7, 7))
    b.output(b.add(x, b.resize_bicubic(table, size=(256, 256))))
    new = check_pass("fold-constants", b.build(), exact=True)
    assert new.op_counts() == {"add": 1}
    assert len(new.derived) == 1 and new.derived[0].output.shape == (1, 96, 256, 256)


def test_nothing_to_fold_is_a_no_op():
    b = GraphBuilder("none")
    b.output(b.relu(b.input("x", (2,))))
    new = check_pass("fold-constants", b.build(), exact=True)
    assert not new.derived and new.op_counts() == {"relu": 1}


def test_folded_ops_with_absent_optional_operands_materialize():
    b = GraphBuilder("absent")
    x = b.input("x", (2, 4))
    table = b.weight("table", (3, 4))
    beta = b.weight("beta", (4,))
    normed = b.layer_norm(table, None, beta)          # weight-only, middle operand absent
    proj = b.linear(table, b.weight("p", (4, 4)))     # weight-only, no bias
    y = b.matmul(x, b.transpose(b.add(normed, proj), perm=(1, 0)))
    b.output(y)
    new = check_pass("fold-constants", b.build())
    ops = [n.op for n in new.derived]
    assert "layer_norm" in ops and "linear" in ops
    ln = new.derived[ops.index("layer_norm")]
    assert ln.inputs[1] is None
