"""Tensor types: static shapes and a small set of element types.

Shapes are fully static: a graph is compiled for concrete sizes (the number of
prompt points is a shape, so a decoder is compiled per bucket). f32 is the
working dtype; integer and boolean types exist for indices and masks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rlx.errors import ShapeError

#: IR dtype name -> numpy dtype. The IR names are what the text format prints.
DTYPES: dict[str, np.dtype] = {
    "f32": np.dtype(np.float32),
    "f64": np.dtype(np.float64),
    "f16": np.dtype(np.float16),
    "i32": np.dtype(np.int32),
    "i64": np.dtype(np.int64),
    "bool": np.dtype(np.bool_),
}
_BY_NUMPY = {v: k for k, v in DTYPES.items()}

FLOAT_DTYPES = frozenset({"f32", "f64", "f16"})
INT_DTYPES = frozenset({"i32", "i64"})


def dtype_from_numpy(dt) -> str:
    """IR dtype name of a numpy dtype (or anything numpy accepts as one)."""
    try:
        return _BY_NUMPY[np.dtype(dt)]
    except KeyError:
        raise ShapeError(f"numpy dtype {np.dtype(dt)} has no IR equivalent") from None


def numpy_dtype(dtype: str) -> np.dtype:
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ShapeError(f"unknown dtype {dtype!r}; known: {', '.join(DTYPES)}") from None


@dataclass(frozen=True)
class TensorType:
    """A static shape and an element type, e.g. ``f32[1,3,1024,1024]``."""

    shape: tuple[int, ...]
    dtype: str = "f32"

    def __post_init__(self):
        shape = tuple(int(d) for d in self.shape)
        if any(d < 0 for d in shape):
            raise ShapeError(f"negative dimension in shape {shape}")
        object.__setattr__(self, "shape", shape)
        if self.dtype not in DTYPES:
            raise ShapeError(f"unknown dtype {self.dtype!r}; known: {', '.join(DTYPES)}")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * DTYPES[self.dtype].itemsize

    @property
    def np_dtype(self) -> np.dtype:
        return DTYPES[self.dtype]

    def with_shape(self, shape) -> "TensorType":
        return TensorType(tuple(shape), self.dtype)

    def with_dtype(self, dtype: str) -> "TensorType":
        return TensorType(self.shape, dtype)

    @staticmethod
    def of(array: np.ndarray) -> "TensorType":
        return TensorType(tuple(array.shape), dtype_from_numpy(array.dtype))

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(str(d) for d in self.shape)}]"


def broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """numpy broadcasting of shapes; raises ShapeError naming all shapes."""
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(rank):
        dims = {s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0}
        dims.discard(1)
        if len(dims) > 1:
            raise ShapeError(
                "shapes do not broadcast: " + ", ".join(str(list(s)) for s in shapes)
            )
        out.append(dims.pop() if dims else 1)
    return tuple(out)
