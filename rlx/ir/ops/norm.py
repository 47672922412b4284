"""Normalizations and reductions.

`layer_norm` normalizes over one axis: the last one (transformer LayerNorm) or
the channel axis of an NCHW tensor (SAM's LayerNorm2d). Its reference computes
statistics in float64 with the two-pass formula, i.e. the exact answer rounded
once.
"""

from __future__ import annotations

import numpy as np

from rlx.ir.ops.registry import Attr, define, fail, same_dtype
from rlx.ir.types import FLOAT_DTYPES, TensorType


def _axis(op, t, axis):
    if not -t.rank <= axis < t.rank:
        fail(op, f"axis {axis} out of range for rank {t.rank}", t)
    return axis % t.rank


def _norm_normalize(ins, attrs):
    out = dict(attrs)
    if ins and ins[0] is not None:
        out["axis"] = _axis("layer_norm", ins[0], attrs["axis"])
    return out


def _ln_infer(ins, attrs):
    x, w, b = ins
    if x.dtype not in FLOAT_DTYPES:
        fail("layer_norm", "needs a float input", x)
    same_dtype("layer_norm", x, w, b)
    n = x.shape[attrs["axis"]]
    for t, what in ((w, "weight"), (b, "bias")):
        if t is not None and t.shape != (n,):
            fail("layer_norm", f"{what} must be [{n}] (size of axis {attrs['axis']})", x, t)
    return [x]


def _ln_ref(ins, attrs):
    x, w, b = ins
    ax = attrs["axis"]
    if x.size == 0:
        return [x.copy()]
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=ax, keepdims=True)
    c = x64 - mean
    var = (c * c).mean(axis=ax, keepdims=True)
    y = c / np.sqrt(var + attrs["eps"])
    shape = [1] * x.ndim
    shape[ax] = x.shape[ax]
    if w is not None:
        y = y * w.reshape(shape)
    if b is not None:
        y = y + b.reshape(shape)
    return [y.astype(x.dtype)]


define("layer_norm", ["x", "weight?", "bias?"], {"axis": Attr("int", -1), "eps": Attr("float", 1e-5)},
       infer=_ln_infer, reference=_ln_ref, category="norm", normalize=_norm_normalize,
       flops=lambda i, o, a: 8 * o[0].numel,
       doc="normalize to zero mean / unit variance over one axis, then scale and shift")


def _softmax_normalize(ins, attrs):
    out = dict(attrs)
    if ins and ins[0] is not None:
        out["axis"] = _axis("softmax", ins[0], attrs["axis"])
    return out


def _softmax_ref(ins, attrs):
    (x,) = ins
    ax = attrs["axis"]
    if x.size == 0:  # nothing to normalize (np.max has no identity for an empty axis)
        return [x.copy()]
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(axis=ax, keepdims=True))
    return [(e / e.sum(axis=ax, keepdims=True)).astype(x.dtype)]


def _softmax_infer(ins, attrs):
    (x,) = ins
    if x.dtype not in FLOAT_DTYPES:
        fail("softmax", "needs a float input", x)
    return [x]


define("softmax", ["x"], {"axis": Attr("int", -1)}, infer=_softmax_infer,
       reference=_softmax_ref, category="norm", normalize=_softmax_normalize,
       flops=lambda i, o, a: 12 * o[0].numel, doc="softmax along one axis")


def _reduce_normalize(op):
    def normalize(ins, attrs):
        out = dict(attrs)
        if ins and ins[0] is not None:
            x = ins[0]
            axes = attrs["axes"] if attrs["axes"] is not None else tuple(range(x.rank))
            out["axes"] = tuple(sorted({_axis(op, x, a) for a in axes}))
        return out
    return normalize


def _reduce_infer(op):
    def infer(ins, attrs):
        (x,) = ins
        axes = attrs["axes"]
        if op == "reduce_max" and any(x.shape[a] == 0 for a in axes):
            fail(op, f"cannot take the max over an empty axis (axes {list(axes)})", x)
        if attrs["keepdims"]:
            shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
        else:
            shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
        return [TensorType(shape, x.dtype)]
    return infer


def _reducer(name, fn, combine, init):
    def reference(ins, attrs):
        (x,) = ins
        acc = x.astype(np.float64) if name != "reduce_max" else x
        return [np.asarray(fn(acc, axis=attrs["axes"], keepdims=attrs["keepdims"])).astype(x.dtype)]

    define(name, ["x"], {"axes": Attr("optional_ints", None), "keepdims": Attr("bool", False)},
           infer=_reduce_infer(name), reference=reference, category="reduction",
           normalize=_reduce_normalize(name), flops=lambda i, o, a: i[0].numel,
           doc=f"{name.split('_')[1]} over the given axes (all if none)",
           combine=combine, init=init)


_reducer("reduce_sum", np.sum, "add", 0.0)
_reducer("reduce_mean", np.mean, "add", 0.0)
_reducer("reduce_max", np.max, "max", float("-inf"))
