"""lower-conv: conv2d -> patch matrix (reshape / reshape+transpose / im2col) + matmul + bias."""

from __future__ import annotations

import pytest

from rlx.ir import GraphBuilder
from tests.support.opcheck import check_pass


def _conv(xs, ws, bias=True, **attrs):
    b = GraphBuilder("conv")
    x = b.input("x", xs)
    w = b.weight("w", ws)
    bb = b.weight("b", (ws[0],)) if bias else None
    b.output(b.conv2d(x, w, bb, **attrs))
    return b.build()


@pytest.mark.parametrize("xs,ws,bias,attrs,patch_ops", [
    # 1x1: the input itself, reshaped -- no im2col, no transpose
    ((2, 4, 5, 6), (3, 4, 1, 1), True, {}, set()),
    # kernel == stride (ViT patch embedding): reshape + transpose, no im2col
    ((1, 3, 8, 12), (5, 3, 4, 4), True, {"stride": 4}, {"transpose"}),
    # general: im2col (padding, stride, dilation, odd sizes)
    ((1, 3, 9, 7), (4, 3, 3, 3), False, {"stride": 2, "padding": 1, "dilation": (1, 2)},
     {"im2col"}),
    # kernel == stride but the size is not a multiple: the patch shortcut does not apply
    ((1, 2, 9, 9), (3, 2, 2, 2), True, {"stride": 2}, {"im2col"}),
    # 1x1 with stride: neither shortcut applies
    ((1, 2, 5, 5), (3, 2, 1, 1), True, {"stride": 2}, {"im2col"}),
])
def test_lower_conv_forms(xs, ws, bias, attrs, patch_ops):
    new = check_pass("lower-conv", _conv(xs, ws, bias, **attrs))
    counts = new.op_counts()
    assert "conv2d" not in counts
    assert counts["matmul"] == 1
    assert counts.get("add", 0) == (1 if bias else 0)
    assert {op for op in ("im2col", "transpose") if op in counts} == patch_ops


def test_lower_conv_leaves_grouped_convolutions_to_the_backend():
    g = _conv((1, 4, 6, 6), (6, 2, 3, 3), groups=2, padding=1)
    new = check_pass("lower-conv", g, exact=True)
    assert new.op_counts() == {"conv2d": 1}
