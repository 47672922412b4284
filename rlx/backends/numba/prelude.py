"""Vectorizable float32 exp / erf / tanh for generated kernels.

numba on this stack has no SVML, so ``math.exp`` on float32 becomes a scalar
libm call per element and stops the loop vectorizer; softmax and GELU would
spend seconds there. These versions use only arithmetic, comparisons/selects
and one bit cast, so LLVM turns a loop over them into AVX-512 code.

* exp32: Cody-Waite range reduction x = n·ln2 + r, a degree-6 polynomial for
  e^r (the classic single-precision minimax coefficients) and 2^n assembled in
  the exponent bits. Relative error about 1 ulp for inputs in
  [-87.3, 88.7]; below that it returns 0 (true result is a subnormal), above
  log(FLT_MAX) it returns inf; NaN propagates.
* erf32: an odd rational approximation p(x)/q(x) on [-4, 4] (erf is ±1 in
  float32 beyond); absolute error a few 1e-7.
* tanh32: an odd rational approximation clamped at ±7.9 (tanh is ±1 in float32
  beyond), returning x itself for |x| < 4e-4.

Generated kernels import these by name; their source is part of every kernel
cache key (see `backend.CODEGEN_VERSION`), so changing them invalidates
cached kernels.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import types
from numba.extending import intrinsic

f32 = np.float32


@intrinsic
def _i32_as_f32(typingctx, x):
    """Reinterpret int32 bits as float32 (one LLVM bitcast, so it vectorizes)."""
    if x == types.int32:
        def codegen(context, builder, sig, args):
            return builder.bitcast(args[0], ir.FloatType())
        return types.float32(types.int32), codegen
    return None


_LOG2E = f32(1.44269504088896341)
_LN2_HI = f32(0.693359375)
_LN2_LO = f32(-2.12194440e-4)
_EXP_LO = f32(-87.3365447504)
_EXP_OVER = f32(88.72283905206835)
_P0, _P1, _P2, _P3, _P4, _P5 = (f32(1.9875691500e-4), f32(1.3981999507e-3),
                                f32(8.3334519073e-3), f32(4.1665795894e-2),
                                f32(1.6666665459e-1), f32(5.0000001201e-1))
_ONE, _ZERO, _INF = f32(1.0), f32(0.0), f32(np.inf)


@njit(inline="always", error_model="numpy")
def exp32(x):
    xc = x if x < _EXP_OVER else _EXP_OVER
    xc = xc if xc > _EXP_LO else _EXP_LO
    fn = np.rint(xc * _LOG2E)
    r = xc - fn * _LN2_HI
    r = r - fn * _LN2_LO
    p = _P0 * r + _P1
    p = p * r + _P2
    p = p * r + _P3
    p = p * r + _P4
    p = p * r + _P5
    p = p * (r * r) + r + _ONE
    # 2^n in two halves so that n = 128 (x near log(FLT_MAX)) and n = -126 stay normal.
    n = np.int32(fn)
    h = np.int32(n >> np.int32(1))
    y = p * _i32_as_f32(np.int32((h + np.int32(127)) << np.int32(23)))
    y = y * _i32_as_f32(np.int32((n - h + np.int32(127)) << np.int32(23)))
    y = y if x > _EXP_LO else _ZERO
    y = y if x <= _EXP_OVER else _INF
    return y if x == x else x


_ERF_CLAMP = f32(4.0)
_A1, _A3, _A5, _A7, _A9, _A11, _A13 = (
    f32(-1.60960333262415e-02), f32(-2.95459980854025e-03), f32(-7.34990630326855e-04),
    f32(-5.69250639462346e-05), f32(-2.10102402082508e-06), f32(2.77068142495902e-08),
    f32(-2.72614225801306e-10))
_B0, _B2, _B4, _B6, _B8 = (
    f32(-1.42647390514189e-02), f32(-7.37332916720468e-03), f32(-1.68282697438203e-03),
    f32(-2.13374055278905e-04), f32(-1.45660718464996e-05))


@njit(inline="always", error_model="numpy")
def erf32(x0):
    x = x0 if x0 < _ERF_CLAMP else _ERF_CLAMP
    x = x if x > -_ERF_CLAMP else -_ERF_CLAMP
    x2 = x * x
    p = _A13 * x2 + _A11
    p = p * x2 + _A9
    p = p * x2 + _A7
    p = p * x2 + _A5
    p = p * x2 + _A3
    p = p * x2 + _A1
    p = p * x
    q = _B8 * x2 + _B6
    q = q * x2 + _B4
    q = q * x2 + _B2
    q = q * x2 + _B0
    r = p / q
    return r if x0 == x0 else x0


_TANH_CLAMP = f32(7.90531110763549805)
_TANH_TINY = f32(0.0004)
_TA1, _TA3, _TA5, _TA7, _TA9, _TA11, _TA13 = (
    f32(4.89352455891786e-03), f32(6.37261928875436e-04), f32(1.48572235717979e-05),
    f32(5.12229709037114e-08), f32(-8.60467152213735e-11), f32(2.00018790482477e-13),
    f32(-2.76076847742355e-16))
_TB0, _TB2, _TB4, _TB6 = (f32(4.89352518554385e-03), f32(2.26843463243900e-03),
                          f32(1.18534705686654e-04), f32(1.19825839466702e-06))


@njit(inline="always", error_model="numpy")
def tanh32(x0):
    x = x0 if x0 < _TANH_CLAMP else _TANH_CLAMP
    x = x if x > -_TANH_CLAMP else -_TANH_CLAMP
    x2 = x * x
    p = _TA13 * x2 + _TA11
    p = p * x2 + _TA9
    p = p * x2 + _TA7
    p = p * x2 + _TA5
    p = p * x2 + _TA3
    p = p * x2 + _TA1
    p = p * x
    q = _TB6 * x2 + _TB4
    q = q * x2 + _TB2
    q = q * x2 + _TB0
    r = p / q
    return x0 if abs(x0) < _TANH_TINY else r


# ---- row reductions in independent lanes ---------------------------------------------------
#
# A plain `for c: total += row[c]` is a chain of dependent adds (one per FP-add latency)
# and LLVM may not reorder it without fast-math. Eight independent partial results
# are an exact re-bracketing chosen here, not by the compiler: the result is
# deterministic, the loop runs at throughput instead of latency, and the SLP
# vectorizer can pack the lanes. (max is exact in any order.)


@njit(inline="always", error_model="numpy")
def row_max(row):
    n = row.shape[0]
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = row[0]
    n8 = n - n % 8
    for c in range(0, n8, 8):
        v0, v1, v2, v3 = row[c], row[c + 1], row[c + 2], row[c + 3]
        v4, v5, v6, v7 = row[c + 4], row[c + 5], row[c + 6], row[c + 7]
        m0 = v0 if v0 > m0 else m0
        m1 = v1 if v1 > m1 else m1
        m2 = v2 if v2 > m2 else m2
        m3 = v3 if v3 > m3 else m3
        m4 = v4 if v4 > m4 else m4
        m5 = v5 if v5 > m5 else m5
        m6 = v6 if v6 > m6 else m6
        m7 = v7 if v7 > m7 else m7
    for c in range(n8, n):
        v0 = row[c]
        m0 = v0 if v0 > m0 else m0
    a = m0 if m0 > m1 else m1
    b = m2 if m2 > m3 else m3
    d = m4 if m4 > m5 else m5
    e = m6 if m6 > m7 else m7
    a = a if a > b else b
    d = d if d > e else e
    return a if a > d else d


@njit(inline="always", error_model="numpy")
def row_sum64(row):
    """Sum of a float32 row: 16 float32 lanes over chunks of 128, chunk totals in float64
    (each lane adds 8 values, so the float32 part stays within a few ulp)."""
    n = row.shape[0]
    total = 0.0
    n128 = n - n % 128
    for c0 in range(0, n128, 128):
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = np.float32(0.0)
        s8 = s9 = s10 = s11 = s12 = s13 = s14 = s15 = np.float32(0.0)
        for c in range(c0, c0 + 128, 16):
            s0 += row[c]
            s1 += row[c + 1]
            s2 += row[c + 2]
            s3 += row[c + 3]
            s4 += row[c + 4]
            s5 += row[c + 5]
            s6 += row[c + 6]
            s7 += row[c + 7]
            s8 += row[c + 8]
            s9 += row[c + 9]
            s10 += row[c + 10]
            s11 += row[c + 11]
            s12 += row[c + 12]
            s13 += row[c + 13]
            s14 += row[c + 14]
            s15 += row[c + 15]
        a = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
        b = ((s8 + s9) + (s10 + s11)) + ((s12 + s13) + (s14 + s15))
        total += np.float64(a) + np.float64(b)
    # The tail (all of a short row: LayerNorm2d over 64 channels) in 8 lanes as well,
    # not one dependent float64 add per element.
    n8 = n - n % 8
    if n8 > n128:
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = np.float32(0.0)
        for c in range(n128, n8, 8):
            s0 += row[c]
            s1 += row[c + 1]
            s2 += row[c + 2]
            s3 += row[c + 3]
            s4 += row[c + 4]
            s5 += row[c + 5]
            s6 += row[c + 6]
            s7 += row[c + 7]
        total += np.float64(((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)))
    for c in range(n8, n):
        total += row[c]
    return total


@njit(inline="always", error_model="numpy")
def row_sqdev64(row, mean):
    """Sum of (row - mean)^2, lane-split like `row_sum64` (mean is float32)."""
    n = row.shape[0]
    total = 0.0
    n128 = n - n % 128
    for c0 in range(0, n128, 128):
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = np.float32(0.0)
        for c in range(c0, c0 + 128, 8):
            d0 = row[c] - mean
            d1 = row[c + 1] - mean
            d2 = row[c + 2] - mean
            d3 = row[c + 3] - mean
            d4 = row[c + 4] - mean
            d5 = row[c + 5] - mean
            d6 = row[c + 6] - mean
            d7 = row[c + 7] - mean
            s0 += d0 * d0
            s1 += d1 * d1
            s2 += d2 * d2
            s3 += d3 * d3
            s4 += d4 * d4
            s5 += d5 * d5
            s6 += d6 * d6
            s7 += d7 * d7
        total += np.float64(((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)))
    n8 = n - n % 8
    if n8 > n128:  # the tail in 8 lanes too (see row_sum64)
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = np.float32(0.0)
        for c in range(n128, n8, 8):
            d0 = row[c] - mean
            d1 = row[c + 1] - mean
            d2 = row[c + 2] - mean
            d3 = row[c + 3] - mean
            d4 = row[c + 4] - mean
            d5 = row[c + 5] - mean
            d6 = row[c + 6] - mean
            d7 = row[c + 7] - mean
            s0 += d0 * d0
            s1 += d1 * d1
            s2 += d2 * d2
            s3 += d3 * d3
            s4 += d4 * d4
            s5 += d5 * d5
            s6 += d6 * d6
            s7 += d7 * d7
        total += np.float64(((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)))
    for c in range(n8, n):
        d = row[c] - mean
        total += d * d
    return total
