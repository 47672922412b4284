"""GEMM kernels: row blocks of the product, each followed by the fused epilogue while in cache.

``f(task_lo, task_hi, in_0, ..., out_0)``: a task is (batch entry, block of
rows). For each task the kernel computes that block of C -- by calling BLAS
(``rlx_blas_?gemm``, single-threaded; the tasks are what runs in parallel)
or the native register-blocked loop -- and then runs the epilogue
(bias, GELU, residual, ...) on exactly those rows. So the output is written
once and re-read from cache, not from memory.

Layout decisions are made here, from static shapes: a product whose right
operand is shared by every batch entry (a linear layer) is one tall
[batch*M, K] x [K, N] product; batched products with numpy broadcasting get
per-entry offsets baked in as constants. The epilogue's loop nest is re-split
so that its rows are runs of g = gcd(row length, N) output elements, which
makes every block of GEMM rows a whole number of epilogue rows.

Operands are read through their index maps (`GemmSpec.a_view` / `b_view`):
BLAS gets the row stride as its leading dimension (or a transpose flag when
the unit stride is along the other dim), batch entries their offsets from
constant sub-dim strides.

The native kernel (profile ``gemm = "native"``) expects op(A) and op(B) as
contiguous row-major matrices: the runtime packs them once per call and
passes them as two extra pointers after the output (A and B may be views of
one buffer). It keeps a 4 x 2-vector tile of C in registers over the K loop.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from llvmlite import ir

from rlx.backends.common.spec import GemmSpec
from rlx.backends.common.threads import PARALLEL_MIN_WORK
from rlx.ir.views import StridedView, blas_layout
from rlx.backends.llvm import blas
from rlx.backends.llvm import irutil as U
from rlx.backends.llvm.elementwise import Operands, elementwise_function
from rlx.backends.llvm.gemm_loops import (native_kernel, skinny_columns, skinny_kernel, small,
                                          small_kernel)
from rlx.backends.llvm.nestir import decompose, split_last

#: target rows per task. OpenBLAS re-packs B (the weight) on every call, so smaller
#: blocks pay for packing and for shorter macro-kernel loops: single-threaded, with the
#: fused epilogue, SAM's MLP [4096,768]x[768,3072]+GELU runs at 171/180/185/190/194 GFLOP/s
#: for 256/512/683/1024/2048-row blocks (fc2 [4096,3072]x[3072,768]: 179/195/202/207/209).
#: The epilogue costs the same on a cold tile (it is compute-bound), so a thread's whole
#: share of rows is one block unless that share is very tall.
BLOCK_ROWS = 2048
#: a single product with fewer rows than this is split over the threads by blocks of columns
#: (of COL_ALIGN multiples) instead of rows: split by rows, every thread would pack all of B
#: for a handful of rows (SAM decoder token MLP [7,256]x[256,2048]: 0.67 -> ~0.2 ms, 2 threads)
FEW_ROWS = 64
COL_ALIGN = 16
#: ... when the product has at least this many multiply-adds (else one task does it all)
COL_SPLIT_WORK = 1 << 20


@dataclass(frozen=True)
class GemmPlan:
    batch: tuple  # output batch dims (after folding a shared right operand)
    m: int
    n: int
    k: int
    #: per output batch dim, the operand's sub-dims ((size, element stride), ...): one pair,
    #: several when the operand's index map splits that dim, stride 0 where it broadcasts
    a_bdims: tuple
    b_bdims: tuple
    a_offset: int
    b_offset: int
    ta: bool
    tb: bool
    lda: int
    ldb: int
    #: element step between consecutive rows of op(A) (a row block starts r0 * a_row_step in)
    a_row_step: int
    block: int
    #: columns per task (== n unless a few-row product is split by columns, see FEW_ROWS)
    col_block: int = 0

    @property
    def nbatch(self) -> int:
        return math.prod(self.batch)

    @property
    def row_blocks(self) -> int:
        return max(1, -(-self.m // self.block))

    @property
    def col_blocks(self) -> int:
        return max(1, -(-self.n // self.col_block)) if self.col_block else 1

    @property
    def tasks(self) -> int:
        return self.nbatch * self.row_blocks * self.col_blocks if self.m and self.n else 0


def block_rows(m: int, threads: int, target: int | None = None) -> int:
    """Rows per task: about `target`, in a number of blocks that is a multiple of `threads`
    (so every thread gets the same amount of work)."""
    target = target or BLOCK_ROWS
    threads = max(1, threads)
    parts = threads * max(1, m // (threads * target))
    return max(1, -(-m // parts))


def _operand(shape, view, transpose: bool, batch: tuple):
    """(sub-dims per output batch dim, offset, (stride of op(X) rows, stride of op(X) cols))
    for operand X of logical `shape` read through `view` (None: contiguous)."""
    shape = tuple(shape)
    view = view or StridedView.contiguous(shape)
    ns = len(view.shape) - len(shape) + 1  # view dims standing for logical dim 0
    own = shape[:-2]
    lead = len(batch) - len(own)
    bdims = []
    for j, size in enumerate(batch):
        d = j - lead
        if d < 0 or own[d] == 1:
            bdims.append(((size, 0),))
            continue
        dims = range(0, ns) if d == 0 else [ns - 1 + d]
        bdims.append(tuple((view.shape[i], view.strides[i]) for i in dims))
    rs, cs = view.strides[-2:]
    return tuple(bdims), view.offset, ((cs, rs) if transpose else (rs, cs))


def _blas_op(rows: int, cols: int, steps) -> tuple[bool, int]:
    """(transposed, leading dimension) of op(X) [rows, cols] with element steps `steps`."""
    found = blas_layout(rows, cols, *steps)
    if found is None:  # the fusion passes only absorb BLAS-readable views
        raise ValueError(f"operand strides {steps} of a [{rows}, {cols}] matrix")
    return found


def _tall(a_bdims, m: int, a_row_step: int) -> bool:
    """True if A's batch entries are consecutive row blocks at one row stride."""
    want = m * a_row_step
    for dims in reversed(a_bdims):
        for size, stride in reversed(dims):
            if size == 1:
                continue
            if stride != want:
                return False
            want *= size
    return True


def plan(spec: GemmSpec, transposed_operands: bool = True, threads: int = 1,
         block: int | None = None) -> GemmPlan:
    """Static layout of `spec`; `transposed_operands=False` when the runtime packed op(A) and
    op(B) as contiguous matrices (the native kernel), so index maps and transposes are gone.

    `block` (rows per task) defaults to `block_rows(M, threads)`."""
    a_shape, b_shape = list(spec.a_shape), list(spec.b_shape)
    a_view, b_view = spec.a_view, spec.b_view
    ta, tb = spec.transpose_a, spec.transpose_b
    if not transposed_operands:
        if ta:
            a_shape[-2:] = a_shape[-1], a_shape[-2]
        if tb:
            b_shape[-2:] = b_shape[-1], b_shape[-2]
        a_view = b_view = None
        ta = tb = False
    out = spec.out_shape
    batch, m, n = tuple(out[:-2]), out[-2], out[-1]
    k = a_shape[-2] if ta else a_shape[-1]
    a_bdims, a_off, a_steps = _operand(a_shape, a_view, ta, batch)
    b_bdims, b_off, b_steps = _operand(b_shape, b_view, tb, batch)
    op_ta, lda = _blas_op(m, k, a_steps)
    op_tb, ldb = _blas_op(k, n, b_steps)
    a_row_step = a_steps[0]
    b_shared = all(st == 0 for dims in b_bdims for _, st in dims)
    if b_shared and not op_ta and batch and _tall(a_bdims, m, a_row_step):
        # one tall product: A's batch entries are consecutive row blocks
        m, batch = m * math.prod(batch), ()
        a_bdims = b_bdims = ()
        if m > 1:
            lda = max(lda, k)
    col_block = 0
    if (transposed_operands and block is None and not batch and 0 < m < FEW_ROWS
            and threads > 1 and m * n * k >= COL_SPLIT_WORK and n >= 2 * COL_ALIGN):
        col_block = COL_ALIGN * -(-n // (threads * COL_ALIGN))
        block = m
    if block is None:
        # plenty of batch entries to share out: one task per entry, never half an entry
        block = m if math.prod(batch) >= 4 * max(1, threads) else block_rows(m, threads)
    return GemmPlan(batch, m, n, k, a_bdims, b_bdims, a_off, b_off, op_ta, op_tb, lda, ldb,
                    a_row_step, max(1, min(block, m or 1)), col_block)


def _batch_offset(b: ir.IRBuilder, i, dims, off):
    """off + the element offset of batch index `i` over an operand's sub-dims."""
    if len(dims) == 1:
        (_, stride), = dims
        return b.add(off, b.mul(i, U.i64(stride))) if stride else off
    for j, (_, stride) in zip(decompose(b, i, [size for size, _ in dims]), dims):
        if stride:
            off = b.add(off, b.mul(j, U.i64(stride)))
    return off


def epilogue_rows(spec: GemmSpec, col_block: int = 0) -> int:
    """g: the epilogue nest's row length after re-splitting (divides N, and the column
    block when the product is split by columns)."""
    return math.gcd(spec.epilogue.nest.shape[-1], spec.out_shape[-1], col_block)


def epilogue_function(module: ir.Module, spec: GemmSpec, n_inputs: int, dtype: str,
                      col_block: int = 0, fastmath: bool = False):
    """(epilogue function, g) for `spec`, or (None, None) without an epilogue: the
    elementwise epilogue over rows of g output elements, called as
    ``epilogue(lo, hi, in_0, ..., out)`` on the g-rows [lo, hi) a task has just written."""
    if spec.epilogue is None:
        return None, None
    g = epilogue_rows(spec, col_block)
    e = dataclasses.replace(spec.epilogue, nest=split_last(spec.epilogue.nest, g))
    return elementwise_function(module, e, n_inputs, [dtype], name="epilogue", chunk=None,
                                fastmath=fastmath), g


def kernel_plan(spec: GemmSpec, native: bool, threads: int, dtype: str, vc) -> GemmPlan:
    """The plan the generated kernel follows (tasks included): `plan`, switched to column
    blocks when the product runs on `skinny_kernel`."""
    p = plan(spec, transposed_operands=not native, threads=threads)
    if native or not skinny_columns(p, vc, dtype):
        return p
    parts = max(1, threads) if p.m * p.n * p.k >= PARALLEL_MIN_WORK else 1
    cols = -(-p.n // parts)
    # even blocks (the kernel takes columns in pairs); one block is all n, so the epilogue
    # keeps its full row length
    return dataclasses.replace(p, block=p.m, col_block=cols + cols % 2 if parts > 1 else p.n)


def uses_blas(spec: GemmSpec, native: bool, threads: int, dtype: str, vc) -> bool:
    """True when the kernel calls BLAS (so OpenBLAS must be single-threaded meanwhile)."""
    if native:
        return False
    p = kernel_plan(spec, native, threads, dtype, vc)
    return not (small(p, dtype, vc) or skinny_columns(p, vc, dtype))


def gemm_module(spec: GemmSpec, n_inputs: int, dtype: str, title: str, native: bool,
                int_bits: int, threads: int = 1, fastmath: bool = False, vc=None) -> str:
    """IR of the GEMM + epilogue kernel: BLAS, or (`gemm_loops`) the native loop when
    `native`, the small register-tiled loop for batches of small products or the skinny
    dot-product loop for few-row products, when the target's vector shape `vc` is given."""
    p = kernel_plan(spec, native, threads, dtype, vc)
    module = U.new_module(title)
    fn = U.entry_function(module, n_inputs + 1 + (2 if native else 0))
    for a in fn.args[2:]:
        a.add_attribute("noalias")
    ops = Operands(fn, n_inputs)
    epi, g = epilogue_function(module, spec, n_inputs, dtype, p.col_block, fastmath)
    kernel = native_kernel(module, dtype, p.n, p.k, vc) if native else None
    tiny = None if native or not small(p, dtype, vc) else small_kernel(module, vc, p)
    thin = skinny_kernel(module, vc, p) if not native and skinny_columns(p, vc, dtype) else None
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    if native:  # packed op(A), op(B) after the output
        a_ptr0, b_ptr0 = fn.args[3 + n_inputs], fn.args[4 + n_inputs]
    else:
        a_ptr0, b_ptr0 = ops.ptr(spec.a), ops.ptr(spec.b)
    c_ptr0 = ops.out(0)
    ty = U.MEM[dtype]
    epi_args = list(fn.args[2:3 + n_inputs])
    with U.loop(b, fn.args[0], fn.args[1], "task") as task:
        if p.col_blocks > 1 or thin is not None:
            _column_task(b, module, p, dtype, int_bits, task, a_ptr0, b_ptr0, c_ptr0, epi, g,
                         epi_args, thin)
        else:
            if p.row_blocks == 1:
                e_idx, r0 = task, U.i64(0)
            else:
                e_idx = b.udiv(task, U.i64(p.row_blocks))
                r0 = b.mul(b.sub(task, b.mul(e_idx, U.i64(p.row_blocks))), U.i64(p.block))
            rows = b.sub(U.smin(b, b.add(r0, U.i64(p.block)), U.i64(p.m)), r0)
            idx = decompose(b, e_idx, list(p.batch)) if p.batch else []
            a_off, b_off = U.i64(p.a_offset), U.i64(p.b_offset)
            for i, a_dims, b_dims in zip(idx, p.a_bdims, p.b_bdims):
                a_off = _batch_offset(b, i, a_dims, a_off)
                b_off = _batch_offset(b, i, b_dims, b_off)
            c_row0 = b.add(b.mul(e_idx, U.i64(p.m)), r0)  # first output row of the task
            a_first = r0 if p.a_row_step == 1 else b.mul(r0, U.i64(p.a_row_step))
            a_ptr = b.gep(a_ptr0, [b.add(a_off, a_first)], inbounds=True, source_etype=ty)
            b_ptr = b.gep(b_ptr0, [b_off], inbounds=True, source_etype=ty)
            c_ptr = b.gep(c_ptr0, [b.mul(c_row0, U.i64(p.n))], inbounds=True, source_etype=ty)
            if native:
                b.call(kernel, [rows, a_ptr, b_ptr, c_ptr])
            elif tiny is not None:
                b.call(tiny, [a_ptr, b_ptr, c_ptr])
            else:
                blas.call_gemm(b, module, dtype, int_bits, p.ta, p.tb, rows, p.n, p.k, 1.0,
                               a_ptr, p.lda, b_ptr, p.ldb, 0.0, c_ptr, p.n)
            if epi is not None:
                lo = b.udiv(b.mul(c_row0, U.i64(p.n)), U.i64(g))
                hi = b.add(lo, b.udiv(b.mul(rows, U.i64(p.n)), U.i64(g)))
                b.call(epi, [lo, hi] + epi_args)
    b.ret_void()
    return str(module)


def _column_task(b: ir.IRBuilder, module: ir.Module, p: GemmPlan, dtype: str, int_bits: int,
                 task, a_ptr0, b_ptr0, c_ptr0, epi, g, epi_args, thin=None) -> None:
    """One block of columns [j0, j0 + width) of a single few-row product: BLAS (or the
    skinny kernel `thin`) on all rows and those columns of B (ldc = n), then the epilogue
    row by row on the block (g divides the block width, so each row's block is a whole
    number of epilogue rows)."""
    ty = U.MEM[dtype]
    j0 = b.mul(task, U.i64(p.col_block or p.n))
    width = b.sub(U.smin(b, b.add(j0, U.i64(p.col_block or p.n)), U.i64(p.n)), j0)
    a_ptr = b.gep(a_ptr0, [U.i64(p.a_offset)], inbounds=True, source_etype=ty)
    if thin is not None:
        b_ptr = b.gep(b_ptr0, [U.i64(p.b_offset)], inbounds=True, source_etype=ty)
        b.call(thin, [j0, b.add(j0, width), a_ptr, b_ptr, c_ptr0])
    else:
        b_first = b.mul(j0, U.i64(p.ldb)) if p.tb else j0  # column j0 of op(B)
        b_ptr = b.gep(b_ptr0, [b.add(U.i64(p.b_offset), b_first)], inbounds=True,
                      source_etype=ty)
        c_ptr = b.gep(c_ptr0, [j0], inbounds=True, source_etype=ty)
        blas.call_gemm(b, module, dtype, int_bits, p.ta, p.tb, U.i64(p.m), width, p.k, 1.0,
                       a_ptr, p.lda, b_ptr, p.ldb, 0.0, c_ptr, p.n)
    if epi is None:
        return
    with U.loop(b, 0, p.m, "erow") as r:
        lo = b.udiv(b.add(b.mul(r, U.i64(p.n)), j0), U.i64(g))
        b.call(epi, [lo, b.add(lo, b.udiv(width, U.i64(g)))] + epi_args)
