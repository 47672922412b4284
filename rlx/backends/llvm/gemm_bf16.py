"""bf16 GEMM kernels: products marked ``precision = "bf16"`` on the CPU's matrix units.

Semantics (`rlx.ir.ops.linalg`): both operands rounded to bf16 (nearest even),
products and sums in f32, then the fused epilogue (bias, activation, scale,
residual) in f32 exactly as the f32 GEMM applies it (`gemm.epilogue_function`).

``f(task_lo, task_hi, in_0, ..., out_0, A, A_packed, B_packed)``: like the
native f32 GEMM, the runtime passes op(A) (contiguous f32) and the packed
operands after the output (`rlx.backends.llvm.bf16_kernel`). B is packed into
the pair-interleaved layout both units read (`rlx.backends.llvm.bf16pack`)
by a generated parallel kernel (`pack_b_module`): a weight once, when the plan
binds it; a B the graph computes on every call. Tasks are (batch entry, block
of rows), as in `rlx.backends.llvm.gemm`; each task first rounds and packs its
own rows of A (`_convert_function`, so A is converted in parallel and read
once), computes its rows of C, then runs the epilogue on them while they are
in cache.

Inside a task the loops are blocked for the caches: a chunk of `MC` rows of A
(MC x K bf16, meant for L2) meets every strip of B (K x 2 vectors of columns,
L1/L2), one register tile or AMX block at a time. The inner product is chosen
by the target's matrix units (`unit_for`):

* ``amx``: 2 x 2 tiles of 16 x 16 f32 per 32 x 32 block of C (`amx.Tiles`);
* ``avx512bf16``: an `MR` x 2-vector register tile of C, one `vdpbf16ps` per
  row, vector of columns and pair of K (`dotpair`; 16-lane zmm vectors, or the
  AVX512-VL ymm / xmm forms when the profile asks for narrower vectors);
* ``emulated`` / ``amx-emulated``: the same register tiles / AMX blocks with
  the dot pairs / tile instructions computed in plain IR, only for testing this
  file's packing, blocking and epilogues on CPUs without bf16 units
  (`emulation_for_tests`); a bf16 profile on such a CPU is refused before any
  of this runs (`rlx.backends.llvm.target.check_precision`), and products
  marked bf16 otherwise run on the reference kernel.

The blocking constants (`MR`, `MC`) and the loop order are first guesses, not
measurements: this was written on a CPU without bf16 units. Tune them on one
that has them (``python -m benchmarks.bench_bf16_gemm``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading

from llvmlite import ir

from rlx.backends.common.spec import GemmSpec
from rlx.backends.llvm import irutil as U
from rlx.backends.llvm.amx import BLOCK_K, BLOCK_M, BLOCK_N, Tiles, opaque
from rlx.backends.llvm.bf16pack import AMX_LAYOUT, DOT_LAYOUT, Layout
from rlx.backends.llvm.dotpair import LANES, DotPair
from rlx.backends.llvm.elementwise import Operands
from rlx.backends.llvm.gemm import GemmPlan, _batch_offset, epilogue_function, plan
from rlx.backends.llvm.nestir import decompose
from rlx.backends.llvm.vecir import fold_range
from rlx.errors import ProfileError

UNITS = ("amx", "avx512bf16", "emulated", "amx-emulated")
#: the CPU feature (LLVM name) each real unit needs, and how /proc/cpuinfo names it
FEATURE = {"amx": "amx-bf16", "avx512bf16": "avx512bf16"}
CPUINFO_FLAG = {"amx": "amx_bf16", "avx512bf16": "avx512_bf16"}
#: rows of C in one dot-pair register tile (MR x 2 accumulators of 16 lanes + 2 B vectors)
MR = 6
#: rows of A per cache chunk (a multiple of MR and of the AMX block's 32 rows)
MC = 192
#: columns of C per strip: two vectors of the dot-pair width (16 lanes at 512 bits), or two
#: AMX tiles (16 columns each)
VECTORS_PER_STRIP = 2

_override = threading.local()


@contextlib.contextmanager
def emulation_for_tests(unit: str = "emulated", lanes: int | None = None):
    """Within the block (this thread), bf16 products compile for `unit` whatever the
    device: ``emulated`` (plain-IR dot pairs) or ``amx-emulated`` (plain-IR tiles), for
    testing on CPUs without bf16 units, or a real unit (``avx512bf16``, ``amx``) to test
    one path on a CPU that has both. `lanes` sets the dot-pair width (default: 16 for
    the emulation, the profile's vector width for the instruction). Not a user setting."""
    if unit not in UNITS:
        raise ValueError(f"bf16 unit {unit!r}; one of {', '.join(UNITS)}")
    old = getattr(_override, "unit", None), getattr(_override, "lanes", None)
    _override.unit, _override.lanes = unit, lanes
    try:
        yield
    finally:
        _override.unit, _override.lanes = old


def lanes_for(unit: str, vector_lanes: int) -> int:
    """f32 lanes of the dot pairs: the profile's vector width (`vector_lanes`) for the
    instruction (512 bits: 16; a 256-bit profile gets the AVX512-VL ymm form), 16 for the
    emulation and for AMX (a tile row), unless the test hook says otherwise."""
    forced = getattr(_override, "lanes", None)
    if unit.startswith("amx"):
        return LANES
    if forced is not None:
        return forced
    return vector_lanes if unit == "avx512bf16" else LANES


def unit_for(device: str) -> str | None:
    """The unit bf16 products on `device` compute with: AMX where it has AMX-BF16, else
    AVX512-BF16 dot products, else None (the node then runs on the reference kernel)."""
    from rlx.backends.llvm.target import matrix_units

    forced = getattr(_override, "unit", None)
    if forced is not None:
        return forced
    units = matrix_units(device)
    if "amx-bf16" in units:
        return "amx"
    return "avx512bf16" if "avx512bf16" in units else None


def layout_for(unit: str) -> Layout:
    return AMX_LAYOUT if unit.startswith("amx") else DOT_LAYOUT


@dataclasses.dataclass(frozen=True)
class Bf16Plan:
    """The f32 GEMM plan on packed operands, plus the packed sizes (u16 elements)."""

    p: GemmPlan
    unit: str
    kp: int
    np_: int
    mp: int
    #: the kernel rounds its tasks' rows of A itself (f32 in, packed bf16 scratch out);
    #: False when batch entries share rows of A (broadcast): the runtime packs A then
    convert_a: bool = True
    #: f32 lanes of a dot-pair vector (AMX: a tile row, 16)
    lanes: int = LANES

    @property
    def strip(self) -> int:
        """Columns of C per strip."""
        return VECTORS_PER_STRIP * self.lanes

    @property
    def layout(self) -> Layout:
        return layout_for(self.unit)


def bf16_plan(spec: GemmSpec, threads: int, unit: str, lanes: int = LANES) -> Bf16Plan:
    """Tasks and packed sizes: `gemm.plan` on contiguous op(A), op(B) (a linear layer's
    batch folded into one tall product), row blocks rounded up to whole AMX blocks."""
    if unit not in UNITS:
        raise ProfileError(f"bf16 GEMM: unknown unit {unit!r}")
    p = plan(spec, transposed_operands=False, threads=threads)
    lay = layout_for(unit)
    block = -(-p.block // lay.m_align) * lay.m_align
    p = dataclasses.replace(p, block=max(1, min(block, lay.mp(p.m))))
    shared_a = any(stride == 0 and size > 1 for dims in p.a_bdims for size, stride in dims)
    lanes = LANES if unit.startswith("amx") else lanes
    return Bf16Plan(p, unit, lay.kp(p.k), lay.np_(p.n), lay.mp(p.m), not shared_a, lanes)


def _packed_bdims(bdims, unpacked: int, packed: int):
    """Batch sub-dims of a contiguous operand (element strides, multiples of one entry's
    `unpacked` size) re-scaled to entries of `packed` elements."""
    unpacked = max(unpacked, 1)
    return tuple(tuple((size, stride // unpacked * packed) for size, stride in dims)
                 for dims in bdims)


def bf16_gemm_module(spec: GemmSpec, n_inputs: int, title: str, threads: int, unit: str,
                     fastmath: bool = False, lanes: int = LANES) -> str:
    """IR of the bf16 GEMM + epilogue kernel for `unit` (see the module docstring), dot
    pairs `lanes` wide."""
    bp = bf16_plan(spec, threads, unit, lanes)
    p = bp.p
    module = U.new_module(title)
    fn = U.entry_function(module, n_inputs + 4)
    for a in fn.args[2:]:
        a.add_attribute("noalias")
    ops = Operands(fn, n_inputs)
    epi, g = epilogue_function(module, spec, n_inputs, "f32", 0, fastmath)
    tiles = Tiles(module, emulate=unit == "amx-emulated") if unit.startswith("amx") else None
    compute = _compute_function(module, bp, tiles)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    a_f32, a_pk, b_pk = fn.args[3 + n_inputs:6 + n_inputs]
    c_ptr0 = ops.out(0)
    convert = _convert_function(module, bp) if bp.convert_a else None
    a_bdims = _packed_bdims(p.a_bdims, p.m * p.k, bp.mp * bp.kp)
    b_bdims = _packed_bdims(p.b_bdims, p.k * p.n, bp.kp * bp.np_)
    epi_args = list(fn.args[2:3 + n_inputs])
    if tiles is not None:
        tiles.configure(b)
    with U.loop(b, fn.args[0], fn.args[1], "task") as task:
        if p.row_blocks == 1:
            e_idx, r0 = task, U.i64(0)
        else:
            e_idx = b.udiv(task, U.i64(p.row_blocks))
            r0 = b.mul(b.sub(task, b.mul(e_idx, U.i64(p.row_blocks))), U.i64(p.block))
        rows = b.sub(U.smin(b, b.add(r0, U.i64(p.block)), U.i64(p.m)), r0)
        a_off, b_off, src_off = U.i64(0), U.i64(0), U.i64(0)
        if p.batch:
            idx = decompose(b, e_idx, list(p.batch))
            for i, a_dims, b_dims, src_dims in zip(idx, a_bdims, b_bdims, p.a_bdims):
                a_off = _batch_offset(b, i, a_dims, a_off)
                b_off = _batch_offset(b, i, b_dims, b_off)
                src_off = _batch_offset(b, i, src_dims, src_off)
        c_row0 = b.add(b.mul(e_idx, U.i64(p.m)), r0)
        a_ptr = b.gep(a_pk, [b.add(a_off, b.mul(r0, U.i64(bp.kp)))], inbounds=True,
                      source_etype=ir.IntType(16))
        if convert is not None:  # this task's rows of A, rounded to bf16 and packed
            src = b.gep(a_f32, [b.add(src_off, b.mul(r0, U.i64(p.k)))], inbounds=True,
                        source_etype=U.F32)
            b.call(convert, [rows, src, a_ptr])
        b_ptr = b.gep(b_pk, [b_off], inbounds=True, source_etype=ir.IntType(16))
        c_ptr = b.gep(c_ptr0, [b.mul(c_row0, U.i64(p.n))], inbounds=True, source_etype=U.F32)
        b.call(compute, [rows, a_ptr, b_ptr, c_ptr])
        if epi is not None:
            lo = b.udiv(b.mul(c_row0, U.i64(p.n)), U.i64(g))
            hi = b.add(lo, b.udiv(b.mul(rows, U.i64(p.n)), U.i64(g)))
            b.call(epi, [lo, hi] + epi_args)
    if tiles is not None:
        tiles.release(b)
    b.ret_void()
    return str(module)


def _bf16_word(b: ir.IRBuilder, x):
    """The bf16 of float32 bits `x` (i32) in the low 16 bits of an i32: nearest even,
    NaN kept a NaN (quiet bit set), as `bf16pack.bf16_bits`."""
    c = lambda v: ir.Constant(U.I32, v)  # noqa: E731
    lsb = b.and_(b.lshr(x, c(16)), c(1))
    rounded = b.lshr(b.add(b.add(x, c(0x7FFF)), lsb), c(16))
    nan = b.icmp_unsigned(">", b.and_(x, c(0x7FFFFFFF)), c(0x7F800000))
    return b.select(nan, b.or_(b.lshr(x, c(16)), c(0x40)), rounded)


def pack_b_module(bp: Bf16Plan, entries: int) -> tuple[str, int]:
    """(IR, tasks) of the kernel that packs a B computed by the graph (an activation,
    e.g. the im2col columns of a convolution) on every call, in parallel:
    ``f(lo, hi, src, dst)``, src op(B) f32 [entries, K, N], dst the pair-interleaved
    [entries, Kp/2, Np] 32-bit words (`bf16pack.pack_b`'s layout, padding zeroed); a
    task is one pair of rows of one entry. (A weight is packed once by numpy.)"""
    k, n, half, np_ = bp.p.k, bp.p.n, bp.kp // 2, bp.np_
    module = U.new_module("rlx bf16 pack B")
    fn = U.entry_function(module, 2)
    src, dst = fn.args[2:]
    src.add_attribute("noalias")
    dst.add_attribute("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    zero = ir.Constant(U.I32, 0)
    with U.loop(b, fn.args[0], fn.args[1], "task") as t:
        e = b.udiv(t, U.i64(half))
        q = b.sub(t, b.mul(e, U.i64(half)))
        even = b.add(b.mul(e, U.i64(k)), b.mul(q, U.i64(2)))  # source row 2q of entry e
        out = b.gep(dst, [b.mul(t, U.i64(np_))], inbounds=True, source_etype=U.I32)
        s0 = b.gep(src, [b.mul(even, U.i64(n))], source_etype=U.I32)  # read only if 2q < K
        s1 = b.gep(s0, [U.i64(n)], source_etype=U.I32)  # read only if 2q + 1 < K
        has_odd = b.icmp_signed("<", b.add(b.mul(q, U.i64(2)), U.i64(1)), U.i64(k))
        with b.if_else(has_odd) as (pair, single):
            with pair:
                with U.loop(b, 0, n, "pj") as j:
                    lo = _bf16_word(b, b.load(b.gep(s0, [j], inbounds=True,
                                                    source_etype=U.I32), typ=U.I32))
                    hi = _bf16_word(b, b.load(b.gep(s1, [j], inbounds=True,
                                                    source_etype=U.I32), typ=U.I32))
                    b.store(b.or_(b.shl(hi, ir.Constant(U.I32, 16)), lo),
                            b.gep(out, [j], inbounds=True, source_etype=U.I32))
            with single:
                has_even = b.icmp_signed("<", b.mul(q, U.i64(2)), U.i64(k))
                with b.if_else(has_even) as (last, padding):
                    with last:  # the last row of an odd K: the pair's odd half is padding
                        with U.loop(b, 0, n, "sj") as j:
                            lo = _bf16_word(b, b.load(b.gep(s0, [j], inbounds=True,
                                                            source_etype=U.I32), typ=U.I32))
                            b.store(lo, b.gep(out, [j], inbounds=True, source_etype=U.I32))
                    with padding:  # past K (AMX pads K to 32): a zero row
                        with U.loop(b, 0, n, "zr") as j:
                            b.store(zero, b.gep(out, [j], inbounds=True, source_etype=U.I32))
        if np_ > n:
            with U.loop(b, n, np_, "zj") as j:
                b.store(zero, b.gep(out, [j], inbounds=True, source_etype=U.I32))
    b.ret_void()
    return str(module), entries * half


def _convert_function(module: ir.Module, bp: Bf16Plan) -> ir.Function:
    """convert(rows, src, dst): rows x K f32 at `src` (row-major) rounded to bf16 (nearest
    even; NaN stays NaN, quieted) into `dst` (rows of Kp, the K padding zeroed). The AMX
    layout's padding rows (Mp - M) are left as they are: a row of A only reaches the same
    row of C, and C's padding rows are never stored."""
    I16 = ir.IntType(16)
    fn = U.internal_function(module, "bf16_round_rows", U.VOID,
                             [U.I64, U.PTR, U.PTR])
    rows, src, dst = fn.args
    src.add_attribute("noalias")
    dst.add_attribute("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    k, kp = bp.p.k, bp.kp
    zero16 = ir.Constant(I16, 0)
    with U.loop(b, 0, rows, "cr") as r:
        s_row = b.gep(src, [b.mul(r, U.i64(k))], inbounds=True, source_etype=U.I32)
        d_row = b.gep(dst, [b.mul(r, U.i64(kp))], inbounds=True, source_etype=I16)
        with U.loop(b, 0, k, "ck") as j:
            x = b.load(b.gep(s_row, [j], inbounds=True, source_etype=U.I32), typ=U.I32)
            b.store(b.trunc(_bf16_word(b, x), I16),
                    b.gep(d_row, [j], inbounds=True, source_etype=I16))
        for j in range(k, kp):
            b.store(zero16, b.gep(d_row, [U.i64(j)], inbounds=True, source_etype=I16))
    b.ret_void()
    return fn


def _compute_function(module: ir.Module, bp: Bf16Plan, tiles: Tiles | None) -> ir.Function:
    """block(rows, A, B, C): C[rows, n] = A[rows, Kp] B[Kp/2, Np, 2] on packed bf16, in
    chunks of MC rows against 32-column strips of B."""
    fn = U.internal_function(module, "bf16_block", U.VOID, [U.I64, U.PTR, U.PTR, U.PTR])
    rows, A, B, C = fn.args
    for a in (A, B, C):
        a.add_attribute("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    n = bp.p.n
    nr = bp.strip
    full_strips, tail = divmod(n, nr)
    if tiles is not None:
        tiles.begin(b)
        scratch = b.alloca(ir.ArrayType(U.F32, BLOCK_M * BLOCK_N), name="cblock")
        scratch.align = 64
        scratch = opaque(b, scratch)
        body = _AmxBlocks(tiles, bp, A, B, C, scratch)
    else:
        body = _DotTiles(module, bp, A, B, C)
    with U.loop(b, 0, rows, "ic", step=MC) as ic:
        ie = U.smin(b, b.add(ic, U.i64(MC)), rows)
        if full_strips:
            with U.loop(b, 0, full_strips, "js") as js:
                body.strip(b, ic, ie, b.mul(js, U.i64(nr)), nr)
        if tail:
            body.strip(b, ic, ie, U.i64(full_strips * nr), tail)
    b.ret_void()
    return fn


class _DotTiles:
    """Register tiles of MR x 32 (or 1 x 32) f32 accumulated with dot pairs."""

    def __init__(self, module, bp: Bf16Plan, A, B, C):
        self.dp = DotPair(module, bp.unit, lanes=bp.lanes)
        self.bp, self.A, self.B, self.C = bp, A, B, C
        L = bp.lanes
        self._mstore = U.intrinsic(module, f"llvm.masked.store.v{L}f32.p0", U.VOID,
                                   [self.dp.f32v, U.PTR, U.I32, ir.VectorType(U.I1, L)])

    def strip(self, b, ic, ie, j, width: int) -> None:
        """Rows [ic, ie) x columns [j, j + width) of C (width <= 32, static)."""
        full = b.add(ic, b.mul(b.udiv(b.sub(ie, ic), U.i64(MR)), U.i64(MR)))
        with U.loop(b, ic, full, "ir", step=MR) as i:
            self.tile(b, i, j, MR, width)
        with U.loop(b, full, ie, "i1") as i:
            self.tile(b, i, j, 1, width)

    def tile(self, b, i, j, mr: int, width: int) -> None:
        bp = self.bp
        half_k, np_ = bp.kp // 2, bp.np_
        L = bp.lanes
        nvec = -(-width // L)
        zero = ir.Constant(self.dp.f32v, [0.0] * L)

        def step(kk, acc):
            w = [b.load(b.gep(self.B, [b.add(b.mul(kk, U.i64(np_)),
                                              b.add(j, U.i64(v * L)))],
                              inbounds=True, source_etype=U.I32), typ=self.dp.pairs, align=4)
                 for v in range(nvec)]
            out = []
            for r in range(mr):
                at = b.add(b.mul(b.add(i, U.i64(r)), U.i64(half_k)), kk)
                pair = b.load(b.gep(self.A, [at], inbounds=True, source_etype=U.I32),
                              typ=U.I32, align=4)
                a = self.dp.splat(b, pair)
                out.extend(self.dp.step(b, acc[r * nvec + v], a, w[v]) for v in range(nvec))
            return out

        acc = fold_range(b, 0, half_k, [zero] * (mr * nvec), step, name="kk")
        for r in range(mr):
            row = b.mul(b.add(i, U.i64(r)), U.i64(bp.p.n))
            for v in range(nvec):
                valid = min(L, width - v * L)
                ptr = b.gep(self.C, [b.add(row, b.add(j, U.i64(v * L)))], inbounds=True,
                            source_etype=U.F32)
                if valid == L:
                    b.store(acc[r * nvec + v], ptr, align=4)
                else:
                    mask = ir.Constant(ir.VectorType(U.I1, L),
                                       [1 if q < valid else 0 for q in range(L)])
                    b.call(self._mstore, [acc[r * nvec + v], ptr, ir.Constant(U.I32, 4), mask])


class _AmxBlocks:
    """32 x 32 blocks of C on AMX tiles; blocks past the valid rows / columns go through
    an on-stack block and are copied."""

    def __init__(self, tiles: Tiles, bp: Bf16Plan, A, B, C, scratch):
        self.tiles = tiles
        self.bp, self.A, self.B, self.C, self.scratch = bp, A, B, C, scratch

    def strip(self, b, ic, ie, j, width: int) -> None:
        bp = self.bp
        n = bp.p.n
        with U.loop(b, ic, ie, "ia", step=BLOCK_M) as i:
            a_ptr = b.gep(self.A, [b.mul(i, U.i64(bp.kp))], inbounds=True,
                          source_etype=ir.IntType(16))
            b_ptr = b.gep(self.B, [b.mul(j, U.i64(2))], inbounds=True,
                          source_etype=ir.IntType(16))
            self.tiles.block(b, a_ptr, 2 * bp.kp, b_ptr, 4 * bp.np_, bp.kp // BLOCK_K,
                             BLOCK_K // 2 * bp.np_ * 4)
            valid_rows = U.smin(b, b.sub(ie, i), U.i64(BLOCK_M))
            c_ptr = b.gep(self.C, [b.add(b.mul(i, U.i64(n)), j)], inbounds=True,
                          source_etype=U.F32)
            whole = b.icmp_signed("==", valid_rows, U.i64(BLOCK_M))
            if width < BLOCK_N:
                whole = ir.Constant(U.I1, 0)
            with b.if_else(whole) as (direct, partial):
                with direct:
                    self.tiles.store(b, c_ptr, 4 * n)
                with partial:
                    self.tiles.store(b, self.scratch, 4 * BLOCK_N)
                    with U.loop(b, 0, valid_rows, "cr") as r:
                        with U.loop(b, 0, width, "cc") as c:
                            v = b.load(b.gep(self.scratch, [b.add(b.mul(r, U.i64(BLOCK_N)), c)],
                                             inbounds=True, source_etype=U.F32), typ=U.F32)
                            b.store(v, b.gep(c_ptr, [b.add(b.mul(r, U.i64(n)), c)],
                                             inbounds=True, source_etype=U.F32))
