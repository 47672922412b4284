"""Blocked attention with register-tiled products: softmax(scale q k^T + rel-pos) v.

``f(task_lo, task_hi, <operand pointers>, out, scratch)``: a task is one batch
entry (e.g. a head, or a window x head) and one block of R query rows, R a
few vectors of L float32 lanes (L from the target: 16 with AVX-512). The
block is computed *transposed*: every vector holds one value for each of the
block's query rows, so the softmax reductions along the keys are plain
vector ops (no horizontal sums), and the keys and values are read where they
are (one broadcast per key and channel), never packed.

Per task, in the calling thread's scratch (`scratch_floats`):

1. Q^T (d x R) and the block's rel-pos terms rel_h^T (kh x R), rel_w^T (kw x R)
   are gathered from the operands; lanes past the entry's last row are zero.
2. S^T = scale K Q^T + bias, KT keys x nv vectors of accumulators in registers
   over the d-loop; each key's bias rel_h^T[y] + rel_w^T[x] (key = (y, x) on the
   kh x kw grid, summed first like the reference) is added as the tile is
   stored, and the running max of every row is updated. S^T (Nk x R) stays in
   the scratch (1 MB for 4096 keys x 64 rows, 256 KB for the 16 rows of an AVX2
   block: L2). While a tile is computed, the next tile's key rows are prefetched
   (the rows are strided views into a projection several MB wide, which the
   hardware prefetchers follow poorly: ~15 % on Zen 3 with the machine busy).
3. Per chunk of CJ keys: E = exp(S^T - max) in place (the loop vectorizer's
   exp, see `mathlib`), lane sums in float32 per chunk and float64 across
   chunks; then O^T (dv x R) += V^T E over the chunk, DT channels x nv vectors
   per register tile, while the chunk is in L1.
4. out[row, c] = O^T[c, row] / sum[row] for the block's valid rows: the
   normalization is applied to dv outputs per row, not to Nk scores.

The full score matrix never exists, no BLAS call is made (so OpenBLAS's own
threads never compete with the kernel threads), and no library re-packs an
operand per block. Operands are read through their index maps
(`AttentionSpec.operands`: usually strided views into one packed qkv
projection, with the batch dim split into windows x heads; each map's batch
index is unravelled with constant sizes), whatever their strides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llvmlite import ir

from rlx.backends.common.spec import AttentionSpec
from rlx.backends.llvm import irutil as U
from rlx.backends.llvm.mathlib import MathLib
from rlx.backends.llvm.nestir import decompose
from rlx.backends.llvm.vecir import Vec, VectorConfig, fold_range

#: most row vectors per block (R = NV_MAX * lanes query rows: 64 with AVX-512), by the
#: size of the register file: with 32 registers a 4-vector block still gets 6 keys per
#: tile (24 accumulators); with AVX2's 16, 4 vectors would leave 2 keys per tile (8
#: accumulators, 6 loads per 8 FMAs), so 2 vectors x 6 keys (12 accumulators, 8 loads
#: per 12 FMAs, the shape of the usual AVX2 sgemm micro-kernel) -- about 10-20 % faster
#: on Zen 3 (`benchmarks/bench_attention.py`)
NV_MAX = {16: 2, 32: 4}
#: prefetch the next score tile's key rows while the current tile is computed
PREFETCH_K = True
#: keys per exp + P.V chunk (the chunk of E, CJ x R floats, stays in L1)
CHUNK_KEYS = 128


@dataclass(frozen=True)
class OperandMap:
    """Where element (batch entry e, row r, col c) of an attention operand lives."""

    param: int  # pointer parameter (0 = the first after task_lo/task_hi)
    batch: tuple  # sizes of the (possibly split) batch dims
    batch_strides: tuple
    offset: int
    row_stride: int
    col_stride: int
    rows: int
    cols: int

    @staticmethod
    def of(param: int, view) -> "OperandMap":
        *batch, rows, cols = view.shape
        *bstrides, rs, cs = view.strides
        return OperandMap(param, tuple(batch), tuple(bstrides), view.offset, rs, cs, rows, cols)


@dataclass(frozen=True)
class Plan:
    """Static block structure of one attention kernel."""

    nb: int
    nq: int
    nk: int
    d: int
    dv: int
    rel: tuple | None
    lanes: int
    rows: int  # R: query rows per block
    nblocks: int
    nv_full: int  # vectors of a full block
    nv_last: int  # vectors of the last block of an entry
    kt: dict  # nv -> keys per S^T register tile
    dt: dict  # nv -> channels per O^T register tile

    @property
    def tasks(self) -> int:
        return self.nb * self.nblocks if self.nq and self.nk else 0

    @property
    def rl_max(self) -> int:
        return self.nv_full * self.lanes

    def offsets(self) -> dict:
        """Float offsets of the scratch regions (each a multiple of the vector size)."""
        rl = self.rl_max
        kh, kw = self.rel if self.rel is not None else (0, 0)
        sizes = [("st", self.nk * rl), ("qt", self.d * rl), ("ot", self.dv * rl),
                 ("hb", kh * rl), ("wb", kw * rl), ("sm", 2 * rl)]
        out, at = {}, 0
        for name, n in sizes:
            out[name] = at
            at += n
        out["total"] = at
        return out


def _tile(vc: VectorConfig, nv: int) -> int:
    """Accumulator rows of a register tile over nv vectors: the tile, the nv operand
    vectors and two temporaries fit in the register file."""
    return max(1, (vc.regs - nv - 2) // nv)


def tail_split(n: int, tile: int) -> list:
    """Sizes of the last two tiles (keys of S^T, channels of O^T) when the remainder of
    n / tile is thin: a tile of r < tile / 2 rows has too few accumulators to hide the
    FMA latency, so the last full tile and the remainder are split evenly (56 channels
    = 8 x 6 + 4 + 4, not 9 x 6 + 2; 49 keys of a 7x7 window = 7 x 6 + 4 + 3). Empty
    when there is nothing to balance."""
    r = n % tile
    if not r or n < tile or 2 * r >= tile:
        return []
    a = (tile + r + 1) // 2
    return [a, tile + r - a]


def plan(spec: AttentionSpec, vc: VectorConfig) -> Plan:
    nb, nq, d = spec.q_shape
    nk, dv = spec.k_shape[1], spec.v_shape[2]
    rows = max(1, min(spec.block, NV_MAX.get(vc.regs, 2) * vc.lanes, nq or 1))
    nblocks = -(-nq // rows) if nq else 0
    nv_full = -(-rows // vc.lanes)
    last = nq - (nblocks - 1) * rows if nblocks else rows
    nv_last = -(-last // vc.lanes)
    nvs = {nv_full, nv_last}
    return Plan(nb, nq, nk, d, dv, spec.rel, vc.lanes, rows, nblocks, nv_full, nv_last,
                {nv: _tile(vc, nv) for nv in nvs}, {nv: _tile(vc, nv) for nv in nvs})


def tasks(spec: AttentionSpec, vc: VectorConfig) -> int:
    return plan(spec, vc).tasks


def scratch_floats(spec: AttentionSpec, vc: VectorConfig) -> int:
    """Per-thread scratch (float32 elements, 64-byte aligned base) one task needs."""
    return plan(spec, vc).offsets()["total"]


def operand_maps(spec: AttentionSpec) -> tuple[list, int]:
    """(maps of q, k, v, rel_h, rel_w (None if absent), number of operand pointers)."""
    n_ptrs = 1 + max(op[0] for op in spec.operands if op is not None)
    return [None if op is None else OperandMap.of(op[0], op[1]) for op in spec.operands], n_ptrs


class _Block:
    """Emits the function computing one block of `nv` row vectors."""

    def __init__(self, module: ir.Module, p: Plan, spec: AttentionSpec, maps, n_ptrs: int,
                 vc: VectorConfig, nv: int):
        self.p, self.spec, self.maps, self.nv = p, spec, maps, nv
        self.vc = vc
        self.rl = nv * vc.lanes
        self.V = Vec(module, vc)
        self.math = MathLib(module)
        self.off = p.offsets()
        args = [U.I64, U.I64, U.I64] + [U.PTR] * (n_ptrs + 2)  # e, r0, rows, operands, out, scratch
        self.fn = U.internal_function(module, f"block_nv{nv}", U.VOID, args)
        self.fn.args[-1].add_attribute("noalias")
        self.fn.args[-2].add_attribute("noalias")
        self.b = ir.IRBuilder(self.fn.append_basic_block("entry"))
        self.e, self.r0, self.nrows = self.fn.args[:3]
        self.params = self.fn.args[3:3 + n_ptrs]
        self.out, self.scratch = self.fn.args[3 + n_ptrs], self.fn.args[4 + n_ptrs]
        self.align = 4 * vc.lanes
        self.avx512 = vc.lanes == 16 and vc.regs == 32

    # ---- addressing --------------------------------------------------------------------------

    def region(self, name: str):
        return self.b.gep(self.scratch, [U.i64(self.off[name])], inbounds=True,
                          source_etype=U.F32)

    def entry_base(self, m: OperandMap):
        b = self.b
        off = U.i64(m.offset)
        if math.prod(m.batch) > 1:
            for i, s in zip(decompose(b, self.e, list(m.batch)), m.batch_strides):
                if s:
                    off = b.add(off, b.mul(i, U.i64(s)))
        return off

    def element(self, m: OperandMap, base, r, c):
        b = self.b
        idx = b.add(base, r if m.row_stride == 1 else b.mul(r, U.i64(m.row_stride)))
        return b.add(idx, c if m.col_stride == 1 else b.mul(c, U.i64(m.col_stride)))

    # ---- 1. gather Q^T and the rel-pos terms ----------------------------------------------------

    def gather_t(self, m: OperandMap, base, cols: int, dest):
        """dest[c * RL + l] = operand[e, r0 + l, c] (0 for rows past the entry)."""
        b = self.b
        rl = self.rl
        with U.loop(b, 0, cols, "gc") as c:
            with U.loop(b, 0, rl, "gl") as lane:
                valid = b.icmp_signed("<", lane, self.nrows)
                r = b.add(self.r0, b.select(valid, lane, U.i64(0)))
                v = U.load(b, self.params[m.param], self.element(m, base, r, c), "f32")
                v = b.select(valid, v, ir.Constant(U.F32, 0.0))
                U.store(b, v, dest, b.add(b.mul(c, U.i64(rl)), lane), "f32")

    # ---- 2. S^T = scale K Q^T + bias, with the row max -----------------------------------------

    def scores(self, k_base, mx_init):
        p, b, V = self.p, self.b, self.V
        kt = p.kt[self.nv]
        split = tail_split(p.nk, kt)
        at = (p.nk // kt - bool(split)) * kt  # keys covered by the loop of full tiles
        mx = fold_range(b, 0, at, mx_init, lambda j0, mx: self.score_tile(j0, kt, k_base, mx),
                        name="kt", step=kt)
        for n in split or ([p.nk % kt] if p.nk % kt else []):
            mx = self.score_tile(U.i64(at), n, k_base, mx)
            at += n
        return mx

    def score_tile(self, j0, n: int, k_base, mx):
        p, b, V, nv, rl = self.p, self.b, self.V, self.nv, self.rl
        km = self.maps[1]
        kptr = self.params[km.param]
        qt, st = self.region("qt"), self.region("st")
        rows = [b.add(k_base, b.mul(b.add(j0, U.i64(k)), U.i64(km.row_stride)))
                for k in range(n)]
        if PREFETCH_K and km.col_stride == 1:
            self.prefetch_rows(kptr, [b.add(r, U.i64(n * km.row_stride)) for r in rows], p.d)

        def step(c, acc):
            qv = [V.load(b, qt, b.add(b.mul(c, U.i64(rl)), U.i64(v * V.lanes)), self.align)
                  for v in range(nv)]
            out = []
            for k in range(n):
                at = rows[k] if km.col_stride == 0 else b.add(
                    rows[k], c if km.col_stride == 1 else b.mul(c, U.i64(km.col_stride)))
                kb = V.splat(b, U.load(b, kptr, at, "f32"))
                for v in range(nv):
                    out.append(V.fma(b, qv[v], kb, acc[k * nv + v]))
            return out
        acc = fold_range(b, 0, p.d, [V.const(0.0)] * (n * nv), step, name="qk")
        scale = V.const(self.spec.scale)
        mx = list(mx)
        for k in range(n):
            j = b.add(j0, U.i64(k))
            if p.rel is not None:
                kw = p.rel[1]
                y = b.udiv(j, U.i64(kw))
                x = b.sub(j, b.mul(y, U.i64(kw)))
                hb, wb = self.region("hb"), self.region("wb")
            for v in range(nv):
                s = b.fmul(acc[k * nv + v], scale)
                if p.rel is not None:
                    lane0 = U.i64(v * V.lanes)
                    h = V.load(b, hb, b.add(b.mul(y, U.i64(rl)), lane0), self.align)
                    w = V.load(b, wb, b.add(b.mul(x, U.i64(rl)), lane0), self.align)
                    s = b.fadd(s, b.fadd(h, w))
                V.store(b, s, st, b.add(b.mul(j, U.i64(rl)), U.i64(v * V.lanes)), self.align)
                # s > mx ? s : mx: one vmaxps (maxnum's NaN handling costs a compare and a
                # blend per vector; a NaN score still leaves the max alone, as maxnum would)
                mx[v] = b.select(b.fcmp_ordered(">", s, mx[v]), s, mx[v])
        return mx

    def prefetch_rows(self, ptr, starts, cols: int):
        """Prefetch (for reading, into all cache levels) `cols` floats from each start."""
        b = self.b
        fn = U.intrinsic(b.module, "llvm.prefetch.p0", U.VOID,
                         [ir.PointerType(), U.I32, U.I32, U.I32])
        for at in starts:
            for c in range(0, cols, 16):
                addr = b.gep(ptr, [b.add(at, U.i64(c))], inbounds=False, source_etype=U.F32)
                b.call(fn, [addr, ir.Constant(U.I32, 0), ir.Constant(U.I32, 3),
                            ir.Constant(U.I32, 1)])

    # ---- 3. exp and O^T += V^T E, chunk by chunk -------------------------------------------------

    def exp_chunk(self, j0, j1, mx):
        """E = exp(S^T - max) over keys [j0, j1) in place; the float64 row sums += the
        chunk's float32 sums."""
        b, V, nv, rl = self.b, self.V, self.nv, self.rl
        st = self.region("st")

        def step(j, ps):
            out = []
            for v in range(nv):
                at = b.add(b.mul(j, U.i64(rl)), U.i64(v * V.lanes))
                ev = self.math.exp_f32_nonpos(b, b.fsub(V.load(b, st, at, self.align), mx[v]),
                                                avx512=self.avx512)
                V.store(b, ev, st, at, self.align)
                out.append(b.fadd(ps[v], ev))
            return out
        ps = fold_range(b, j0, j1, [V.const(0.0)] * nv, step, name="ej")
        dvec = ir.VectorType(U.F64, V.lanes)
        sm = self.region("sm")
        for v in range(nv):
            slot = b.gep(sm, [U.i64(2 * v * V.lanes)], inbounds=True, source_etype=U.F32)
            total = b.fadd(b.load(slot, typ=dvec, align=8), b.fpext(ps[v], dvec))
            b.store(total, slot, align=8)

    def pv_chunk(self, j0, j1, v_base):
        p, b = self.p, self.b
        dt = p.dt[self.nv]
        split = tail_split(p.dv, dt)
        at = (p.dv // dt - bool(split)) * dt  # channels covered by the loop of full tiles
        with U.loop(b, 0, at, "dt", step=dt) as c0:
            self.pv_tile(c0, dt, j0, j1, v_base)
        for n in split or ([p.dv % dt] if p.dv % dt else []):
            self.pv_tile(U.i64(at), n, j0, j1, v_base)
            at += n

    def pv_tile(self, c0, n: int, j0, j1, v_base):
        b, V, nv, rl = self.b, self.V, self.nv, self.rl
        vm = self.maps[2]
        vptr = self.params[vm.param]
        st, ot = self.region("st"), self.region("ot")
        slots = [b.add(b.mul(b.add(c0, U.i64(i)), U.i64(rl)), U.i64(v * V.lanes))
                 for i in range(n) for v in range(nv)]
        init = [V.load(b, ot, s, self.align) for s in slots]
        cols = [c0 if i == 0 else b.add(c0, U.i64(i)) for i in range(n)]

        def step(j, acc):
            ev = [V.load(b, st, b.add(b.mul(j, U.i64(rl)), U.i64(v * V.lanes)), self.align)
                  for v in range(nv)]
            row = b.add(v_base, j if vm.row_stride == 1 else b.mul(j, U.i64(vm.row_stride)))
            out = []
            for i in range(n):
                at = b.add(row, cols[i] if vm.col_stride == 1 else
                           b.mul(cols[i], U.i64(vm.col_stride)))
                vb = V.splat(b, U.load(b, vptr, at, "f32"))
                for v in range(nv):
                    out.append(V.fma(b, ev[v], vb, acc[i * nv + v]))
            return out
        acc = fold_range(b, j0, j1, init, step, name="pv")
        for s, a in zip(slots, acc):
            V.store(b, a, ot, s, self.align)

    # ---- the whole block -------------------------------------------------------------------------

    def emit(self) -> ir.Function:
        p, b, V, rl = self.p, self.b, self.V, self.rl
        qm, km, vm, hm, wm = self.maps
        # 1. Q^T and the rel-pos terms
        self.gather_t(qm, self.entry_base(qm), p.d, self.region("qt"))
        if p.rel is not None:
            self.gather_t(hm, self.entry_base(hm), p.rel[0], self.region("hb"))
            self.gather_t(wm, self.entry_base(wm), p.rel[1], self.region("wb"))
        # 2. scores and row max
        mx = self.scores(self.entry_base(km), [V.const(float("-inf"))] * self.nv)
        # 3. exp and P.V per chunk
        ot = self.region("ot")
        with U.loop(b, 0, p.dv * rl, "oz") as i:
            U.store(b, ir.Constant(U.F32, 0.0), ot, i, "f32")
        sm = b.gep(self.scratch, [U.i64(self.off["sm"])], inbounds=True, source_etype=U.F32)
        with U.loop(b, 0, rl, "sz") as lane:
            b.store(ir.Constant(U.F64, 0.0), b.gep(sm, [lane], inbounds=True, source_etype=U.F64))
        v_base = self.entry_base(vm)
        with U.loop(b, 0, p.nk, "ch", step=CHUNK_KEYS) as j0:
            j1 = U.smin(b, b.add(j0, U.i64(CHUNK_KEYS)), U.i64(p.nk))
            self.exp_chunk(j0, j1, mx)
            self.pv_chunk(j0, j1, v_base)
        # 4. normalized rows out
        out_row0 = b.add(b.mul(self.e, U.i64(p.nq * p.dv)), b.mul(self.r0, U.i64(p.dv)))
        with U.loop(b, 0, self.nrows, "or") as lane:
            s = b.load(b.gep(sm, [lane], inbounds=True, source_etype=U.F64), typ=U.F64)
            inv = b.fptrunc(b.fdiv(ir.Constant(U.F64, 1.0), s), U.F32)
            orow = b.add(out_row0, b.mul(lane, U.i64(p.dv)))
            with U.loop(b, 0, p.dv, "oc") as c:
                val = U.load(b, ot, b.add(b.mul(c, U.i64(rl)), lane), "f32")
                U.store(b, b.fmul(val, inv), self.out, b.add(orow, c), "f32")
        b.ret_void()
        return self.fn


def attention_module(spec: AttentionSpec, title: str, vc: VectorConfig) -> str:
    """IR of the blocked attention kernel (see the module doc)."""
    p = plan(spec, vc)
    maps, n_ptrs = operand_maps(spec)
    module = U.new_module(title)
    fn = U.entry_function(module, n_ptrs + 2)
    fn.args[2 + n_ptrs].add_attribute("noalias")  # out
    fn.args[3 + n_ptrs].add_attribute("noalias")  # scratch
    blocks = {nv: _Block(module, p, spec, maps, n_ptrs, vc, nv).emit()
              for nv in sorted({p.nv_full, p.nv_last})}
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    ptrs = list(fn.args[2:])
    with U.loop(b, fn.args[0], fn.args[1], "task") as task:
        e = b.udiv(task, U.i64(p.nblocks))
        blk = b.sub(task, b.mul(e, U.i64(p.nblocks)))
        r0 = b.mul(blk, U.i64(p.rows))
        nrows = b.sub(U.smin(b, b.add(r0, U.i64(p.rows)), U.i64(p.nq)), r0)
        if p.nv_last == p.nv_full:
            b.call(blocks[p.nv_full], [e, r0, nrows] + ptrs)
        else:
            is_last = b.icmp_unsigned("==", blk, U.i64(p.nblocks - 1))
            with b.if_else(is_last) as (then, otherwise):
                with then:
                    b.call(blocks[p.nv_last], [e, r0, nrows] + ptrs)
                with otherwise:
                    b.call(blocks[p.nv_full], [e, r0, nrows] + ptrs)
    b.ret_void()
    return str(module)
