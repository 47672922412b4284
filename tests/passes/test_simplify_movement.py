"""simplify-movement: reshape/transpose chains collapse, identities disappear."""

from __future__ import annotations

from rlx.ir import GraphBuilder
from rlx.passes.registry import get_pass
from tests.support.opcheck import check_pass


def _live(g):
    return get_pass("dce")(g).op_counts()


def test_reshape_chain_becomes_one_reshape():
    b = GraphBuilder("rr")
    x = b.input("x", (2, 3, 4))
    y = b.reshape(b.reshape(b.reshape(x, shape=(6, 4)), shape=(24,)), shape=(4, 6))
    b.output(b.neg(y))
    new = check_pass("simplify-movement", b.build(), exact=True)
    neg = next(n for n in new.nodes if n.op == "neg")
    assert neg.inputs[0].producer.op == "reshape"
    assert neg.inputs[0].producer.inputs[0] is new.inputs[0]
    assert _live(new) == {"reshape": 1, "neg": 1}


def test_reshape_back_to_the_same_shape_disappears():
    b = GraphBuilder("rid")
    x = b.input("x", (2, 3))
    b.output(b.neg(b.reshape(b.reshape(x, shape=(3, 2)), shape=(2, 3))))
    new = check_pass("simplify-movement", b.build(), exact=True)
    assert _live(new) == {"neg": 1}


def test_transpose_chains_compose_and_inverse_pairs_cancel():
    b = GraphBuilder("tt")
    x = b.input("x", (2, 3, 4))
    t = b.transpose(b.transpose(x, perm=(1, 2, 0)), perm=(0, 2, 1))   # composes to one
    u = b.transpose(b.transpose(x, perm=(2, 0, 1)), perm=(1, 2, 0))   # inverse: identity
    b.output(b.neg(t), b.neg(u))
    new = check_pass("simplify-movement", b.build(), exact=True)
    assert _live(new) == {"transpose": 1, "neg": 2}
    assert new.outputs[1].producer.inputs[0] is new.inputs[0]


def test_transpose_of_unit_axes_is_a_reshape():
    b = GraphBuilder("unit")
    x = b.input("x", (1, 5, 1, 3))
    b.output(b.exp(b.transpose(x, perm=(2, 1, 0, 3))))
    new = check_pass("simplify-movement", b.build(), exact=True)
    assert _live(new) == {"reshape": 1, "exp": 1}


def test_real_transposes_stay():
    b = GraphBuilder("keep")
    x = b.input("x", (2, 3))
    b.output(b.transpose(x, perm=(1, 0)))
    new = check_pass("simplify-movement", b.build(), exact=True)
    assert _live(new) == {"transpose": 1}
