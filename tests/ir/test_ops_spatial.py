"""Spatial ops (NCHW) against torch: conv2d, conv_transpose2d, im2col (unfold),
max_pool2d, bilinear resize (F.interpolate). torch runs in float64 on the same
float32 values, so the tolerance only covers rlx's float32 accumulation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.support.opcheck import assert_close, covers, rand, run_op

RNG = np.random.default_rng(7)


def _t(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


CONV_CASES = [
    # (x shape, w shape, bias, stride, padding, dilation, groups)
    ((1, 3, 8, 8), (5, 3, 3, 3), True, 1, 1, 1, 1),
    ((2, 3, 9, 7), (4, 3, 3, 3), False, 2, 0, 1, 1),          # odd sizes, stride 2
    ((1, 4, 11, 10), (6, 2, 3, 2), True, (2, 1), (1, 0), (1, 2), 2),  # everything asymmetric
    ((1, 6, 7, 7), (6, 1, 3, 3), True, 1, 1, 1, 6),            # depthwise
    ((1, 3, 5, 6), (8, 3, 1, 1), True, 1, 0, 1, 1),            # 1x1
    ((1, 3, 16, 16), (8, 3, 4, 4), True, 4, 0, 1, 1),          # patch embedding k == s
    ((1, 2, 9, 9), (3, 2, 3, 3), True, 3, 2, 2, 1),            # dilation + padding + stride
    ((1, 1, 1, 1), (2, 1, 1, 1), False, 1, 0, 1, 1),           # size-1 everything
    ((1, 2, 3, 3), (2, 2, 3, 3), True, 1, 0, 1, 1),            # output 1x1
    ((1, 2, 2, 2), (2, 2, 3, 3), False, 1, 1, 1, 1),           # kernel larger than input
]


@covers("conv2d")
@pytest.mark.parametrize("xs,ws,bias,stride,padding,dilation,groups", CONV_CASES)
def test_conv2d_matches_torch(xs, ws, bias, stride, padding, dilation, groups):
    x = rand(RNG, xs)
    w = rand(RNG, ws, scale=0.5)
    b = rand(RNG, (ws[0],)) if bias else None
    got = run_op("conv2d", x, w, b, stride=stride, padding=padding, dilation=dilation,
                 groups=groups)
    want = F.conv2d(_t(x), _t(w), None if b is None else _t(b), stride=stride,
                    padding=padding, dilation=dilation, groups=groups).numpy()
    assert_close(got, want, rtol=1e-5, atol=1e-5)


CONVT_CASES = [
    # (x shape, w shape, bias, stride, padding, output_padding, dilation, groups)
    ((1, 4, 5, 5), (4, 3, 2, 2), True, 2, 0, 0, 1, 1),         # k == s (SAM upscaling)
    ((1, 4, 5, 6), (4, 3, 3, 3), True, 2, 0, 0, 1, 1),         # stride != kernel (overlap)
    ((2, 3, 4, 3), (3, 2, 3, 3), False, 2, 1, 1, 1, 1),        # padding + output_padding
    ((1, 4, 3, 5), (4, 3, 3, 2), True, (2, 3), (1, 0), (1, 0), 1, 2),  # groups, asymmetric
    ((1, 2, 4, 4), (2, 2, 3, 3), True, 1, 1, 0, 2, 1),         # dilation
    ((1, 2, 3, 3), (2, 2, 3, 3), False, 3, 2, 2, 2, 1),        # output_padding < dilation
    ((1, 3, 1, 1), (3, 5, 1, 1), True, 1, 0, 0, 1, 1),         # size-1
    ((1, 6, 4, 4), (6, 1, 3, 3), True, 2, 1, 1, 1, 6),         # depthwise
]


@covers("conv_transpose2d")
@pytest.mark.parametrize("xs,ws,bias,stride,padding,output_padding,dilation,groups",
                         CONVT_CASES)
def test_conv_transpose2d_matches_torch(xs, ws, bias, stride, padding, output_padding,
                                        dilation, groups):
    x = rand(RNG, xs)
    w = rand(RNG, ws, scale=0.5)
    cout = ws[1] * groups
    b = rand(RNG, (cout,)) if bias else None
    got = run_op("conv_transpose2d", x, w, b, stride=stride, padding=padding,
                 output_padding=output_padding, dilation=dilation, groups=groups)
    want = F.conv_transpose2d(_t(x), _t(w), None if b is None else _t(b), stride=stride,
                              padding=padding, output_padding=output_padding,
                              dilation=dilation, groups=groups).numpy()
    assert_close(got, want, rtol=1e-5, atol=1e-5)


@covers("conv_transpose2d")
def test_conv_transpose2d_in_float64_keeps_float64_precision():
    x = rand(RNG, (1, 2, 3, 3), np.float64)
    w = rand(RNG, (2, 2, 3, 3), np.float64)
    got = run_op("conv_transpose2d", x, w, None, stride=2)
    want = F.conv_transpose2d(_t(x), _t(w), stride=2).numpy()
    assert_close(got, want, rtol=1e-12, atol=1e-12)


@covers("im2col")
@pytest.mark.parametrize("xs,kernel,stride,padding,dilation", [
    ((1, 2, 6, 5), (3, 2), 2, 1, (1, 2)),
    ((2, 3, 4, 4), (1, 1), 1, 0, 1),
    ((1, 1, 7, 3), (3, 3), (2, 1), (0, 1), 1),
])
def test_im2col_matches_torch_unfold(xs, kernel, stride, padding, dilation):
    x = rand(RNG, xs)
    got = run_op("im2col", x, kernel=kernel, stride=stride, padding=padding, dilation=dilation)
    want = F.unfold(_t(x), kernel, dilation=dilation, padding=padding, stride=stride).numpy()
    assert_close(got, want, rtol=0, atol=0)


POOL_CASES = [
    # (x shape, kernel, stride, padding)
    ((1, 2, 8, 8), 2, None, 0),          # SAM3 0.5x branch
    ((1, 3, 7, 9), 3, 2, 1),             # overlapping, padded, odd sizes
    ((2, 1, 5, 6), (2, 3), (1, 2), (1, 1)),
    ((1, 1, 1, 1), 1, None, 0),
    ((1, 2, 3, 3), 3, 1, 1),             # padding == kernel // 2
]


@covers("max_pool2d")
@pytest.mark.parametrize("xs,kernel,stride,padding", POOL_CASES)
def test_max_pool2d_matches_torch(xs, kernel, stride, padding):
    # all-negative input: zero padding instead of -inf padding would show
    x = -np.abs(rand(RNG, xs)) - 0.1
    attrs = {"kernel": kernel, "padding": padding}
    if stride is not None:
        attrs["stride"] = stride
    got = run_op("max_pool2d", x.astype(np.float32), **attrs)
    want = F.max_pool2d(_t(x.astype(np.float32)), kernel, stride=stride, padding=padding).numpy()
    assert_close(got, want, rtol=0, atol=0)


RESIZE_CASES = [
    ((1, 2, 4, 5), (8, 10)),     # 2x up
    ((1, 1, 6, 9), (3, 4)),      # down, non-integer factor
    ((2, 3, 5, 7), (11, 3)),     # up in H, down in W
    ((1, 1, 1, 1), (3, 2)),      # from a single pixel
    ((1, 1, 4, 4), (1, 1)),      # to a single pixel
    ((1, 2, 64, 64), (256, 256)),  # SAM mask upscale factor
    ((1, 1, 5, 5), (5, 5)),      # identity size
]


@covers("resize_bilinear")
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("xs,size", RESIZE_CASES)
def test_resize_bilinear_matches_interpolate(xs, size, align_corners):
    x = rand(RNG, xs)
    got = run_op("resize_bilinear", x, size=size, align_corners=align_corners)
    want = F.interpolate(_t(x), size=size, mode="bilinear",
                         align_corners=align_corners).numpy()
    assert_close(got, want, rtol=1e-5, atol=1e-5)


@covers("resize_bilinear")
def test_resize_bilinear_in_float64_keeps_float64_precision():
    x = rand(RNG, (1, 1, 5, 7), np.float64)
    got = run_op("resize_bilinear", x, size=(9, 4))
    want = F.interpolate(_t(x), size=(9, 4), mode="bilinear", align_corners=False).numpy()
    assert_close(got, want, rtol=1e-12, atol=1e-12)


BICUBIC_CASES = [
    ((1, 3, 7, 7), (64, 64)),    # Hiera's position table to the patch grid (7x7 -> S/4)
    ((1, 2, 14, 14), (256, 256)),
    ((1, 1, 6, 9), (3, 4)),      # down, non-integer factor: taps clamp at both edges
    ((2, 3, 5, 7), (11, 3)),     # up in H, down in W
    ((1, 1, 1, 1), (3, 2)),      # from a single pixel
    ((1, 1, 5, 5), (5, 5)),      # identity size
]


@covers("resize_bicubic")
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("xs,size", BICUBIC_CASES)
def test_resize_bicubic_matches_interpolate(xs, size, align_corners):
    # float64 on both sides: the two must agree to rounding, so any wrong tap weight,
    # source index or edge clamp shows
    x = rand(RNG, xs).astype(np.float64)
    got = run_op("resize_bicubic", x, size=size, align_corners=align_corners)
    want = F.interpolate(_t(x), size=size, mode="bicubic", align_corners=align_corners).numpy()
    assert got.dtype == np.float64
    assert_close(got, want, rtol=1e-12, atol=1e-12)
    got32 = run_op("resize_bicubic", x.astype(np.float32), size=size, align_corners=align_corners)
    assert got32.dtype == np.float32
    assert_close(got32, want, rtol=1e-5, atol=1e-5)


@covers("max_pool2d")
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_max_pool2d_pads_integers_with_their_minimum(dtype):
    x = RNG.integers(-50, -1, (1, 2, 5, 5)).astype(dtype)
    got = run_op("max_pool2d", x, kernel=3, stride=2, padding=1)
    want = F.max_pool2d(torch.from_numpy(x.astype(np.float64)), 3, 2, 1).numpy()
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want.astype(dtype))
