"""Data movement: reshape, transpose, pad, slice, concat, broadcast, windows, arange.

(`gather` has its own module, `rlx.ir.ops.gather`.)

These ops compute nothing; passes try to fold them into the indexing of their
consumers. Attributes are stored in canonical full-rank form (reshape has no
-1, slice has starts/ends/steps for every dim, pad has a (before, after) pair
per dim) so that two equal ops print identically and CSE can see they are equal.
"""

from __future__ import annotations

import math

import numpy as np

from rlx.ir.ops.registry import Attr, define, fail
from rlx.ir.types import TensorType


def contiguous(a) -> np.ndarray:
    """C-contiguous array of the same rank (np.ascontiguousarray turns 0-d into shape (1,))."""
    return np.ascontiguousarray(a) if np.ndim(a) else np.array(a)


def _reshape_normalize(ins, attrs):
    x = ins[0]
    shape = list(attrs["shape"])
    if x is None:
        return attrs
    if shape.count(-1) > 1:
        fail("reshape", f"at most one -1 in {shape}", x)
    if -1 in shape:
        known = math.prod(d for d in shape if d != -1)
        if known == 0 or x.numel % known:
            fail("reshape", f"cannot infer -1 in {shape} for {x.numel} elements", x)
        shape[shape.index(-1)] = x.numel // known
    return {**attrs, "shape": tuple(shape)}


def _reshape_infer(ins, attrs):
    (x,) = ins
    if math.prod(attrs["shape"]) != x.numel:
        fail("reshape", f"target {list(attrs['shape'])} has {math.prod(attrs['shape'])} "
             f"elements, input has {x.numel}", x)
    return [x.with_shape(attrs["shape"])]


define("reshape", ["x"], {"shape": Attr("ints")}, infer=_reshape_infer,
       reference=lambda ins, a: [ins[0].reshape(a["shape"])], category="movement",
       normalize=_reshape_normalize, flops=lambda i, o, a: 0,
       doc="same elements in row-major order, new shape (one -1 allowed when building)")


def _transpose_normalize(ins, attrs):
    x = ins[0]
    if x is None:
        return attrs
    perm = tuple(p % x.rank if -x.rank <= p < x.rank else p for p in attrs["perm"])
    return {**attrs, "perm": perm}


def _transpose_infer(ins, attrs):
    (x,) = ins
    perm = attrs["perm"]
    if sorted(perm) != list(range(x.rank)):
        fail("transpose", f"perm {list(perm)} is not a permutation of {x.rank} axes", x)
    return [x.with_shape(tuple(x.shape[p] for p in perm))]


define("transpose", ["x"], {"perm": Attr("ints")}, infer=_transpose_infer,
       reference=lambda ins, a: [contiguous(np.transpose(ins[0], a["perm"]))],
       category="movement", normalize=_transpose_normalize, flops=lambda i, o, a: 0,
       doc="permute axes: out.shape[i] = x.shape[perm[i]]")


def _pad_infer(ins, attrs):
    (x,) = ins
    pads = attrs["pads"]
    if len(pads) != 2 * x.rank:
        fail("pad", f"pads needs 2 values per dim ({2 * x.rank}), got {len(pads)}", x)
    if any(p < 0 for p in pads):
        fail("pad", f"negative padding {list(pads)} (use slice)", x)
    return [x.with_shape(tuple(d + pads[2 * i] + pads[2 * i + 1] for i, d in enumerate(x.shape)))]


def _pad_ref(ins, attrs):
    (x,) = ins
    p = attrs["pads"]
    width = [(p[2 * i], p[2 * i + 1]) for i in range(x.ndim)]
    return [np.pad(x, width, constant_values=attrs["value"])]


define("pad", ["x"], {"pads": Attr("ints"), "value": Attr("float", 0.0)}, infer=_pad_infer,
       reference=_pad_ref, category="movement", flops=lambda i, o, a: 0,
       doc="constant padding; pads = (before_0, after_0, before_1, after_1, ...)")


def _slice_normalize(ins, attrs):
    x = ins[0]
    if x is None:
        return attrs
    r = x.rank
    starts = list(attrs["starts"] if attrs["starts"] is not None else [0] * r)
    ends = list(attrs["ends"] if attrs["ends"] is not None else list(x.shape))
    steps = list(attrs["steps"] if attrs["steps"] is not None else [1] * r)
    if not len(starts) == len(ends) == len(steps) == r:
        fail("slice", f"starts/ends/steps need {r} values each", x)
    for i, d in enumerate(x.shape):
        if steps[i] <= 0:
            fail("slice", f"step {steps[i]} on axis {i} must be positive", x)
        s, e, _ = slice(starts[i], ends[i], steps[i]).indices(d)
        starts[i], ends[i] = s, max(e, s)
    return {"starts": tuple(starts), "ends": tuple(ends), "steps": tuple(steps)}


def _slice_infer(ins, attrs):
    (x,) = ins
    shape = tuple(len(range(s, e, st)) for s, e, st in
                  zip(attrs["starts"], attrs["ends"], attrs["steps"]))
    return [x.with_shape(shape)]


def _slice_ref(ins, attrs):
    (x,) = ins
    idx = tuple(slice(s, e, st) for s, e, st in zip(attrs["starts"], attrs["ends"], attrs["steps"]))
    return [contiguous(x[idx])]


define("slice", ["x"], {"starts": Attr("optional_ints", None), "ends": Attr("optional_ints", None),
                        "steps": Attr("optional_ints", None)},
       infer=_slice_infer, reference=_slice_ref, category="movement",
       normalize=_slice_normalize, flops=lambda i, o, a: 0,
       doc="strided sub-block, python slice semantics per dim (positive steps)")


def _concat_normalize(ins, attrs):
    if ins and ins[0] is not None:
        r = ins[0].rank
        if not -r <= attrs["axis"] < r:
            fail("concat", f"axis {attrs['axis']} out of range for rank {r}", ins[0])
        return {**attrs, "axis": attrs["axis"] % r}
    return attrs


def _concat_infer(ins, attrs):
    if not ins:
        fail("concat", "needs at least one input")
    ax = attrs["axis"]
    first = ins[0]
    for t in ins[1:]:
        if t.rank != first.rank or t.dtype != first.dtype or any(
                a != b for i, (a, b) in enumerate(zip(t.shape, first.shape)) if i != ax):
            fail("concat", f"inputs differ outside axis {ax}", *ins)
    return [first.with_shape(first.shape[:ax] + (sum(t.shape[ax] for t in ins),)
                             + first.shape[ax + 1:])]


define("concat", ["xs*"], {"axis": Attr("int")}, infer=_concat_infer,
       reference=lambda ins, a: [np.concatenate(ins, axis=a["axis"])], category="movement",
       normalize=_concat_normalize, flops=lambda i, o, a: 0,
       doc="join tensors along an axis")


def _bcast_infer(ins, attrs):
    (x,) = ins
    shape = attrs["shape"]
    if len(shape) < x.rank or any(
            d != 1 and d != s for d, s in zip(x.shape, shape[len(shape) - x.rank:])):
        fail("broadcast_to", f"cannot broadcast to {list(shape)}", x)
    return [x.with_shape(shape)]


define("broadcast_to", ["x"], {"shape": Attr("ints")}, infer=_bcast_infer,
       reference=lambda ins, a: [contiguous(np.broadcast_to(ins[0], a["shape"]))],
       category="movement", flops=lambda i, o, a: 0, doc="numpy broadcast to a shape")


def _win_pad(h, w, ws):
    return (ws - h % ws) % ws, (ws - w % ws) % ws


def _wp_infer(ins, attrs):
    (x,) = ins
    if x.rank != 4:
        fail("window_partition", "expects [B, H, W, C]", x)
    ws = attrs["window"]
    if ws <= 0:
        fail("window_partition", f"window {ws} must be positive", x)
    b, h, w, c = x.shape
    ph, pw = _win_pad(h, w, ws)
    n = ((h + ph) // ws) * ((w + pw) // ws)
    return [x.with_shape((b * n, ws, ws, c))]


def window_partition_reference(x, ws):
    b, h, w, c = x.shape
    ph, pw = _win_pad(h, w, ws)
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)))
    hp, wp = h + ph, w + pw
    x = x.reshape(b, hp // ws, ws, wp // ws, ws, c).transpose(0, 1, 3, 2, 4, 5)
    return np.ascontiguousarray(x).reshape(-1, ws, ws, c)


define("window_partition", ["x"], {"window": Attr("int")}, infer=_wp_infer,
       reference=lambda ins, a: [window_partition_reference(ins[0], a["window"])],
       category="movement", flops=lambda i, o, a: 0,
       doc="[B,H,W,C] -> [B*nWin, ws, ws, C], zero-padding H and W up to multiples of ws")


def _wu_infer(ins, attrs):
    (x,) = ins
    ws, h, w = attrs["window"], attrs["height"], attrs["width"]
    if ws <= 0 or h <= 0 or w <= 0:
        fail("window_unpartition", f"window {ws}, height {h} and width {w} must be positive", x)
    if x.rank != 4 or x.shape[1] != ws or x.shape[2] != ws:
        fail("window_unpartition", f"expects [B*nWin, {ws}, {ws}, C]", x)
    ph, pw = _win_pad(h, w, ws)
    n = ((h + ph) // ws) * ((w + pw) // ws)
    if x.shape[0] % n:
        fail("window_unpartition", f"{x.shape[0]} windows is not a multiple of {n} per image", x)
    return [x.with_shape((x.shape[0] // n, h, w, x.shape[3]))]


def window_unpartition_reference(x, ws, h, w):
    ph, pw = _win_pad(h, w, ws)
    hp, wp = h + ph, w + pw
    c = x.shape[3]
    b = x.shape[0] // ((hp // ws) * (wp // ws))
    y = x.reshape(b, hp // ws, wp // ws, ws, ws, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
    return np.ascontiguousarray(y[:, :h, :w, :])


define("window_unpartition", ["x"],
       {"window": Attr("int"), "height": Attr("int"), "width": Attr("int")},
       infer=_wu_infer,
       reference=lambda ins, a: [window_unpartition_reference(ins[0], a["window"], a["height"],
                                                              a["width"])],
       category="movement", flops=lambda i, o, a: 0,
       doc="inverse of window_partition, dropping the padding: -> [B, height, width, C]")


def _arange_infer(ins, attrs):
    n = len(range(attrs["start"], attrs["stop"], attrs["step"])) if attrs["step"] else -1
    if n < 0:
        fail("arange", "step must be non-zero")
    return [TensorType((n,), attrs["dtype"])]


define("arange", [], {"start": Attr("int", 0), "stop": Attr("int"), "step": Attr("int", 1),
                      "dtype": Attr("str", "i64", ("i32", "i64", "f32"))},
       infer=_arange_infer,
       reference=lambda ins, a: [np.arange(a["start"], a["stop"], a["step"]).astype(
           {"i32": np.int32, "i64": np.int64, "f32": np.float32}[a["dtype"]])],
       category="movement", flops=lambda i, o, a: 0,
       doc="the integers start, start+step, ... below stop (index tables; folded at bind time)")
