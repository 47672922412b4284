"""Spatial ops on NCHW tensors: convolutions, pooling, im2col, bilinear resize.

Layouts follow PyTorch so that checkpoints load unchanged: conv2d weights are
[out, in/groups, kh, kw], conv_transpose2d weights are [in, out/groups, kh, kw].
`im2col` is the lower-level op the conv lowering produces; its layout
[N, C*kh*kw, OH*OW] lets the weight matrix [O, C*kh*kw] multiply it straight
into NCHW order.
"""

from __future__ import annotations

import numpy as np

from rlx.ir.ops.registry import Attr, define, fail, same_dtype
from rlx.ir.types import FLOAT_DTYPES, TensorType


def _pair(v):
    v = tuple(v) if isinstance(v, (tuple, list)) else (v,)
    return v * 2 if len(v) == 1 else v


#: smallest legal value of each spatial attribute (a zero stride would divide by zero)
_MINIMUM = {"kernel": 1, "stride": 1, "dilation": 1, "size": 1, "padding": 0,
            "output_padding": 0}


def _pairs(op, *names):
    def normalize(ins, attrs):
        out = dict(attrs)
        for n in names:
            if out.get(n) is not None:
                out[n] = tuple(int(x) for x in _pair(out[n]))
                if len(out[n]) != 2:
                    fail(op, f"{n} must have 1 or 2 values, got {list(out[n])}", *ins)
                if min(out[n]) < _MINIMUM[n]:
                    fail(op, f"{n} {list(out[n])} must be >= {_MINIMUM[n]}", *ins)
        return out
    return normalize


SPATIAL = {
    "stride": Attr("ints", (1, 1)),
    "padding": Attr("ints", (0, 0)),
    "dilation": Attr("ints", (1, 1)),
}


def conv_out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _check4(op, x):
    if x.rank != 4:
        fail(op, "expects an NCHW input of rank 4", x)


def _conv2d_infer(ins, attrs):
    x, w, b = ins
    _check4("conv2d", x)
    same_dtype("conv2d", x, w, b)
    if w.rank != 4:
        fail("conv2d", "weight must be [out, in/groups, kh, kw]", x, w)
    g = attrs["groups"]
    if g < 1:
        fail("conv2d", f"groups {g} must be positive", x, w)
    if x.shape[1] != w.shape[1] * g:
        fail("conv2d", f"input channels {x.shape[1]} != weight in-channels {w.shape[1]} x "
             f"groups {g}", x, w)
    if w.shape[0] % g:
        fail("conv2d", f"out channels {w.shape[0]} not divisible by groups {g}", w)
    if b is not None and b.shape != (w.shape[0],):
        fail("conv2d", f"bias must be [{w.shape[0]}]", w, b)
    (sh, sw), (ph, pw), (dh, dw) = attrs["stride"], attrs["padding"], attrs["dilation"]
    oh = conv_out_size(x.shape[2], w.shape[2], sh, ph, dh)
    ow = conv_out_size(x.shape[3], w.shape[3], sw, pw, dw)
    if oh <= 0 or ow <= 0:
        fail("conv2d", f"kernel {w.shape[2:]} does not fit the padded input", x, w)
    return [TensorType((x.shape[0], w.shape[0], oh, ow), x.dtype)]


def im2col_reference(x, kernel, stride, padding, dilation):
    """[N, C, H, W] -> [N, C*kh*kw, OH*OW] (column index = c*kh*kw + i*kw + j)."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    oh = conv_out_size(h, kh, sh, ph, dh)
    ow = conv_out_size(w, kw, sw, pw, dw)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
    s = xp.strides
    view = np.lib.stride_tricks.as_strided(
        xp, (n, c, kh, kw, oh, ow),
        (s[0], s[1], s[2] * dh, s[3] * dw, s[2] * sh, s[3] * sw), writeable=False)
    return view.reshape(n, c * kh * kw, oh * ow)


def _conv2d_ref(ins, attrs):
    x, w, b = ins
    g = attrs["groups"]
    o, cg, kh, kw = w.shape
    n = x.shape[0]
    outs = []
    for gi in range(g):
        xs = x[:, gi * cg:(gi + 1) * cg]
        cols = im2col_reference(xs, (kh, kw), attrs["stride"], attrs["padding"],
                                attrs["dilation"])
        wg = w[gi * (o // g):(gi + 1) * (o // g)].reshape(o // g, cg * kh * kw)
        outs.append(np.matmul(wg, cols))
    y = np.concatenate(outs, axis=1) if g > 1 else outs[0]
    (oh, ow) = _conv2d_infer([TensorType(x.shape), TensorType(w.shape), None], attrs)[0].shape[2:]
    y = y.reshape(n, o, oh, ow)
    if b is not None:
        y = y + b[None, :, None, None]
    return [y.astype(x.dtype, copy=False)]


def _conv2d_flops(ins, outs, attrs):
    w = ins[1]
    return 2 * outs[0].numel * w.shape[1] * w.shape[2] * w.shape[3]


define("conv2d", ["x", "weight", "bias?"], {**SPATIAL, "groups": Attr("int", 1)},
       infer=_conv2d_infer, reference=_conv2d_ref, category="conv", flops=_conv2d_flops,
       normalize=_pairs("conv2d", "stride", "padding", "dilation"),
       doc="2-D convolution, NCHW input, [out, in/groups, kh, kw] weight")


def _convt_out(size, k, s, p, d, op):
    return (size - 1) * s - 2 * p + d * (k - 1) + op + 1


def _convt_infer(ins, attrs):
    x, w, b = ins
    _check4("conv_transpose2d", x)
    same_dtype("conv_transpose2d", x, w, b)
    if w.rank != 4 or w.shape[0] != x.shape[1]:
        fail("conv_transpose2d", f"weight must be [in={x.shape[1]}, out/groups, kh, kw]", x, w)
    g = attrs["groups"]
    if g < 1:
        fail("conv_transpose2d", f"groups {g} must be positive", x, w)
    cout = w.shape[1] * g
    if x.shape[1] % g:
        fail("conv_transpose2d", f"in channels {x.shape[1]} not divisible by groups {g}", x)
    if b is not None and b.shape != (cout,):
        fail("conv_transpose2d", f"bias must be [{cout}]", w, b)
    (sh, sw), (ph, pw), (dh, dw) = attrs["stride"], attrs["padding"], attrs["dilation"]
    oph, opw = attrs["output_padding"]
    if oph >= max(sh, dh) or opw >= max(sw, dw):
        fail("conv_transpose2d", "output_padding must be smaller than stride or dilation", x)
    oh = _convt_out(x.shape[2], w.shape[2], sh, ph, dh, oph)
    ow = _convt_out(x.shape[3], w.shape[3], sw, pw, dw, opw)
    if oh <= 0 or ow <= 0:
        fail("conv_transpose2d", "padding removes the whole output", x, w)
    return [TensorType((x.shape[0], cout, oh, ow), x.dtype)]


def _convt_ref(ins, attrs):
    x, w, b = ins
    n, cin, h, wd = x.shape
    g = attrs["groups"]
    _, cog, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = attrs["stride"], attrs["padding"], attrs["dilation"]
    oph, opw = attrs["output_padding"]
    full_h = (h - 1) * sh + dh * (kh - 1) + 1 + oph
    full_w = (wd - 1) * sw + dw * (kw - 1) + 1 + opw
    # Accumulate in the input's precision (at least float32): float64 stays float64.
    acc = np.promote_types(np.result_type(x, w), np.float32)
    full = np.zeros((n, cog * g, full_h + ph, full_w + pw), dtype=acc)
    cig = cin // g
    xf = x.reshape(n, cin, h * wd)
    for gi in range(g):
        xg = xf[:, gi * cig:(gi + 1) * cig]
        for i in range(kh):
            for j in range(kw):
                tap = np.matmul(w[gi * cig:(gi + 1) * cig, :, i, j].T, xg).reshape(n, cog, h, wd)
                full[:, gi * cog:(gi + 1) * cog,
                     i * dh:i * dh + (h - 1) * sh + 1:sh,
                     j * dw:j * dw + (wd - 1) * sw + 1:sw] += tap
    oh, ow = _convt_infer([TensorType(x.shape), TensorType(w.shape), None], attrs)[0].shape[2:]
    y = full[:, :, ph:ph + oh, pw:pw + ow]
    if b is not None:
        y = y + b[None, :, None, None]
    return [np.ascontiguousarray(y, dtype=x.dtype)]


define("conv_transpose2d", ["x", "weight", "bias?"],
       {**SPATIAL, "output_padding": Attr("ints", (0, 0)), "groups": Attr("int", 1)},
       infer=_convt_infer, reference=_convt_ref, category="conv",
       flops=lambda i, o, a: 2 * i[0].numel * i[1].shape[1] * i[1].shape[2] * i[1].shape[3],
       normalize=_pairs("conv_transpose2d", "stride", "padding", "dilation", "output_padding"),
       doc="2-D transposed convolution (PyTorch semantics), [in, out/groups, kh, kw] weight")


def _im2col_infer(ins, attrs):
    (x,) = ins
    _check4("im2col", x)
    kh, kw = attrs["kernel"]
    (sh, sw), (ph, pw), (dh, dw) = attrs["stride"], attrs["padding"], attrs["dilation"]
    oh = conv_out_size(x.shape[2], kh, sh, ph, dh)
    ow = conv_out_size(x.shape[3], kw, sw, pw, dw)
    if oh <= 0 or ow <= 0:
        fail("im2col", f"kernel {(kh, kw)} does not fit the padded input", x)
    return [TensorType((x.shape[0], x.shape[1] * kh * kw, oh * ow), x.dtype)]


define("im2col", ["x"], {"kernel": Attr("ints"), **SPATIAL},
       infer=_im2col_infer,
       reference=lambda ins, a: [np.ascontiguousarray(im2col_reference(
           ins[0], a["kernel"], a["stride"], a["padding"], a["dilation"]))],
       category="movement", flops=lambda i, o, a: 0,
       normalize=_pairs("im2col", "kernel", "stride", "padding", "dilation"),
       doc="unfold sliding kh x kw patches: [N,C,H,W] -> [N, C*kh*kw, OH*OW]")


def _pool_infer(ins, attrs):
    (x,) = ins
    _check4("max_pool2d", x)
    kh, kw = attrs["kernel"]
    sh, sw = attrs["stride"] or attrs["kernel"]
    ph, pw = attrs["padding"]
    if ph * 2 > kh or pw * 2 > kw:
        fail("max_pool2d", "padding must be at most half the kernel", x)
    oh = conv_out_size(x.shape[2], kh, sh, ph, 1)
    ow = conv_out_size(x.shape[3], kw, sw, pw, 1)
    if oh <= 0 or ow <= 0:
        fail("max_pool2d", f"kernel {(kh, kw)} larger than the padded input", x)
    return [TensorType(x.shape[:2] + (oh, ow), x.dtype)]


def _pool_normalize(ins, attrs):
    attrs = _pairs("max_pool2d", "kernel", "stride", "padding")(ins, attrs)
    if attrs["stride"] is None:
        attrs["stride"] = attrs["kernel"]
    return attrs


def _pool_ref(ins, attrs):
    (x,) = ins
    kh, kw = attrs["kernel"]
    sh, sw = attrs["stride"]
    ph, pw = attrs["padding"]
    lowest = -np.inf if x.dtype.kind == "f" else (
        np.iinfo(x.dtype).min if x.dtype.kind in "iu" else False)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=lowest) \
        if ph or pw else x
    oh, ow = _pool_infer([TensorType(x.shape, "f32")], attrs)[0].shape[2:]
    s = xp.strides
    view = np.lib.stride_tricks.as_strided(
        xp, x.shape[:2] + (oh, ow, kh, kw), (s[0], s[1], s[2] * sh, s[3] * sw, s[2], s[3]),
        writeable=False)
    return [view.max(axis=(4, 5)).astype(x.dtype)]


define("max_pool2d", ["x"], {"kernel": Attr("ints"), "stride": Attr("optional_ints", None),
                             "padding": Attr("ints", (0, 0))},
       infer=_pool_infer, reference=_pool_ref, category="pool", normalize=_pool_normalize,
       flops=lambda i, o, a: o[0].numel * a["kernel"][0] * a["kernel"][1],
       doc="2-D max pooling (padding counts as -inf)")


def bilinear_matrix(in_size: int, out_size: int, align_corners: bool) -> np.ndarray:
    """[out, in] interpolation matrix with PyTorch's bilinear source-index rule."""
    m = np.zeros((out_size, in_size), dtype=np.float64)
    if align_corners:
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        src = np.arange(out_size) * scale
    else:
        scale = in_size / out_size
        src = np.maximum((np.arange(out_size) + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    frac = src - i0
    rows = np.arange(out_size)
    np.add.at(m, (rows, i0), 1.0 - frac)
    np.add.at(m, (rows, i1), frac)
    return m


def _resize_infer(ins, attrs):
    (x,) = ins
    _check4("resize_bilinear", x)
    h, w = attrs["size"]
    if h <= 0 or w <= 0:
        fail("resize_bilinear", f"target size {attrs['size']} must be positive", x)
    return [TensorType(x.shape[:2] + (h, w), x.dtype)]


def _resize_ref(ins, attrs):
    (x,) = ins
    h, w = attrs["size"]
    acc = np.promote_types(x.dtype, np.float32)  # float64 input keeps float64 weights
    mh = bilinear_matrix(x.shape[2], h, attrs["align_corners"]).astype(acc)
    mw = bilinear_matrix(x.shape[3], w, attrs["align_corners"]).astype(acc)
    y = np.matmul(np.matmul(mh, x), mw.T)
    return [y.astype(x.dtype, copy=False)]


define("resize_bilinear", ["x"], {"size": Attr("ints"), "align_corners": Attr("bool", False)},
       infer=_resize_infer, reference=_resize_ref, category="resize",
       normalize=_pairs("resize_bilinear", "size"),
       flops=lambda i, o, a: 4 * o[0].numel,
       doc="bilinear resize of the last two dims (PyTorch interpolate, no antialias)")


#: the cubic convolution constant PyTorch (and OpenCV) use for bicubic resizing
CUBIC_A = -0.75


def bicubic_matrix(in_size: int, out_size: int, align_corners: bool) -> np.ndarray:
    """[out, in] interpolation matrix with PyTorch's bicubic rule (A = -0.75).

    Source index as torch's ``area_pixel_compute_source_index`` for cubic
    modes (not clamped at 0); the four taps around it read clamped indices,
    so border taps pile their weight on the edge pixel.
    """
    if align_corners:
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        src = np.arange(out_size) * scale
    else:
        src = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
    base = np.floor(src)
    t = src - base
    a = CUBIC_A

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    taps = (far(t + 1), near(t), near(1 - t), far(2 - t))
    m = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.arange(out_size)
    for k, w in enumerate(taps):
        idx = np.clip(base.astype(np.int64) - 1 + k, 0, in_size - 1)
        np.add.at(m, (rows, idx), w)
    return m


def _bicubic_ref(ins, attrs):
    (x,) = ins
    h, w = attrs["size"]
    acc = np.promote_types(x.dtype, np.float32)
    mh = bicubic_matrix(x.shape[2], h, attrs["align_corners"])
    mw = bicubic_matrix(x.shape[3], w, attrs["align_corners"])
    y = np.matmul(np.matmul(mh, x.astype(np.float64)), mw.T)
    return [y.astype(acc).astype(x.dtype, copy=False)]


def _bicubic_infer(ins, attrs):
    (x,) = ins
    _check4("resize_bicubic", x)
    if x.dtype not in FLOAT_DTYPES:
        fail("resize_bicubic", "expects a float tensor", x)
    h, w = attrs["size"]
    if h <= 0 or w <= 0:
        fail("resize_bicubic", f"target size {attrs['size']} must be positive", x)
    return [TensorType(x.shape[:2] + (h, w), x.dtype)]


define("resize_bicubic", ["x"], {"size": Attr("ints"), "align_corners": Attr("bool", False)},
       infer=_bicubic_infer, reference=_bicubic_ref, category="resize",
       normalize=_pairs("resize_bicubic", "size"),
       flops=lambda i, o, a: 8 * o[0].numel,
       doc="bicubic resize of the last two dims (PyTorch interpolate, A=-0.75, no antialias); "
           "typically weight-only (position tables) and folded at bind time")
