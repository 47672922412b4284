"""The dot-pair primitive: acc[i] += a[2i+1] * b[2i+1], then += a[2i] * b[2i] (bf16 pairs).

This is Intel's definition of `vdpbf16ps` (AVX512-BF16), lane by lane: f32
accumulator lanes (16 in a zmm register; 8 / 4 in ymm / xmm with AVX512-VL,
when the profile asks for narrower vectors), each fed by one 32-bit lane of
each operand holding a pair of bf16 values, the odd element's product added
first. Every bf16 x bf16
product is exact in f32 (8-bit significands), so the only rounding is in the
two additions.

Two implementations, chosen by the target's features:

* ``avx512bf16``: the instruction itself (``llvm.x86.avx512bf16.dpbf16ps.512``,
  ``.256``, ``.128`` by width);
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


class DotPair:
    """``step(b, acc, a, w)``: acc (lanes x f32) updated with the pairs in a and w (lanes x
    i32); `lanes` 16, 8 or 4."""

    def __init__(self, module: ir.Module, unit: str, odd_first: bool = True,
                 lanes: int = LANES):
        if lanes not in (4, 8, 16):
            raise ValueError(f"dot pairs of {lanes} lanes")
        self.lanes = lanes
        self.f32v = ir.VectorType(U.F32, lanes)
        self.pairs = ir.VectorType(U.I32, lanes)
        self._bf16v = ir.VectorType(BFloat(), 2 * lanes)
        f32v, pairs, bf16v = self.f32v, self.pairs, self._bf16v
        if unit not in UNITS:
            raise ValueError(f"dot-pair unit {unit!r}; one of {', '.join(UNITS)}")
        self.unit = unit
        #: emulation order: odd element first (`vdpbf16ps`), or even first (the legacy
        #: definition of AMX's `tdpbf16ps`, used by the tile emulation)
        self.odd_first = odd_first
        if unit == "avx512bf16":
            self._dp = U.intrinsic(module, f"llvm.x86.avx512bf16.dpbf16ps.{32 * lanes}", f32v,
                                   [f32v, bf16v, bf16v])
        else:
            self._fma = U.intrinsic(module, f"llvm.fma.v{lanes}f32", f32v, [f32v, f32v, f32v])
            self._hi = ir.Constant(pairs, [0xFFFF0000 - (1 << 32)] * lanes)
            self._sixteen = ir.Constant(pairs, [16] * lanes)

    def step(self, b: ir.IRBuilder, acc, a, w):
        if self.unit == "avx512bf16":
            return b.call(self._dp, [acc, b.bitcast(a, self._bf16v), b.bitcast(w, self._bf16v)])
        odd_a, odd_w = (b.bitcast(b.and_(x, self._hi), self.f32v) for x in (a, w))
        even_a, even_w = (b.bitcast(b.shl(x, self._sixteen), self.f32v) for x in (a, w))
        first, second = ((odd_a, odd_w), (even_a, even_w))
        if not self.odd_first:
            first, second = second, first
        acc = b.call(self._fma, [first[0], first[1], acc])
        return b.call(self._fma, [second[0], second[1], acc])

    def splat(self, b: ir.IRBuilder, pair):
        """One i32 pair in every lane (A's element pair against `lanes` columns of B)."""
        v = b.insert_element(ir.Constant(self.pairs, ir.Undefined), pair, ir.Constant(U.I32, 0))
        return b.shuffle_vector(v, ir.Constant(self.pairs, ir.Undefined),
                                ir.Constant(ir.VectorType(U.I32, self.lanes), [0] * self.lanes))
