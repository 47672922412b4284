"""The dot-pair primitive: acc[i] += a[2i+1] * b[2i+1], then += a[2i] * b[2i] (bf16 pairs).

This is Intel's definition of `vdpbf16ps` (AVX512-BF16), lane by lane: 16 f32
accumulator lanes, each fed by one 32-bit lane of each operand holding a pair
of bf16 values, the odd element's product added first. Every bf16 x bf16
product is exact in f32 (8-bit significands), so the only rounding is in the
two additions.

Two implementations, chosen by the target's features:

* ``avx512bf16``: the instruction itself (``llvm.x86.avx512bf16.dpbf16ps.512``);
* ``emulated``: plain LLVM IR -- a bf16 becomes an f32 by a 16-bit shift (even
  element: low half shifted up; odd: high half masked), then two fused
  multiply-adds in the instruction's order. It exists only so the kernels'
  packing, blocking and epilogues can be tested on CPUs without bf16 units; it
  is reached through `rlx.backends.llvm.gemm_bf16.emulation_for_tests`, never
  by a user's profile. (The hardware also treats bf16 denormals as zero and
  flushes denormal results; the emulation does not. Test data has none.)

AMX (`rlx.backends.llvm.amx`) computes on tiles instead and does not use this.
"""

from __future__ import annotations

from llvmlite import ir

from rlx.backends.llvm import irutil as U

LANES = 16
UNITS = ("avx512bf16", "emulated")


class BFloat(ir.Type):
    """LLVM's ``bfloat`` (llvmlite has no class for it; only vectors of it are used, as
    the intrinsic's operand type, made by bitcasting 32-bit pair lanes)."""

    def _to_string(self) -> str:
        return "bfloat"

    def __eq__(self, other) -> bool:
        return isinstance(other, BFloat)

    def __hash__(self) -> int:
        return hash("bfloat")


F32V = ir.VectorType(U.F32, LANES)
PAIRS = ir.VectorType(U.I32, LANES)
BF16V = ir.VectorType(BFloat(), 2 * LANES)


class DotPair:
    """``step(b, acc, a, w)``: acc (16 x f32) updated with the pairs in a and w (16 x i32)."""

    def __init__(self, module: ir.Module, unit: str, odd_first: bool = True):
        if unit not in UNITS:
            raise ValueError(f"dot-pair unit {unit!r}; one of {', '.join(UNITS)}")
        self.unit = unit
        #: emulation order: odd element first (`vdpbf16ps`), or even first (the legacy
        #: definition of AMX's `tdpbf16ps`, used by the tile emulation)
        self.odd_first = odd_first
        if unit == "avx512bf16":
            self._dp = U.intrinsic(module, "llvm.x86.avx512bf16.dpbf16ps.512", F32V,
                                   [F32V, BF16V, BF16V])
        else:
            self._fma = U.intrinsic(module, f"llvm.fma.v{LANES}f32", F32V, [F32V, F32V, F32V])
            self._hi = ir.Constant(PAIRS, [0xFFFF0000 - (1 << 32)] * LANES)
            self._sixteen = ir.Constant(PAIRS, [16] * LANES)

    def step(self, b: ir.IRBuilder, acc, a, w):
        if self.unit == "avx512bf16":
            return b.call(self._dp, [acc, b.bitcast(a, BF16V), b.bitcast(w, BF16V)])
        odd_a, odd_w = (b.bitcast(b.and_(x, self._hi), F32V) for x in (a, w))
        even_a, even_w = (b.bitcast(b.shl(x, self._sixteen), F32V) for x in (a, w))
        first, second = ((odd_a, odd_w), (even_a, even_w))
        if not self.odd_first:
            first, second = second, first
        acc = b.call(self._fma, [first[0], first[1], acc])
        return b.call(self._fma, [second[0], second[1], acc])

    def splat(self, b: ir.IRBuilder, pair):
        """One i32 pair in all 16 lanes (A's element pair against 16 columns of B)."""
        v = b.insert_element(ir.Constant(PAIRS, ir.Undefined), pair, ir.Constant(U.I32, 0))
        return b.shuffle_vector(v, ir.Constant(PAIRS, ir.Undefined),
                                ir.Constant(ir.VectorType(U.I32, LANES), [0] * LANES))
