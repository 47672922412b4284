"""Element types shared by the checkpoint readers.

numpy has no bfloat16, yet bf16 checkpoints are common. Both readers
therefore read bf16 data as raw 16-bit words and widen it here to float32,
which is exact: a bf16 value is the upper half of the float32 with the same
value. Keeping the one conversion in one place means both formats agree
bit for bit.
"""

from __future__ import annotations

import numpy as np


def bf16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """Widen bf16 values, given as native-order uint16 words, to float32.

    The result is a new C-contiguous array of the same shape.
    """
    if bits.dtype != np.uint16:
        raise TypeError(f"bf16 words must be uint16, got {bits.dtype}")
    wide = bits.astype(np.uint32, order="C") << np.uint32(16)
    return wide.view(np.float32)


def c_contiguous(array: np.ndarray) -> np.ndarray:
    """`array` itself if C-contiguous, else a C-contiguous copy.

    Unlike ``np.ascontiguousarray`` this keeps 0-d arrays 0-d (that function
    returns at least 1-d, which would turn a scalar weight of shape () into
    shape (1,)).
    """
    return array if array.flags.c_contiguous else np.array(array, order="C")


def human_bytes(n: int) -> str:
    """A short size for messages: '12.3 MB'."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")
