"""bf16 operands of the bf16 GEMM, laid out for the dot-pair units (numpy side).

Both bf16 matrix units multiply *pairs* along K: one 32-bit lane holds two
bf16 values k = 2q, 2q+1, and the unit sums both products into one f32 lane.
So the right operand B [K, N] is stored pair-interleaved ("VNNI" layout)
``[K/2][N][2]``: 32 bits per (pair, column), and the pairs of 16 consecutive
columns are one 512-bit vector (`vdpbf16ps`) or one 64-byte row of an AMX B
tile (`tdpbf16ps`). A [M, K] stays row-major; each 32-bit word of a row is
already a pair.

Padding makes every access of the kernels a whole vector or tile: K is padded
to a multiple of `Layout.k_align` (2 for dot products, 32 for AMX: one A tile
row), N to a multiple of `Layout.n_align` (two 16-column vectors / tiles), M
to `Layout.m_align` (AMX loads 16-row tiles two at a time). Padding is zero,
so it adds nothing to any sum.

Rounding is round-to-nearest-even, exactly `rlx.ir.ops.linalg.round_bf16`
(the reference interpreter's): a bf16 kernel computes on the same operands.
B (a weight) is packed here once per bound array. A is rounded and packed by
the kernel itself, each task its own rows (`gemm_bf16`), except when batch
entries share rows of A (`pack_a`, once per call).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rlx.ir.ops.linalg import round_bf16


@dataclass(frozen=True)
class Layout:
    """Alignment of the packed operands (see the module docstring)."""

    k_align: int
    n_align: int
    m_align: int

    def kp(self, k: int) -> int:
        return _up(max(k, 1), self.k_align)

    def np_(self, n: int) -> int:
        return _up(max(n, 1), self.n_align)

    def mp(self, m: int) -> int:
        return _up(max(m, 1), self.m_align)


#: `vdpbf16ps` (and its emulation): pairs along K, 2 x 16 columns per register tile
DOT_LAYOUT = Layout(k_align=2, n_align=32, m_align=1)
#: AMX: an A tile row is 32 bf16 along K; 2 x 2 tiles of 16 x 16 per block of C
AMX_LAYOUT = Layout(k_align=32, n_align=32, m_align=32)


def _up(x: int, a: int) -> int:
    return -(-x // a) * a


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 `x` rounded to bf16 (RNE), as uint16 words; a NaN stays a NaN (its top half
    with the quiet bit set, so no NaN becomes an infinity), as the kernels convert it."""
    words = (round_bf16(x).view(np.uint32) >> np.uint32(16)).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        words[nan] |= np.uint16(0x40)
    return words


def pack_a(a: np.ndarray, m: int, layout: Layout) -> np.ndarray:
    """op(A) [..., rows, K] (contiguous f32) -> uint16 [entries, Mp, Kp] with `m` rows per
    entry (the kernel plan's M: all rows when a linear layer's batch is folded into one
    tall product)."""
    k = a.shape[-1]
    a = a.reshape(-1, m, k)
    kp, mp = layout.kp(k), layout.mp(m)
    out = np.zeros((a.shape[0], mp, kp), np.uint16)
    out[:, :m, :k] = bf16_bits(a)
    return out


def pack_b(b: np.ndarray, layout: Layout) -> np.ndarray:
    """op(B) [..., K, N] (f32) -> uint16 [entries, Kp/2, Np, 2] (pairs along K)."""
    k, n = b.shape[-2:]
    b = b.reshape(-1, k, n)
    kp, np_ = layout.kp(k), layout.np_(n)
    words = np.zeros((b.shape[0], kp, np_), np.uint16)
    words[:, :k, :n] = bf16_bits(b)
    # [e, Kp, Np] -> [e, Kp/2, 2, Np] -> [e, Kp/2, Np, 2]
    return np.ascontiguousarray(words.reshape(b.shape[0], kp // 2, 2, np_).transpose(0, 1, 3, 2))


def unpack_b(packed: np.ndarray, k: int, n: int) -> np.ndarray:
    """The inverse of `pack_b` as float32 [entries, K, N] (for tests and inspection)."""
    e, half, np_, _ = packed.shape
    words = packed.transpose(0, 1, 3, 2).reshape(e, 2 * half, np_)[:, :k, :n]
    return (words.astype(np.uint32) << np.uint32(16)).view(np.float32)


def packed_bytes(shape, layout: Layout) -> int:
    """Bytes of `pack_b` of an op(B) of `shape`."""
    *batch, k, n = shape
    return 2 * math.prod(batch) * layout.kp(k) * layout.np_(n)
