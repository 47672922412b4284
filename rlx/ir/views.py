"""Strided views: when a movement op is only a different way to index a buffer.

A fused kernel reads each of its operands through an *index map* from the
kernel's iteration space to the operand's contiguous buffer. For a transpose,
a broadcast, a slice and most reshapes that map is affine: an element offset
plus one stride per dimension (stride 0 for a broadcast dimension). Fusion
uses this to absorb such ops into the consumer's indexing instead of copying
whole tensors, and backends use the same description to generate the loads.
It lives with the IR because both sides read it: a pass deciding what to fuse
and a backend indexing a fused kernel's operands, neither importing the other.

A reshape of a strided view is itself a strided view only when the dims it
merges are laid out contiguously with respect to each other; the check is
numpy's own no-copy reshape, run on a zero-size stand-in so that no memory is
touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: movement ops that can be absorbed as index maps (when the result is a strided view)
VIEW_OPS = frozenset({"reshape", "transpose", "broadcast_to", "slice"})


@dataclass(frozen=True)
class StridedView:
    """An index map: element ``idx`` of a tensor of ``shape`` lives at
    ``offset + sum(idx[d] * strides[d])`` in a contiguous buffer."""

    shape: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int = 0

    @staticmethod
    def contiguous(shape) -> "StridedView":
        shape = tuple(int(d) for d in shape)
        strides, acc = [], 1
        for d in reversed(shape):
            strides.append(acc)
            acc *= max(d, 1)
        return StridedView(shape, tuple(reversed(strides)), 0)

    @property
    def is_contiguous(self) -> bool:
        """True when the view covers its buffer in row-major order (size-1 dims ignored)."""
        want = StridedView.contiguous(self.shape)
        return self.offset == 0 and all(
            s == w for d, s, w in zip(self.shape, self.strides, want.strides) if d != 1)

    def transpose(self, perm) -> "StridedView":
        return StridedView(tuple(self.shape[p] for p in perm),
                           tuple(self.strides[p] for p in perm), self.offset)

    def broadcast_to(self, shape) -> "StridedView | None":
        shape = tuple(shape)
        lead = len(shape) - len(self.shape)
        if lead < 0:
            return None
        strides = [0] * lead
        for d, s, t in zip(self.shape, self.strides, shape[lead:]):
            if d == t:
                strides.append(s if d != 1 else 0)
            elif d == 1:
                strides.append(0)
            else:
                return None
        return StridedView(shape, tuple(strides), self.offset)

    def slice(self, starts, ends, steps) -> "StridedView":
        offset = self.offset + sum(s * st for s, st in zip(starts, self.strides))
        shape = tuple(len(range(s, e, k)) for s, e, k in zip(starts, ends, steps))
        strides = tuple(st * k for st, k in zip(self.strides, steps))
        return StridedView(shape, strides, offset)

    def reshape(self, shape) -> "StridedView | None":
        shape = tuple(int(d) for d in shape)
        if math.prod(shape) != math.prod(self.shape):
            return None
        if math.prod(shape) == 0 or self.shape == shape:
            return StridedView(shape, StridedView.contiguous(shape).strides, self.offset) \
                if self.shape != shape else self
        # numpy decides whether the reshape needs a copy; the stand-in has 1-byte items
        # and a one-element buffer, so nothing is ever read.
        stand_in = np.lib.stride_tricks.as_strided(np.zeros(1, np.int8), self.shape,
                                                   self.strides)
        try:
            out = np.reshape(stand_in, shape, copy=False)
        except ValueError:
            return None
        return StridedView(shape, tuple(int(s) for s in out.strides), self.offset)

    def apply(self, op: str, attrs: dict, out_shape) -> "StridedView | None":
        """The view after one movement op, or None if that op would need a copy."""
        if op == "transpose":
            return self.transpose(attrs["perm"])
        if op == "broadcast_to":
            return self.broadcast_to(attrs["shape"])
        if op == "slice":
            return self.slice(attrs["starts"], attrs["ends"], attrs["steps"])
        if op == "reshape":
            return self.reshape(out_shape)
        return None


def view_chain(value, stop) -> tuple[object, list]:
    """Walk back from `value` through view ops until `stop(v)` is true for a value.

    Returns (source value, [movement nodes from source to `value`]).
    """
    chain = []
    v = value
    while not stop(v) and v.producer is not None and v.producer.op in VIEW_OPS:
        chain.append(v.producer)
        v = v.producer.inputs[0]
    return v, chain[::-1]


def view_of(source_shape, chain, target_shape=None) -> StridedView | None:
    """The index map of `chain` (movement nodes) applied to a contiguous buffer of
    `source_shape`, broadcast to `target_shape` if given; None if not a strided view."""
    view = StridedView.contiguous(source_shape)
    for node in chain:
        view = view.apply(node.op, node.attrs, node.outputs[0].shape)
        if view is None:
            return None
    if target_shape is not None and tuple(target_shape) != view.shape:
        view = view.broadcast_to(target_shape)
    return view


def batched_view(source_shape, chain, shape) -> StridedView | None:
    """An index map for a [B, *rest] operand, allowing B to stay split into several dims.

    `view_of(source, chain, shape)` fails when the last op of the chain merges
    batch dims that are not laid out contiguously (windowed attention: windows x
    heads). A consumer that walks the batch dim one entry at a time can still read
    such an operand if it unravels the batch index: this returns the view before
    the final reshape, shaped (*batch_dims, *rest) with prod(batch_dims) == B,
    when that is a strided view.
    """
    view = view_of(source_shape, chain)
    if view is not None and view.shape == tuple(shape):
        return view
    if view is not None:
        view = view.reshape(shape)
        if view is not None:
            return view
    if not chain or chain[-1].op != "reshape":
        return None
    inner = view_of(source_shape, chain[:-1])
    if inner is None:
        return None
    rest = tuple(shape[1:])
    dims = [(d, s) for d, s in zip(inner.shape, inner.strides)]
    if tuple(d for d, _ in dims[len(dims) - len(rest):]) != rest:
        return None
    batch = [(d, s) for d, s in dims[:len(dims) - len(rest)] if d != 1]
    if math.prod(d for d, _ in batch) != shape[0]:
        return None
    tail = dims[len(dims) - len(rest):]
    return StridedView(tuple(d for d, _ in batch + tail), tuple(s for _, s in batch + tail),
                       inner.offset)


def blas_layout(rows: int, cols: int, row_stride: int, col_stride: int) -> tuple[bool, int] | None:
    """How BLAS reads a [rows, cols] matrix stored with these element strides:
    (transposed, leading dimension), or None if neither dim has unit stride (or the
    leading dimension would be shorter than the other extent: overlapping rows)."""
    if cols == 1 or col_stride == 1:
        ld = row_stride if rows > 1 else max(cols, 1)
        return (False, ld) if ld >= max(cols, 1) else None
    if rows == 1 or row_stride == 1:
        ld = col_stride if cols > 1 else max(rows, 1)
        return (True, ld) if ld >= max(rows, 1) else None
    return None


def gemm_operand_view(source_shape, chain, shape) -> StridedView | None:
    """An index map a GEMM kernel can hand to BLAS for a matmul operand of logical
    `shape` [*batch, R, C]: a strided view of the chain's source (the first batch dim
    may stay split into several dims, see `batched_view`) whose last two dims have a
    unit stride in one of them. None otherwise."""
    shape = tuple(shape)
    if len(shape) >= 3:
        view = batched_view(source_shape, chain, shape)
    else:
        view = view_of(source_shape, chain)
        if view is not None and view.shape != shape:
            view = view.reshape(shape)
    if view is None or len(view.shape) < 2:
        return None
    (r, c), (rs, cs) = view.shape[-2:], view.strides[-2:]
    return view if blas_layout(r, c, rs, cs) is not None else None
