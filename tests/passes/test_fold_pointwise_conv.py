"""fold-pointwise-conv: a 1x1 conv after a conv / transposed conv -> one conv, composed weights.

Checked by running the graph before and after on the reference interpreter
(with and without either bias, transposed convolutions of kernel == stride
and of overlapping kernels, plain convolutions with padding) and by the
structure: one convolution left when the composition is cheaper, the pair
kept when it is not or when the intermediate has another reader.
"""

from __future__ import annotations

import pytest

from rlx.ir import GraphBuilder
from tests.support.opcheck import check_pass


def _pair(inner, cin, cmid, cout, bias_inner=True, bias_outer=True, extra_reader=False,
          **attrs):
    b = GraphBuilder("pair")
    x = b.input("x", (2, cin, 5, 6))
    if inner == "conv_transpose2d":
        w = b.weight("wc", (cin, cmid, attrs.get("k", 2), attrs.get("k", 2)))
        t = b.conv_transpose2d(x, w, b.weight("bc", (cmid,)) if bias_inner else None,
                               stride=attrs.get("stride", 2))
    else:
        w = b.weight("wc", (cmid, cin, 3, 3))
        t = b.conv2d(x, w, b.weight("bc", (cmid,)) if bias_inner else None, padding=1)
    y = b.conv2d(t, b.weight("w1", (cout, cmid, 1, 1)),
                 b.weight("b1", (cout,)) if bias_outer else None)
    b.output(y)
    if extra_reader:
        b.output(t)
    return b.build()


@pytest.mark.parametrize("inner,attrs", [("conv_transpose2d", {}),
                                         ("conv_transpose2d", {"k": 3, "stride": 2}),
                                         ("conv2d", {})])
@pytest.mark.parametrize("bias_inner,bias_outer", [(True, True), (False, True), (True, False),
                                                   (False, False)])
def test_pair_becomes_one_convolution(inner, attrs, bias_inner, bias_outer):
    g = _pair(inner, 8, 6, 4, bias_inner, bias_outer, **attrs)
    new = check_pass("fold-pointwise-conv", g, rtol=1e-4, atol=1e-4)
    assert new.op_counts().get(inner) == 1
    assert new.op_counts().get("conv2d", 0) == (1 if inner == "conv2d" else 0)


def test_costlier_composition_is_left_alone():
    g = _pair("conv_transpose2d", 4, 2, 16)   # 4*16 > 4*2 + 2*16
    assert check_pass("fold-pointwise-conv", g, exact=True).op_counts() == g.op_counts()


def test_intermediate_read_elsewhere_is_left_alone():
    g = _pair("conv_transpose2d", 8, 6, 4, extra_reader=True)
    assert check_pass("fold-pointwise-conv", g, exact=True).op_counts() == g.op_counts()
