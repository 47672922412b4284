"""AMX tiles for the bf16 GEMM: tile configuration, the 32 x 32 block of C, and the
process's permission to use tile state.

A block of C is 2 x 2 accumulator tiles (tmm0..tmm3, 16 x 16 f32 each); per
step of 32 along K it loads two A tiles (tmm4, tmm5: 16 rows x 32 bf16 of the
row-major packed A) and two B tiles (tmm6, tmm7: 16 pair-rows x 16 columns of
the pair-interleaved B, `rlx.backends.llvm.bf16pack`) and issues four
`tdpbf16ps`. Every tile is 16 rows x 64 bytes (palette 1), so one
configuration serves the whole kernel; the entry function loads it once per
call (tile configuration is per thread) and releases the tiles on return.
Tile numbers are immediates (LLVM 22 through llvmlite 0.50 compiles these
intrinsics directly; `llvm.x86.tileloadd64(i8 tile, ptr, i64 stride)`).

`tdpbf16ps` follows the same definition as `vdpbf16ps` per (row, column):
the pair's products summed into the f32 accumulator.

Linux gives a process tile state only on request (`request_permission`):
``arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)``; without it the first
tile instruction kills the process with SIGILL. The kernel object asks once
before its first call.
"""

from __future__ import annotations

import ctypes
import threading

from llvmlite import ir

from rlx.backends.llvm import irutil as U
from rlx.errors import RlxError

I8 = U.I8
#: tile numbers: accumulators C[0..3] (row-major 2 x 2), A rows 0-15 / 16-31, B cols 0-15 / 16-31
C_TILES, A_TILES, B_TILES = (0, 1, 2, 3), (4, 5), (6, 7)
TILE_ROWS, TILE_BYTES = 16, 64
#: rows and columns of C per block (2 x 2 tiles), K per step (one A tile row of bf16)
BLOCK_M, BLOCK_N, BLOCK_K = 32, 32, 32

SYS_ARCH_PRCTL = 158
ARCH_REQ_XCOMP_PERM = 0x1023
XFEATURE_XTILEDATA = 18


def opaque(b: ir.IRBuilder, ptr) -> ir.Value:
    """`ptr` (an alloca, which llvmlite types) as an opaque ``ptr`` value, so loads and
    stores of any type go through it (a no-op ``bitcast ptr to ptr`` in the IR)."""
    from llvmlite.ir.instructions import CastInstr

    cast = CastInstr(b.block, "bitcast", ptr, U.PTR)
    b._insert(cast)
    return cast


def tile_config() -> bytes:
    """The 64-byte configuration: palette 1, all eight tiles 16 rows x 64 bytes."""
    cfg = bytearray(64)
    cfg[0] = 1
    for t in range(8):
        cfg[16 + 2 * t:18 + 2 * t] = TILE_BYTES.to_bytes(2, "little")
        cfg[48 + t] = TILE_ROWS
    return bytes(cfg)


class Tiles:
    """Emitters for the AMX intrinsics inside one module.

    `emulate`: the tile registers are 8 KB on the stack of the function that uses them
    and the tile instructions plain IR (loads, stores, the dot-pair emulation in
    `tdpbf16ps`'s order: even element, then odd), so the blocking, strides and edge
    handling of the AMX kernel are tested on CPUs without AMX (`gemm_bf16`'s
    ``amx-emulated`` test unit). Accumulation order inside a real tile instruction is
    the hardware's; the real path is compared with a tolerance, like every GEMM."""

    def __init__(self, module: ir.Module, emulate: bool = False):
        self.module = module
        self.emulate = emulate
        self._regs = None
        if emulate:
            from rlx.backends.llvm.dotpair import DotPair

            self._pair = DotPair(module, "emulated", odd_first=False)
            return
        self._cfg_fn = U.intrinsic(module, "llvm.x86.ldtilecfg", U.VOID, [U.PTR])
        self._release = U.intrinsic(module, "llvm.x86.tilerelease", U.VOID, [])
        self._zero = U.intrinsic(module, "llvm.x86.tilezero", U.VOID, [I8])
        self._load = U.intrinsic(module, "llvm.x86.tileloadd64", U.VOID, [I8, U.PTR, U.I64])
        self._store = U.intrinsic(module, "llvm.x86.tilestored64", U.VOID, [I8, U.PTR, U.I64])
        self._dp = U.intrinsic(module, "llvm.x86.tdpbf16ps", U.VOID, [I8, I8, I8])
        data = tile_config()
        ty = ir.ArrayType(I8, len(data))
        cfg = ir.GlobalVariable(module, ty, "rlx_amx_tile_config")
        cfg.global_constant = True
        cfg.linkage = "internal"
        cfg.align = 64
        cfg.initializer = ir.Constant(ty, bytearray(data))
        self.config = cfg

    @staticmethod
    def _t(n: int) -> ir.Constant:
        return ir.Constant(I8, n)

    def configure(self, b: ir.IRBuilder) -> None:
        if not self.emulate:
            b.call(self._cfg_fn, [self.config])

    def release(self, b: ir.IRBuilder) -> None:
        if not self.emulate:
            b.call(self._release, [])

    def begin(self, b: ir.IRBuilder) -> None:
        """At the entry of the function that uses the tiles (emulation: their storage)."""
        if self.emulate:
            regs = b.alloca(ir.ArrayType(U.I32, 8 * TILE_ROWS * 16), name="tmm")
            regs.align = 64
            self._regs = opaque(b, regs)

    # ---- the four tile operations (intrinsic, or emulated) --------------------------

    def _row(self, b, t: int, r):
        at = b.add(U.i64(t * TILE_ROWS * 16), b.mul(r, U.i64(16))) if not isinstance(
            r, int) else U.i64((t * TILE_ROWS + r) * 16)
        return b.gep(self._regs, [at], inbounds=True, source_etype=U.I32)

    def zero(self, b, t: int) -> None:
        if not self.emulate:
            b.call(self._zero, [self._t(t)])
            return
        vec = ir.VectorType(U.I32, 16)
        for r in range(TILE_ROWS):
            b.store(ir.Constant(vec, [0] * 16), self._row(b, t, r), align=64)

    def load(self, b, t: int, ptr, stride: int) -> None:
        if not self.emulate:
            b.call(self._load, [self._t(t), ptr, U.i64(stride)])
            return
        vec = ir.VectorType(U.I32, 16)
        for r in range(TILE_ROWS):
            src = b.gep(ptr, [U.i64(r * stride)], source_etype=I8)
            b.store(b.load(src, typ=vec, align=2), self._row(b, t, r), align=64)

    def store_tile(self, b, t: int, ptr, stride: int) -> None:
        if not self.emulate:
            b.call(self._store, [self._t(t), ptr, U.i64(stride)])
            return
        vec = ir.VectorType(U.I32, 16)
        for r in range(TILE_ROWS):
            dst = b.gep(ptr, [U.i64(r * stride)], source_etype=I8)
            b.store(b.load(self._row(b, t, r), typ=vec, align=64), dst, align=4)

    def dot(self, b, c: int, a: int, w: int) -> None:
        """C[c] += A[a] B[w]: rows m of C, pairs k of A's row m against pair-row k of B."""
        if not self.emulate:
            b.call(self._dp, [self._t(c), self._t(a), self._t(w)])
            return
        from rlx.backends.llvm.dotpair import F32V, PAIRS

        with U.loop(b, 0, TILE_ROWS, "tm") as m:
            acc = b.load(self._row(b, c, m), typ=F32V, align=64)
            for k in range(TILE_ROWS):
                pair = b.load(b.gep(self._row(b, a, m), [U.i64(k)], source_etype=U.I32),
                              typ=U.I32)
                bk = b.load(self._row(b, w, k), typ=PAIRS, align=64)
                acc = self._pair.step(b, acc, self._pair.splat(b, pair), bk)
            b.store(acc, self._row(b, c, m), align=64)

    # ---- the kernel's block ------------------------------------------------------------

    def block(self, b: ir.IRBuilder, a_ptr, a_stride: int, b_ptr, b_stride: int,
              k_steps: int, b_step_bytes: int) -> None:
        """C tiles = A[32 rows, :] x B[:, 32 cols]: `a_ptr` / `b_ptr` at the block's first
        row / column (byte strides between tile rows), k_steps steps of 32 along K; A
        advances 64 bytes a step, B `b_step_bytes` (16 pair-rows)."""
        for t in C_TILES:
            self.zero(b, t)
        a_next = U.i64(TILE_ROWS * a_stride)
        with U.loop(b, 0, k_steps, "kb") as kb:
            a0 = b.gep(a_ptr, [b.mul(kb, U.i64(TILE_BYTES))], source_etype=I8)
            b0 = b.gep(b_ptr, [b.mul(kb, U.i64(b_step_bytes))], source_etype=I8)
            self.load(b, A_TILES[0], a0, a_stride)
            self.load(b, A_TILES[1], b.gep(a0, [a_next], source_etype=I8), a_stride)
            self.load(b, B_TILES[0], b0, b_stride)
            self.load(b, B_TILES[1], b.gep(b0, [U.i64(TILE_BYTES)], source_etype=I8), b_stride)
            for i, at in enumerate(A_TILES):
                for j, bt in enumerate(B_TILES):
                    self.dot(b, C_TILES[2 * i + j], at, bt)

    def store(self, b: ir.IRBuilder, c_ptr, c_stride: int) -> None:
        """The 2 x 2 C tiles to f32 memory at `c_ptr` (row stride `c_stride` bytes)."""
        for i in range(2):
            for j in range(2):
                off = U.i64(i * TILE_ROWS * c_stride + j * TILE_BYTES)
                self.store_tile(b, C_TILES[2 * i + j], b.gep(c_ptr, [off], source_etype=I8),
                                c_stride)


_permission_lock = threading.Lock()
_permission: bool | None = None


def request_permission() -> None:
    """Ask Linux once per process for AMX tile state (an RlxError naming the cause if
    refused: an old kernel, or a CPU without AMX)."""
    global _permission
    with _permission_lock:
        if _permission:
            return
        libc = ctypes.CDLL(None, use_errno=True)
        rc = libc.syscall(ctypes.c_long(SYS_ARCH_PRCTL), ctypes.c_long(ARCH_REQ_XCOMP_PERM),
                          ctypes.c_long(XFEATURE_XTILEDATA))
        if rc != 0:
            err = ctypes.get_errno()
            raise RlxError(f"AMX: Linux refused tile state (arch_prctl ARCH_REQ_XCOMP_PERM "
                           f"XTILEDATA: errno {err}); the CPU or kernel (>= 5.16) lacks AMX "
                           f"support: use --device cpu-avx512-bf16")
        _permission = True
