"""lower-conv-transpose: conv_transpose2d with kernel == stride -> matmul + depth-to-space."""

from __future__ import annotations

import pytest

from rlx.ir import GraphBuilder
from tests.support.opcheck import check_pass


def _convt(xs, ws, bias=True, **attrs):
    b = GraphBuilder("convt")
    x = b.input("x", xs)
    w = b.weight("w", ws)
    bb = b.weight("b", (ws[1] * attrs.get("groups", 1),)) if bias else None
    b.output(b.conv_transpose2d(x, w, bb, **attrs))
    return b.build()


@pytest.mark.parametrize("xs,ws,bias,stride", [
    ((1, 4, 5, 6), (4, 3, 2, 2), True, 2),     # SAM mask upscaling shape
    ((2, 3, 3, 3), (3, 2, 4, 4), False, 4),    # SAM3 4x branch
    ((1, 2, 3, 4), (2, 5, 2, 3), True, (2, 3)),  # rectangular kernel
    ((1, 2, 1, 1), (2, 2, 1, 1), True, 1),     # 1x1 stride 1
])
def test_kernel_equal_stride_becomes_matmul_and_depth_to_space(xs, ws, bias, stride):
    new = check_pass("lower-conv-transpose", _convt(xs, ws, bias, stride=stride))
    counts = new.op_counts()
    assert "conv_transpose2d" not in counts
    assert counts["matmul"] == 1 and counts["transpose"] == 2  # weight + depth-to-space
    assert counts.get("add", 0) == (1 if bias else 0)


@pytest.mark.parametrize("ws,attrs", [
    ((4, 3, 3, 3), {"stride": 2}),                        # overlapping windows
    ((4, 3, 2, 2), {"stride": 2, "padding": 1}),
    ((4, 3, 2, 2), {"stride": 2, "output_padding": 1}),
    ((4, 3, 2, 2), {"stride": 2, "dilation": 2, "output_padding": 1}),
    ((4, 1, 2, 2), {"stride": 2, "groups": 2}),
])
def test_other_transposed_convolutions_are_left_alone(ws, attrs):
    new = check_pass("lower-conv-transpose", _convt((1, 4, 3, 3), ws, **attrs), exact=True)
    assert new.op_counts() == {"conv_transpose2d": 1}


def test_bias_is_added_to_the_gemm_rows_before_the_depth_to_space():
    """The bias goes on the product's rows (o, i, j), so GEMM fusion makes it the epilogue
    and the depth-to-space is a plain copy (no separate bias pass over the scattered output)."""
    new = check_pass("lower-conv-transpose", _convt((1, 4, 5, 6), (4, 3, 2, 2), True, stride=2))
    add = next(n for n in new.nodes if n.op == "add")
    assert {v.producer.op for v in add.inputs if v.producer is not None} >= {"matmul"}
    assert add.output.shape == (1, 3 * 2 * 2, 5 * 6)  # [N, Cout*kh*kw, H*W]: before the scatter
    from rlx.passes import PassOptions, get_pass
    fused = get_pass("fuse")(get_pass("fold-constants")(new, PassOptions()), PassOptions())
    assert "add" not in fused.op_counts()  # absorbed as the GEMM's epilogue
