"""Vectorizable float32 exp / erf / tanh / sin / cos, emitted inline as LLVM IR.

LLVM lowers `llvm.exp.f32` and friends to scalar libm calls (and no vector
math library is wired into llvmlite), which would stop the loop vectorizer:
softmax and GELU would then cost seconds. These implementations use only
arithmetic, compares/selects, `llvm.fmuladd`, `llvm.fabs` and bit casts, so a
loop over them becomes AVX-512 / AVX2 code. Every branch is a select.

* exp: x = n ln2 + r with a two-part ln2 (n ln2_hi exact), e^r by one degree-6
  polynomial (fit error 1.9e-9, one Horner chain of FMAs), 2^n applied as two
  exact power-of-two factors so that n = 128 and subnormal results (x down to
  -103.9) come out right. About 1 ulp; inf/-inf/nan handled. The softmax
  variant `exp_f32_nonpos` (x <= 0) skips the upper range.
* erf: x P(x^2) for |x| <= 1; one degree-12 polynomial in |x| - 2.46 for
  1 < |x| < 3.92 (fitted for absolute error: no exp, no division); +-1 beyond.
  Absolute error about 1e-7.
* tanh: x + x^3 P(x^2) for |x| <= 0.625, else sign(x) (1 - 2 / (e^{2|x|} + 1)).
* sin / cos: exact argument reduction for every finite float32 in float64:
  2/pi is split into 28-bit pieces C_i, each x * C_i is exact in double and is
  reduced modulo 4 exactly (to [-2, 2]), so the sum gives the quadrant and the fraction
  with ~1e-15 absolute error however large |x| is (no Payne-Hanek table
  needed); the kernels are Taylor polynomials on |r| <= pi/4 in double.

Coefficients come from `mathfit` (reproducible fits). float64 programs use the
libm functions through LLVM intrinsics / calls (scalar, but exact).
"""

from __future__ import annotations

import math
from fractions import Fraction

from llvmlite import ir

from rlx.backends.llvm.irutil import F32, F64, I32, I64, intrinsic

# ---- coefficients (see mathfit.py; highest degree first) ------------------------------------
#: e^r = sum c_i r^i, degree 6 on |r| <= ln2/2 (relative fit error 1.9e-9; 8.8e-8 in float32)
EXP_DIRECT = (0.0013836842263117433, 0.008374815806746483, 0.04166822507977486,
              0.16666419804096222, 0.49999991059303284, 1.0, 1.0)
ERF_SMALL = (7.647131860721856e-05, -0.0007942361407913268, 0.005179750267416239,
             -0.02684859186410904, 0.11283430457115173, -0.3761260509490967,
             1.1283791065216064)
#: erf(x) on [1, ERF_ONE] as a polynomial in x - ERF_MID_CENTER (absolute fit error 3.0e-8,
#: 8.7e-8 in float32); erf(x) rounds to 1 beyond ERF_ONE (1 - erf(3.92) = 7e-9)
ERF_MID = (-9.124727512244135e-06, 2.5420496967853978e-05, 5.166672053746879e-05,
           -0.00030167537624947727, 0.000391131266951561, 0.00046216652845032513,
           -0.002963509177789092, 0.0067976550199091434, -0.009904826991260052,
           0.009832995012402534, -0.006535763386636972, 0.0026561934500932693,
           0.9994966983795166)
ERF_MID_CENTER = 2.46
ERF_ONE = 3.92
TANH_SMALL = (0.0021429636981338263, -0.008177400566637516, 0.021700704470276833,
              -0.05394676327705383, 0.1333320587873459, -0.3333333134651184)

LOG2E = 1.4426950408889634
LN2_HI = 0.693359375  # 9 significant bits: n * LN2_HI is exact for |n| < 2^15
LN2_LO = -2.12194440e-4
EXP_MIN = -104.0  # exp(x) < 2^-150 below: rounds to 0
EXP_MAX = 89.0  # exp(x) > FLT_MAX above: inf
EXP_FLUSH = -86.0  # exp_f32_nonpos: 0 below (2^n stays a normal exponent, n >= -124)
ROUND_MAGIC_F32 = 12582912.0  # 1.5 * 2^23: (v + M) - M rounds v to an integer (|v| < 2^22)


def _two_over_pi_pieces(bits: int = 28, count: int = 7) -> list[float]:
    """2/pi as `count` consecutive `bits`-bit chunks (each an exact double).

    Computed from pi with integer arithmetic (Machin's formula), so the chunks
    are exact binary digits of 2/pi, not a rounded double.
    """
    prec = bits * count + 64
    scale = 1 << (prec + 16)

    def arctan_inv(n: int) -> int:  # arctan(1/n) * scale
        total, term, k, sign = 0, scale // n, 1, 1
        n2 = n * n
        while term:
            total += sign * (term // k)
            term //= n2
            k += 2
            sign = -sign
        return total

    pi_scaled = 4 * (4 * arctan_inv(5) - arctan_inv(239))  # pi * scale
    two_over_pi = Fraction(2 * scale * scale, pi_scaled) / scale
    pieces, rest = [], two_over_pi
    for i in range(1, count + 1):
        unit = Fraction(1, 1 << (bits * i))
        chunk = (rest // unit) * unit
        pieces.append(float(chunk))
        rest -= chunk
    return pieces


TWO_OVER_PI_PIECES = _two_over_pi_pieces()
PI_OVER_2 = math.pi / 2
SIN_TAYLOR = tuple((-1) ** k / math.factorial(2 * k + 1) for k in range(6, 0, -1))  # r^13..r^3
COS_TAYLOR = tuple((-1) ** k / math.factorial(2 * k) for k in range(7, 1, -1))  # r^14..r^4


class MathLib:
    """Emits math functions into one module (declares the intrinsics it needs once)."""

    def __init__(self, module: ir.Module):
        self.module = module

    # ---- intrinsics ------------------------------------------------------------------------

    def _intr(self, name: str, ty, n: int):
        return intrinsic(self.module, name, ty, [ty] * n)

    @staticmethod
    def _suffix(ty) -> str:
        """LLVM's overload suffix of a float type: f32, f64, v16f32, ..."""
        if isinstance(ty, ir.VectorType):
            return f"v{ty.count}{MathLib._suffix(ty.element)}"
        return "f32" if ty == F32 else "f64"

    def fmuladd(self, b, x, y, z):
        ty = x.type
        fn = self._intr(f"llvm.fmuladd.{self._suffix(ty)}", ty, 3)
        return b.call(fn, [x, y, z])

    def fabs(self, b, x):
        fn = self._intr("llvm.fabs.f32" if x.type == F32 else "llvm.fabs.f64", x.type, 1)
        return b.call(fn, [x])

    def sqrt(self, b, x):
        fn = self._intr("llvm.sqrt.f32" if x.type == F32 else "llvm.sqrt.f64", x.type, 1)
        return b.call(fn, [x])

    def rint64(self, b, x):
        return b.call(self._intr("llvm.rint.f64", F64, 1), [x])

    def copysign(self, b, mag, sign):
        name = "llvm.copysign.f32" if mag.type == F32 else "llvm.copysign.f64"
        return b.call(self._intr(name, mag.type, 2), [mag, sign])

    def libm(self, b, name: str, args):
        """A scalar libm call / intrinsic (float64 paths, log, pow)."""
        ty = args[0].type
        suffix = "f32" if ty == F32 else "f64"
        if name in ("exp", "log", "sin", "cos", "pow"):
            fn = self._intr(f"llvm.{name}.{suffix}", ty, len(args))
        else:  # erf, tanh: plain libm symbols
            fn = intrinsic(self.module, name + ("f" if ty == F32 else ""), ty, [ty] * len(args))
        return b.call(fn, list(args))

    # ---- helpers ---------------------------------------------------------------------------

    @staticmethod
    def c(ty, v) -> ir.Constant:
        """A float constant of type `ty`; splat when `ty` is a vector type."""
        if isinstance(ty, ir.VectorType):
            return ir.Constant(ty, [float(v)] * ty.count)
        return ir.Constant(ty, float(v))

    @staticmethod
    def _int32_like(ty):
        """i32, or a vector of i32 with as many lanes as the vector type `ty`."""
        return ir.VectorType(I32, ty.count) if isinstance(ty, ir.VectorType) else I32

    @staticmethod
    def _ic(ity, v: int) -> ir.Constant:
        if isinstance(ity, ir.VectorType):
            return ir.Constant(ity, [int(v)] * ity.count)
        return ir.Constant(ity, int(v))

    def horner(self, b, x, coeffs):
        ty = x.type
        p = self.c(ty, coeffs[0])
        for k in coeffs[1:]:
            p = self.fmuladd(b, p, x, self.c(ty, k))
        return p

    def clamp(self, b, x, lo, hi):
        """min(max(x, lo), hi); NaN becomes hi (callers restore NaN at the end)."""
        ty = x.type
        x = b.select(b.fcmp_ordered("<", x, self.c(ty, hi)), x, self.c(ty, hi))
        return b.select(b.fcmp_ordered(">", x, self.c(ty, lo)), x, self.c(ty, lo))

    def _pow2(self, b, n, fty=F32):
        """2^n as float32 (or a float32 vector `fty`) for i32 n in [-126, 127] (exponent bits)."""
        ity = n.type
        bits = b.shl(b.add(n, self._ic(ity, 127)), self._ic(ity, 23))
        return b.bitcast(bits, fty)

    # ---- float32 functions (exp also on float32 vectors) ---------------------------------------

    def _exp_parts(self, b, x):
        """(p, n) with e^x = p * 2^n, p in [0.7, 1.42], for x already in [EXP_MIN, EXP_MAX]."""
        ty = x.type
        t = b.fmul(x, self.c(ty, LOG2E))
        magic = self.c(ty, ROUND_MAGIC_F32)
        fn = b.fsub(b.fadd(t, magic), magic)  # round to nearest integer
        r = self.fmuladd(b, fn, self.c(ty, -LN2_HI), x)
        r = self.fmuladd(b, fn, self.c(ty, -LN2_LO), r)
        return self.horner(b, r, EXP_DIRECT), b.fptosi(fn, self._int32_like(ty))

    def exp_f32(self, b, x):
        """e^x for float32 or a float32 vector x."""
        ty = x.type
        p, n = self._exp_parts(b, self.clamp(b, x, EXP_MIN, EXP_MAX))
        h = b.ashr(n, self._ic(n.type, 1))
        y = b.fmul(b.fmul(p, self._pow2(b, h, ty)), self._pow2(b, b.sub(n, h), ty))
        return b.select(b.fcmp_unordered("uno", x, x), x, y)

    def exp_f32_nonpos(self, b, x, avx512: bool = False):
        """e^x for x <= 0 (softmax terms x - max), float32 or a float32 vector, about 1 ulp
        (e^r by one degree-6 polynomial, `EXP_DIRECT`). NaN stays NaN.

        Generic code: 2^n goes straight into the exponent bits (n is read from the rounding
        constant's mantissa) and results below e^EXP_FLUSH (< 5e-38, far below float32
        resolution next to the row max's term e^0 = 1) are 0. With `avx512` (x a 16-lane
        vector on an AVX-512 target), n = roundeven(x log2 e) and the result is
        vscalefps(p, n), which also gets the subnormal range right."""
        ty = x.type
        if avx512:
            xc = b.select(b.fcmp_ordered("<", x, self.c(ty, EXP_MIN)), self.c(ty, EXP_MIN), x)
            fn = b.call(self._intr("llvm.roundeven.v16f32", ty, 1),
                        [b.fmul(xc, self.c(ty, LOG2E))])
            r = self.fmuladd(b, fn, self.c(ty, -LN2_HI), xc)
            r = self.fmuladd(b, fn, self.c(ty, -LN2_LO), r)
            p = self.horner(b, r, EXP_DIRECT)
            scalef = intrinsic(self.module, "llvm.x86.avx512.mask.scalef.ps.512", ty,
                               [ty, ty, ty, ir.IntType(16), I32])
            return b.call(scalef, [p, fn, p, ir.Constant(ir.IntType(16), -1),
                                   ir.Constant(I32, 4)])  # all lanes, current rounding
        ity = self._int32_like(ty)
        magic = self.c(ty, ROUND_MAGIC_F32)
        tm = b.fadd(b.fmul(x, self.c(ty, LOG2E)), magic)  # n in the low mantissa bits
        fn = b.fsub(tm, magic)
        r = self.fmuladd(b, fn, self.c(ty, -LN2_HI), x)
        r = self.fmuladd(b, fn, self.c(ty, -LN2_LO), r)
        p = self.horner(b, r, EXP_DIRECT)
        shift = b.shl(b.bitcast(tm, ity), self._ic(ity, 23))  # n << 23 (the magic's bits overflow)
        y = b.bitcast(b.add(b.bitcast(p, ity), shift), ty)
        y = b.select(b.fcmp_ordered("<", x, self.c(ty, EXP_FLUSH)), self.c(ty, 0.0), y)
        return b.select(b.fcmp_unordered("uno", x, x), x, y)

    def exp_f32_normal(self, b, x):
        """e^x for x known to be finite with a normal result (-87 < x < 88): one scaling."""
        p, n = self._exp_parts(b, x)
        return b.fmul(p, self._pow2(b, n, x.type))

    def erf_f32(self, b, x):
        ax = self.fabs(b, x)
        # |x| <= 1: odd polynomial
        small = b.fmul(x, self.horner(b, b.fmul(x, x), ERF_SMALL))
        # 1 < |x| < ERF_ONE: one polynomial in |x| - ERF_MID_CENTER; 1 beyond
        a = self.clamp(b, ax, 1.0, ERF_ONE)
        mid = self.horner(b, b.fsub(a, self.c(F32, ERF_MID_CENTER)), ERF_MID)
        mid = b.select(b.fcmp_ordered(">=", ax, self.c(F32, ERF_ONE)), self.c(F32, 1.0), mid)
        large = self.copysign(b, mid, x)
        y = b.select(b.fcmp_ordered("<=", ax, self.c(F32, 1.0)), small, large)
        return b.select(b.fcmp_unordered("uno", x, x), x, y)

    def tanh_f32(self, b, x):
        ax = self.fabs(b, x)
        x2 = b.fmul(x, x)
        small = self.fmuladd(b, b.fmul(x, x2), self.horner(b, x2, TANH_SMALL), x)
        e = self.exp_f32_normal(b, b.fmul(self.clamp(b, ax, 0.0, 20.0), self.c(F32, 2.0)))
        q = b.fdiv(self.c(F32, 2.0), b.fadd(e, self.c(F32, 1.0)))
        large = self.copysign(b, b.fsub(self.c(F32, 1.0), q), x)
        y = b.select(b.fcmp_ordered("<=", ax, self.c(F32, 0.625)), small, large)
        return b.select(b.fcmp_unordered("uno", x, x), x, y)

    def _reduce_quadrant(self, b, x):
        """(r, q) with x = (q + r / (pi/2)) * pi/2 mod 2pi, |r| <= pi/4, q in 0..3 (i64).

        Each piece x * C_i is exact and is reduced exactly to [-2, 2] (t - 4 rint(t/4)
        subtracts a multiple of 4 that t itself determines), so tiny |x| keeps every
        bit and huge |x| loses none.
        """
        xd = b.fpext(x, F64)
        four, quarter = self.c(F64, 4.0), self.c(F64, 0.25)
        y = None
        for piece in TWO_OVER_PI_PIECES:
            t = b.fmul(xd, self.c(F64, piece))  # exact: 24 x 28 bits
            t = b.fsub(t, b.fmul(self.rint64(b, b.fmul(t, quarter)), four))
            y = t if y is None else b.fadd(y, t)
        y = b.fsub(y, b.fmul(self.rint64(b, b.fmul(y, quarter)), four))  # [-2, 2]
        n = self.rint64(b, y)
        r = b.fmul(b.fsub(y, n), self.c(F64, PI_OVER_2))
        q = b.and_(b.fptosi(n, I64), ir.Constant(I64, 3))
        return r, q

    def _sincos_kernels(self, b, r):
        r2 = b.fmul(r, r)
        s = self.fmuladd(b, b.fmul(r, r2), self.horner(b, r2, SIN_TAYLOR), r)
        c = self.fmuladd(b, b.fmul(r2, r2), self.horner(b, r2, COS_TAYLOR),
                         self.fmuladd(b, r2, self.c(F64, -0.5), self.c(F64, 1.0)))
        return s, c

    def _quadrant_select(self, b, q, first, second, neg_first, neg_second):
        """[first, second, neg_first, neg_second][q]."""
        lo = b.select(b.icmp_unsigned("==", q, ir.Constant(I64, 0)), first, second)
        hi = b.select(b.icmp_unsigned("==", q, ir.Constant(I64, 2)), neg_first, neg_second)
        return b.select(b.icmp_unsigned("<", q, ir.Constant(I64, 2)), lo, hi)

    def sin_f32(self, b, x):
        r, q = self._reduce_quadrant(b, x)
        s, c = self._sincos_kernels(b, r)
        y = self._quadrant_select(b, q, s, c, b.fneg(s), b.fneg(c))
        return b.fptrunc(y, F32)

    def cos_f32(self, b, x):
        r, q = self._reduce_quadrant(b, x)
        s, c = self._sincos_kernels(b, r)
        y = self._quadrant_select(b, q, c, b.fneg(s), b.fneg(c), s)
        return b.fptrunc(y, F32)

    # ---- dispatch ------------------------------------------------------------------------------

    def unary(self, b, name: str, x):
        """exp/erf/tanh/sin/cos/log of x (f32: inline vector code where we have it; f64: libm)."""
        if x.type == F32 and name in ("exp", "erf", "tanh", "sin", "cos"):
            return getattr(self, f"{name}_f32")(b, x)
        return self.libm(b, name, [x])
