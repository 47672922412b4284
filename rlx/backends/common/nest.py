"""Loop nests: an iteration space and how each operand is indexed from it.

Every operand of a kernel (input or output) is a contiguous buffer read or
written through an `Access`: an element offset and one stride per dimension
of the iteration space (stride 0 = broadcast along that dimension). The
fusion passes guarantee that absorbed movement ops are such index maps.

`build_nest` then simplifies the space: size-1 dimensions are dropped and
neighbouring dimensions that every operand walks contiguously are merged, so a
bias add over [1, 64, 64, 768] becomes a 2-D loop [4096, 768] and a plain
elementwise chain a 1-D loop. A reduced dimension (norms) and explicit
barriers (a GEMM's row/column split) are never merged with their neighbours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rlx.ir.views import StridedView


@dataclass(frozen=True)
class Access:
    """Operand `arg` seen from the iteration space: offset + sum(i[d] * strides[d])."""

    arg: int
    offset: int
    strides: tuple[int, ...]

    def dims(self) -> tuple[int, ...]:
        """The iteration dims this operand actually varies along (stride != 0)."""
        return tuple(d for d, s in enumerate(self.strides) if s != 0)

    def is_contiguous_over(self, shape) -> bool:
        """True if the non-broadcast dims, in order, form a C-contiguous block."""
        dims = self.dims()
        want = 1
        for d in reversed(dims):
            if self.strides[d] != want:
                return False
            want *= shape[d]
        return True


@dataclass(frozen=True)
class LoopNest:
    shape: tuple[int, ...]
    inputs: tuple[Access, ...]
    outputs: tuple[Access, ...]
    #: the reduced dimension (norm kernels), or None
    reduce: int | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def signature(self) -> tuple:
        """What the generated code depends on (not the sizes): rank, which dims each
        operand varies along, contiguity. Two nests with equal signatures share code."""
        def acc(a):
            return (a.arg, self._pattern(a), a.is_contiguous_over(self.shape))
        return (len(self.shape), self.reduce, tuple(acc(a) for a in self.inputs),
                tuple(acc(a) for a in self.outputs))

    @staticmethod
    def _pattern(a: Access) -> tuple:
        return tuple(s != 0 for s in a.strides)


def build_nest(shape, inputs: list[tuple[int, StridedView]], outputs: list[tuple[int, StridedView]],
               reduce: int | None = None, barriers: tuple[int, ...] = ()) -> LoopNest:
    """A simplified nest for operands given as views over the full space `shape`.

    `barriers` are dims d such that d-1 and d must not be merged.
    """
    shape = tuple(shape)
    accs = [(arg, v.offset, list(v.strides)) for arg, v in inputs + outputs]
    # Drop size-1 dims (never the reduced one).
    keep = [d for d in range(len(shape)) if shape[d] != 1 or d == reduce]
    if not keep:
        keep = []
    new_reduce = keep.index(reduce) if reduce is not None else None
    new_barriers = {keep.index(b) for b in barriers if b in keep}
    # A barrier at a dropped dim moves to the next kept dim.
    for b in barriers:
        if b not in keep:
            later = [i for i, d in enumerate(keep) if d > b]
            if later:
                new_barriers.add(later[0])
    dims = [shape[d] for d in keep]
    strides = [[s[d] for d in keep] for _, _, s in accs]
    # Merge d and d+1 when every operand walks them as one.
    d = len(dims) - 2
    while d >= 0:
        blocked = new_reduce in (d, d + 1) or (d + 1) in new_barriers
        if not blocked and all(st[d] == st[d + 1] * dims[d + 1] for st in strides):
            dims[d] *= dims[d + 1]
            del dims[d + 1]
            for st in strides:
                st[d] = st[d + 1]
                del st[d + 1]
            if new_reduce is not None and new_reduce > d + 1:
                new_reduce -= 1
            new_barriers = {b - 1 if b > d + 1 else b for b in new_barriers if b != d + 1}
        d -= 1
    n_in = len(inputs)
    if not dims:  # a scalar: one iteration; outputs are 1-element arrays
        dims = [1]
        strides = [[0] if k < n_in else [1] for k in range(len(strides))]
    made = [Access(arg, off, tuple(st)) for (arg, off, _), st in zip(accs, strides)]
    return LoopNest(tuple(dims), tuple(made[:n_in]), tuple(made[n_in:]), new_reduce)
