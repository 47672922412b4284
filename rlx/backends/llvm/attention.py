"""Blocked attention: softmax(scale q k^T + decomposed rel-pos) v without the full score matrix.

``f(task_lo, task_hi, <operand pointers>, out, scratch)``: a task is one
batch entry (batch x heads) and one block of `block` query rows. Per task:

1. S = scale * Q_blk K^T into the thread's scratch block (BLAS, alpha = scale);
2. per row, in three passes over the row while it is in L1: S += rel_h[y] +
   rel_w[x] on the kh x kw key grid (the reference's order: the two biases are
   summed first); the row max (`llvm.maxnum`: NaN scores still give NaN rows,
   through exp); e = exp(S - max) with the vectorized exp, stored and summed
   (float32 chunks at full vector width, chunk sums in float64);
3. out[blk] = E V (BLAS), and each of the Dv outputs of a row is multiplied by
   1/sum -- Dv multiplies per row instead of Nk.

So the score block is written once, normalized in cache row by row, and
consumed by the second product; global attention over 4096 tokens never
materializes its 4096 x 4096 matrix. `scratch` is per calling thread
(block x Nk scores, then block reciprocal sums).

Operands are read through their index maps (`AttentionSpec.operands`): q, k
and v usually are strided views into one packed qkv projection, with the
batch dim split into windows x heads. Each map's batch index is unravelled
with constant sizes; BLAS gets the row stride as its leading dimension (and
a transpose flag when the unit stride is the other dim). When a q/k/v map has
no unit stride at all, or for the native GEMM (contiguous operands only),
the runtime packs the operands instead ("packed" layout: q, k (or k^T for
the native kernel), v, rel_h, rel_w as contiguous [B, rows, cols]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llvmlite import ir

from rlx.backends.common.spec import AttentionSpec
from rlx.backends.llvm import blas
from rlx.backends.llvm import irutil as U
from rlx.backends.llvm.gemm import native_kernel
from rlx.backends.llvm.mathlib import MathLib
from rlx.backends.llvm.nestir import decompose


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

    def blas_layout(self) -> tuple[bool, int] | None:
        """(transposed, leading dimension) for BLAS, or None without a unit stride."""
        if self.cols == 1 or self.col_stride == 1:
            return False, max(self.row_stride if self.rows > 1 else self.cols, self.cols, 1)
        if self.rows == 1 or self.row_stride == 1:
            return True, max(self.col_stride if self.cols > 1 else self.rows, self.rows, 1)
        return None

    @staticmethod
    def of(param: int, view) -> "OperandMap":
        *batch, rows, cols = view.shape
        *bstrides, rs, cs = view.strides
        return OperandMap(param, tuple(batch), tuple(bstrides), view.offset, rs, cs, rows, cols)

    @staticmethod
    def contiguous(param: int, shape) -> "OperandMap":
        b, rows, cols = shape
        return OperandMap(param, (b,), (rows * cols,), 0, cols, 1, rows, cols)


def block_rows(spec: AttentionSpec) -> int:
    return max(1, min(spec.block, spec.q_shape[1]))


def tasks(spec: AttentionSpec) -> int:
    b, nq, _ = spec.q_shape
    return b * -(-nq // block_rows(spec)) if nq else 0


def layout(spec: AttentionSpec, native: bool) -> str:
    """"mapped" (read the node's inputs through index maps) or "packed" (see module doc)."""
    if native or not spec.operands:
        return "packed"
    for op in spec.operands[:3]:
        if OperandMap.of(0, op[1]).blas_layout() is None:
            return "packed"
    return "mapped"


def operand_maps(spec: AttentionSpec, native: bool) -> tuple[list, int]:
    """(maps of q, k, v, rel_h, rel_w (None if absent), number of operand pointers)."""
    b, nq, d = spec.q_shape
    nk, dv = spec.k_shape[1], spec.v_shape[2]
    if layout(spec, native) == "mapped":
        n_ptrs = 1 + max(op[0] for op in spec.operands if op is not None)
        return [None if op is None else OperandMap.of(op[0], op[1])
                for op in spec.operands], n_ptrs
    shapes = [(b, nq, d), (b, d, nk) if native else (b, nk, d), (b, nk, dv)]
    if spec.rel is not None:
        shapes += [(b, nq, spec.rel[0]), (b, nq, spec.rel[1])]
    maps = [OperandMap.contiguous(i, s) for i, s in enumerate(shapes)]
    return maps + [None] * (5 - len(maps)), 5


def attention_module(spec: AttentionSpec, title: str, int_bits: int, native: bool = False) -> str:
    """IR of the blocked attention kernel (see the module doc for the two layouts)."""
    nb, nq, d = spec.q_shape
    nk = spec.k_shape[1]
    dv = spec.v_shape[2]
    blk = block_rows(spec)
    nblocks = -(-nq // blk)
    maps, n_ptrs = operand_maps(spec, native)
    qm, km, vm, hm, wm = maps
    module = U.new_module(title)
    fn = U.entry_function(module, n_ptrs + 2)
    fn.args[2 + n_ptrs].add_attribute("noalias")  # out
    fn.args[3 + n_ptrs].add_attribute("noalias")  # scratch
    params = fn.args[2:2 + n_ptrs]
    out, scratch = fn.args[2 + n_ptrs], fn.args[3 + n_ptrs]
    math_ = MathLib(module)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    f32 = U.F32
    maxnum = U.intrinsic(module, "llvm.maxnum.f32", f32, [f32, f32])

    def at(ptr, index):
        return b.gep(ptr, [index], inbounds=True, source_etype=f32)

    def entry_base(m: OperandMap, e):
        off = U.i64(m.offset)
        if math.prod(m.batch) > 1:
            for i, s in zip(decompose(b, e, list(m.batch)), m.batch_strides):
                if s:
                    off = b.add(off, b.mul(i, U.i64(s)))
        return off

    def element(m: OperandMap, base, r, c):
        idx = b.add(base, b.mul(r, U.i64(m.row_stride)) if m.row_stride != 1 else r)
        return b.add(idx, b.mul(c, U.i64(m.col_stride)) if m.col_stride != 1 else c)

    with U.loop(b, fn.args[0], fn.args[1], "task") as task:
        e = b.udiv(task, U.i64(nblocks))
        r0 = b.mul(b.sub(task, b.mul(e, U.i64(nblocks))), U.i64(blk))
        rows = b.sub(U.smin(b, b.add(r0, U.i64(blk)), U.i64(nq)), r0)
        q_base, k_base, v_base = (entry_base(m, e) for m in (qm, km, vm))
        q_blk = at(params[qm.param], b.add(q_base, b.mul(r0, U.i64(qm.row_stride))))
        k_e, v_e = at(params[km.param], k_base), at(params[vm.param], v_base)
        # 1. S = scale * Q_blk K^T (native: S = Q_blk K^T with k packed as K^T, scaled below)
        if native:
            b.call(native_kernel(module, "f32", nk, d), [rows, q_blk, k_e, scratch])
        else:
            ta, lda = qm.blas_layout()
            k_trans, ldb = km.blas_layout()
            blas.call_gemm(b, module, "f32", int_bits, ta, not k_trans, rows, nk, d,
                           float(spec.scale), q_blk, lda, k_e, ldb, 0.0, scratch, nk)
        # 2. bias + row max in one pass, then e = exp(s - max) and its sum; 1/sum per row is
        #    kept (after the score block) and applied to the Dv outputs, not to the Nk scores
        h_base = entry_base(hm, e) if hm is not None else None
        w_base = entry_base(wm, e) if wm is not None else None
        inv_rows = at(scratch, U.i64(blk * nk))
        scale = ir.Constant(f32, float(spec.scale))
        with U.loop(b, 0, rows, "r") as r:
            row = at(scratch, b.mul(r, U.i64(nk)))
            qr = b.add(r0, r)  # query row within the entry

            if native or spec.rel is not None:  # scores finished in place, one pass
                kh, kw = spec.rel if spec.rel is not None else (1, nk)
                with U.loop(b, 0, kh, "y") as y:
                    seg = b.mul(y, U.i64(kw))
                    h = None
                    if spec.rel is not None:
                        h = U.load(b, params[hm.param], element(hm, h_base, qr, y), "f32")
                    with U.loop(b, 0, kw, "x") as x:
                        i = b.add(seg, x)
                        v = U.load(b, row, i, "f32")
                        if native:
                            v = b.fmul(v, scale)
                        if h is not None:
                            wv = U.load(b, params[wm.param], element(wm, w_base, qr, x), "f32")
                            v = b.fadd(v, b.fadd(h, wv))
                        U.store(b, v, row, i, "f32")
            m = U.reduce_range(b, 0, nk, ir.Constant(f32, float("-inf")),
                               lambda i, acc: b.call(maxnum, [acc, U.load(b, row, i, "f32")]),
                               name="mx")

            def exp_store(i):
                ev = math_.unary(b, "exp", b.fsub(U.load(b, row, i, "f32"), m))
                U.store(b, ev, row, i, "f32")
                return ev
            total = U.chunked_sum(b, nk, exp_store, name="es")
            U.store(b, b.fptrunc(b.fdiv(ir.Constant(U.F64, 1.0), total), f32), inv_rows, r,
                    "f32")
        # 3. out[blk] = E V, then each output row times its 1/sum
        o_blk = at(out, b.add(b.mul(e, U.i64(nq * dv)), b.mul(r0, U.i64(dv))))
        if native:
            b.call(native_kernel(module, "f32", dv, nk), [rows, scratch, v_e, o_blk])
        else:
            v_trans, ldv = vm.blas_layout()
            blas.call_gemm(b, module, "f32", int_bits, False, v_trans, rows, dv, nk, 1.0,
                           scratch, nk, v_e, ldv, 0.0, o_blk, dv)
        with U.loop(b, 0, rows, "o") as r:
            inv = U.load(b, inv_rows, r, "f32")
            orow = at(o_blk, b.mul(r, U.i64(dv)))
            with U.loop(b, 0, dv, "oc") as c:
                U.store(b, b.fmul(U.load(b, orow, c, "f32"), inv), orow, c, "f32")
    b.ret_void()
    return str(module)

