"""Explicit SIMD IR for register-tiled kernels: the target's vector shape and a few emitters.

Most generated code is scalar and left to LLVM's loop vectorizer. Kernels whose
speed depends on a register tile (a block of accumulators that stays in
registers over a whole contraction loop) are written with explicit vector
types instead, sized by the target: `VectorConfig` says how many float32
lanes a register holds and how many registers there are, so a tile never
spills (AVX-512: 16 lanes, 32 registers; AVX2: 8 lanes, 16 registers; the
generic x86-64 level: SSE, 4 lanes, 16 registers).
"""

from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

from rlx.backends.llvm.irutil import F32, I32, I64, i64, intrinsic


@dataclass(frozen=True)
class VectorConfig:
    lanes: int  # float32 lanes per vector register
    regs: int  # vector registers

    @property
    def vec(self) -> ir.VectorType:
        return ir.VectorType(F32, self.lanes)


def vector_config(target) -> VectorConfig:
    """The float32 vector shape code for `target` (a `rlx.backends.llvm.target.Target`) uses:
    the width the profile chose (`Target.vector_bits`); 32 registers where the device has
    AVX-512 (also when the profile asked for 256-bit vectors: AVX512-VL has 32 ymm)."""
    return VectorConfig(target.vector_bits // 32, 32 if target.max_bits >= 512 else 16)


class Vec:
    """Emitters for one vector shape inside one module."""

    def __init__(self, module: ir.Module, vc: VectorConfig):
        self.vc = vc
        self.ty = vc.vec
        self.lanes = vc.lanes
        self._fma = intrinsic(module, f"llvm.fmuladd.v{vc.lanes}f32", self.ty,
                              [self.ty, self.ty, self.ty])
        self._max = intrinsic(module, f"llvm.maxnum.v{vc.lanes}f32", self.ty, [self.ty, self.ty])
        self._mask = ir.Constant(ir.VectorType(I32, vc.lanes), [0] * vc.lanes)

    def const(self, value: float) -> ir.Constant:
        return ir.Constant(self.ty, [float(value)] * self.lanes)

    def splat(self, b: ir.IRBuilder, x) -> ir.Value:
        v = b.insert_element(ir.Constant(self.ty, ir.Undefined), x, ir.Constant(I32, 0))
        return b.shuffle_vector(v, ir.Constant(self.ty, ir.Undefined), self._mask)

    def load(self, b: ir.IRBuilder, ptr, index, align: int = 4) -> ir.Value:
        """lanes consecutive floats at ptr[index]."""
        return b.load(b.gep(ptr, [index], inbounds=True, source_etype=F32), typ=self.ty,
                      align=align)

    def store(self, b: ir.IRBuilder, value, ptr, index, align: int = 4) -> None:
        b.store(value, b.gep(ptr, [index], inbounds=True, source_etype=F32), align=align)

    def mask(self, n_valid: int) -> ir.Constant:
        """A lane mask with the first `n_valid` lanes on."""
        return ir.Constant(ir.VectorType(ir.IntType(1), self.lanes),
                           [1 if i < n_valid else 0 for i in range(self.lanes)])

    def load_n(self, b: ir.IRBuilder, ptr, index, n_valid: int, align: int = 4) -> ir.Value:
        """The first `n_valid` floats at ptr[index] (zeros beyond; nothing past them is read)."""
        if n_valid >= self.lanes:
            return self.load(b, ptr, index, align)
        fn = intrinsic(b.module, f"llvm.masked.load.v{self.lanes}f32.p0", self.ty,
                       [ir.PointerType(), I32, self.mask(0).type, self.ty])
        return b.call(fn, [b.gep(ptr, [index], inbounds=True, source_etype=F32),
                           ir.Constant(I32, align), self.mask(n_valid), self.const(0.0)])

    def store_n(self, b: ir.IRBuilder, value, ptr, index, n_valid: int, align: int = 4) -> None:
        """Store the first `n_valid` lanes of `value` at ptr[index] (nothing else is written)."""
        if n_valid >= self.lanes:
            self.store(b, value, ptr, index, align)
            return
        fn = intrinsic(b.module, f"llvm.masked.store.v{self.lanes}f32.p0", ir.VoidType(),
                       [self.ty, ir.PointerType(), I32, self.mask(0).type])
        b.call(fn, [value, b.gep(ptr, [index], inbounds=True, source_etype=F32),
                    ir.Constant(I32, align), self.mask(n_valid)])

    def fma(self, b: ir.IRBuilder, x, y, z) -> ir.Value:
        return b.call(self._fma, [x, y, z])

    def max(self, b: ir.IRBuilder, x, y) -> ir.Value:
        return b.call(self._max, [x, y])


def fold_range(b: ir.IRBuilder, start, stop, inits: list, body, name: str = "f",
               step: int = 1) -> list:
    """vals = body(i, vals) for i in range(start, stop, step), the values carried in
    registers (phis); returns the final values (`inits` for an empty range)."""
    start = i64(start) if isinstance(start, int) else start
    stop = i64(stop) if isinstance(stop, int) else stop
    if not inits:
        inits = []
    fn = b.block.function
    pre = b.block
    body_bb = fn.append_basic_block(f"{name}.body")
    exit_bb = fn.append_basic_block(f"{name}.exit")
    done = fn.append_basic_block(f"{name}.done")
    b.cbranch(b.icmp_signed("<", start, stop), body_bb, done)
    b.position_at_end(body_bb)
    iv = b.phi(I64, name=name)
    iv.add_incoming(start, pre)
    phis = []
    for v in inits:
        p = b.phi(v.type)
        p.add_incoming(v, pre)
        phis.append(p)
    new = list(body(iv, list(phis)))
    nxt = b.add(iv, i64(step), flags=("nsw",))
    end = b.block
    iv.add_incoming(nxt, end)
    for p, v in zip(phis, new):
        p.add_incoming(v, end)
    b.cbranch(b.icmp_signed("<", nxt, stop), body_bb, exit_bb)
    b.position_at_end(exit_bb)
    b.branch(done)
    b.position_at_end(done)
    out = []
    for init, v in zip(inits, new):
        p = b.phi(init.type)
        p.add_incoming(init, pre)
        p.add_incoming(v, exit_bb)
        out.append(p)
    return out
