"""narrow-rows: rows cropped after a per-row matmul (+ bias) are never computed."""

from __future__ import annotations

from rlx.ir import GraphBuilder
from rlx.passes.registry import get_pass
from tests.support.opcheck import check_pass


def _live(g):
    return get_pass("dce")(g)


def _matmul_rows(g):
    return [n.inputs[0].shape[0] for n in g.nodes if n.op == "matmul"]


def test_window_unpartition_crop_moves_before_the_projection():
    # ViT window unpartition: [windows*tokens, C] -> [1, H+p, W+p, C] -> crop to [1, H, W, C]
    b = GraphBuilder("unpart")
    x = b.input("x", (4 * 9, 5))  # 2x2 windows of 3x3 tokens, 5 channels
    y = b.add(b.matmul(x, b.weight("w", (7, 5)), transpose_b=True), b.weight("bias", (7,)))
    t = b.transpose(b.reshape(y, shape=(1, 2, 2, 3, 3, 7)), perm=(0, 1, 3, 2, 4, 5))
    t = b.slice(b.reshape(t, shape=(1, 6, 6, 7)), starts=(0, 0, 0, 0), ends=(1, 5, 4, 7),
                steps=(1, 1, 1, 1))
    b.output(b.add(b.input("r", (1, 5, 4, 7)), t))
    new = _live(check_pass("narrow-rows", b.build()))
    assert _matmul_rows(new) == [20]  # 5 x 4 kept tokens, not 36
    assert [n.op for n in new.nodes][-3:] == ["reshape", "add", "add"]  # bias, then residual


def test_strided_and_stepped_slices_and_a_row_scale():
    b = GraphBuilder("steps")
    x = b.input("x", (2, 6, 8))
    y = b.mul(b.matmul(x, b.weight("w", (8, 3))), b.weight("s", (1, 1, 3)))
    y = b.slice(b.transpose(y, perm=(1, 0, 2)), starts=(1, 0, 0), ends=(6, 2, 3),
                steps=(2, 1, 1))
    b.output(y)
    new = _live(check_pass("narrow-rows", b.build(), exact=True))
    assert _matmul_rows(new) == [6]  # 3 of 6 positions x 2 batch rows


def test_no_rewrite_without_a_row_crop_or_with_a_shared_intermediate():
    b = GraphBuilder("keep")
    x = b.input("x", (6, 4))
    w = b.weight("w", (4, 3))
    y = b.matmul(x, w)
    b.output(b.transpose(b.reshape(y, shape=(2, 3, 3)), perm=(1, 0, 2)))  # no crop
    z = b.matmul(x, w)
    zs = b.slice(z, starts=(0, 0), ends=(3, 3), steps=(1, 1))
    b.output(zs, b.exp(z))  # z is used twice: all its rows are needed
    c = b.matmul(x, w)
    b.output(b.slice(c, starts=(0, 0), ends=(6, 2), steps=(1, 1)))  # crops columns only
    g = b.build()
    new = check_pass("narrow-rows", g, exact=True)
    assert new is g  # nothing to do: the pass returns its input
