"""`gather`: take slices of a table at integer indices along one axis (``np.take``).

Semantics, decided once here and shared by every backend (the compiled
backends run `gather_into` on the host; nothing else implements the op):

* ``out.shape == table.shape[:axis] + indices.shape + table.shape[axis + 1:]``,
  ``out[..., i, j, ..., :] = table[..., indices[i, j], ..., :]`` -- numpy's
  ``np.take(table, indices, axis)``.
* Negative indices count from the end, as in numpy: ``-1`` is the last slice.
  Valid indices are ``-n <= i < n`` for an axis of extent ``n``; anything else
  is an `InputError` naming the op, the offending index and the valid range
  (numpy's ``mode="raise"``; never wrapped or clipped). Indices are data, so
  this is checked when the op runs, in every backend alike.
* The axis may be negative too (``axis=-1`` is the last); it is stored in its
  canonical non-negative form, so equal ops print alike.
* Rank-0 indices select one slice and drop the axis (``np.take(t, 2, 0)`` on a
  ``[5, 3]`` table is ``[3]``); a rank-0 table has no axis to index and is a
  `ShapeError` when the graph is built.
* Indices are ``i32`` or ``i64``; the output has the table's dtype.
"""

from __future__ import annotations

import numpy as np

from rlx.errors import InputError
from rlx.ir.ops.registry import Attr, define, fail


def _normalize(ins, attrs):
    table = ins[0]
    if table is None:
        return attrs
    if table.rank == 0:
        fail("gather", "the table is a scalar (rank 0): there is no axis to take from", table)
    ax = attrs["axis"]
    if not -table.rank <= ax < table.rank:
        fail("gather", f"axis {ax} out of range for a table of rank {table.rank}", table)
    return {**attrs, "axis": ax % table.rank}


def _infer(ins, attrs):
    table, idx = ins
    if idx.dtype not in ("i32", "i64"):
        fail("gather", f"indices must be integers (i32 or i64), got {idx.dtype}", table, idx)
    ax = attrs["axis"]
    return [table.with_shape(table.shape[:ax] + idx.shape + table.shape[ax + 1:])]


def check_indices(table_shape, indices: np.ndarray, axis: int) -> None:
    """Raise an `InputError` unless every index is in ``[-n, n)`` for the axis extent n."""
    n = table_shape[axis]
    if indices.size == 0:
        return
    lo, hi = int(indices.min()), int(indices.max())
    if lo < -n or hi >= n:
        bad = lo if lo < -n else hi
        raise InputError(f"gather: index {bad} out of range for axis {axis} of extent {n} "
                         f"(valid: {-n} .. {n - 1}; negative indices count from the end)")


def gather_into(table: np.ndarray, indices: np.ndarray, axis: int, out: np.ndarray) -> None:
    """The op's kernel: ``out[...] = np.take(table, indices, axis)`` after the range check."""
    check_indices(table.shape, indices, axis)
    np.take(table, indices, axis=axis, out=out)


def _reference(ins, attrs):
    table, idx = ins
    ax = attrs["axis"]
    check_indices(table.shape, idx, ax)
    return [np.take(table, idx, axis=ax)]


define("gather", ["table", "indices"], {"axis": Attr("int", 0)}, infer=_infer,
       reference=_reference, normalize=_normalize, category="movement",
       flops=lambda i, o, a: 0,
       doc="embedding lookup: slices of table at integer indices along axis (np.take; "
           "negative indices count from the end)")
