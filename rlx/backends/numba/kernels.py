"""Runtime side of numba kernels: build the dense views, split tasks, call.

Each class wraps one compiled function (or numpy calls, for GEMMs and host
data movement) behind the `Kernel` protocol: ``kernel(inputs, outputs)``
writes into the preallocated outputs.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from rlx.backends.base import KernelInfo
from rlx.backends.common.nest import Access, LoopNest
from rlx.backends.common.spec import OUT, AttentionSpec, GemmSpec, HostSpec
from rlx.backends.common import threads
from rlx.backends.common.host import run_host
from rlx.ir.types import numpy_dtype


def _view_maker(acc: Access, nest: LoopNest, itemsize: int):
    dims = acc.dims()
    shape = tuple(nest.shape[d] for d in dims) or (1,)
    strides = tuple(acc.strides[d] * itemsize for d in dims) or (0,)
    offset = acc.offset * itemsize

    def make(buf: np.ndarray) -> np.ndarray:
        if not buf.flags.c_contiguous:  # e.g. a weight the caller bound as a strided view
            buf = np.ascontiguousarray(buf)
        return np.ndarray(shape, buf.dtype, buffer=buf, offset=offset, strides=strides)
    return make


class NestKernel:
    """An elementwise or norm kernel: fn(task_lo, task_hi, *dense views)."""

    def __init__(self, fn, nest: LoopNest, in_dtypes, out_dtypes, n_tasks: int, cost: int,
                 info: KernelInfo, nthreads: int = 1):
        self.fn = fn
        self.nest = nest
        self.nthreads = nthreads
        self.info = info
        self.n_tasks = n_tasks
        self.work = nest.numel * cost
        self.inputs = [(a.arg, _view_maker(a, nest, numpy_dtype(dt).itemsize))
                       for a, dt in zip(nest.inputs, in_dtypes)]
        self.outputs = [(a.arg, _view_maker(a, nest, numpy_dtype(dt).itemsize))
                        for a, dt in zip(nest.outputs, out_dtypes)]

    def views(self, inputs, outputs) -> tuple:
        arrays = [make(outputs[0] if arg == OUT else inputs[arg]) for arg, make in self.inputs]
        arrays += [make(outputs[arg]) for arg, make in self.outputs]
        return tuple(arrays)

    def __call__(self, inputs, outputs) -> None:
        threads.run_tasks(self.fn, self.n_tasks, self.views(inputs, outputs), self.work,
                          self.nthreads)


class GemmKernel:
    """matmul into the output (BLAS through numpy, or the native kernel), then the epilogue.

    BLAS runs single-threaded; the product is split into row blocks (or batch
    entries) over the kernel threads, so BLAS threads and kernel threads never
    compete for the cores.
    """

    def __init__(self, spec: GemmSpec, epilogue: NestKernel | None, native, info: KernelInfo,
                 nthreads: int = 1):
        self.spec = spec
        self.nthreads = nthreads
        self.epilogue = epilogue
        self.native = native
        self.info = info
        k = spec.a_shape[-2] if spec.transpose_a else spec.a_shape[-1]
        self.work = math.prod(spec.out_shape) * k
        # Row-blocked product + epilogue: when the epilogue's tasks are whole output rows,
        # each thread applies it to a block of rows right after computing them (still in
        # cache) instead of re-reading the whole output afterwards.
        self.tasks_per_row = None
        rows = math.prod(spec.out_shape[:-1])
        if epilogue is not None and native is None and len(spec.b_shape) == 2 and \
                not spec.transpose_a:
            nest = epilogue.nest
            if nest.shape[-1] == spec.out_shape[-1] and math.prod(nest.shape[:-1]) == rows \
                    and epilogue.n_tasks % rows == 0:  # (tasks of whole-row blocks do not split)
                self.tasks_per_row = epilogue.n_tasks // rows

    def __call__(self, inputs, outputs) -> None:
        s = self.spec
        a, b = inputs[s.a], inputs[s.b]
        if s.a_view is not None:  # an operand read through its index map (numpy copies if
            a = _strided(a, s.a_view).reshape(s.a_shape)  # the split batch dims need it)
        if s.b_view is not None:
            b = _strided(b, s.b_view).reshape(s.b_shape)
        if s.transpose_a:
            a = np.swapaxes(a, -1, -2)
        if s.transpose_b:
            b = np.swapaxes(b, -1, -2)
        out = outputs[0].reshape(s.out_shape)
        if self.native is not None:
            self.native(a, b, out, self.nthreads)
        else:
            # A small product is over before a hand-off to another thread would be.
            nthreads = self.nthreads if self.work >= GEMM_PARALLEL_MIN_WORK else 1
            with threads.single_threaded_blas():
                if self.tasks_per_row is not None and a.flags.c_contiguous and \
                        math.prod(s.out_shape[:-1]) >= COLUMN_SPLIT_ROWS:
                    self._blocked(a.reshape(-1, a.shape[-1]), b,
                                  out.reshape(-1, out.shape[-1]), inputs, outputs)
                    return
                parallel_matmul(a, b, out, self.work, nthreads)
        if self.epilogue is not None:
            self.epilogue(inputs, outputs)


    def _blocked(self, a2, b, out2, inputs, outputs) -> None:
        epi = self.epilogue
        views = epi.views(inputs, outputs)
        tpr = self.tasks_per_row
        block = GEMM_BLOCK_ROWS

        def part(lo, hi):
            for r0 in range(lo, hi, block):
                r1 = min(hi, r0 + block)
                np.matmul(a2[r0:r1], b, out=out2[r0:r1])
                epi.fn(r0 * tpr, r1 * tpr, *views)
        threads.run_tasks(part, out2.shape[0], (), self.work, self.nthreads)


#: a GEMM of fewer multiply-adds (~20 us on one core) runs on the calling thread
GEMM_PARALLEL_MIN_WORK = 1 << 21
#: a 2-D product with fewer rows is split over the threads by columns: split by rows,
#: every thread would pack all of B (a token-side GEMM: 7 rows x a 2 MB weight)
COLUMN_SPLIT_ROWS = 64

#: rows per GEMM block when the epilogue is applied block by block. Smaller blocks keep
#: the tile in a nearer cache but make OpenBLAS re-pack the weight more often; the
#: epilogues are compute-bound, so big blocks win (see rlx.backends.llvm.gemm.BLOCK_ROWS).
GEMM_BLOCK_ROWS = 2048


def parallel_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray, work: int,
                    nthreads: int = 1) -> None:
    """np.matmul(a, b, out=out) split over the kernel threads (BLAS itself single-threaded)."""
    if b.ndim == 2 and a.ndim > 2 and a.flags.c_contiguous:
        a = a.reshape(-1, a.shape[-1])  # one tall product instead of a batch of small ones
        out = out.reshape(-1, out.shape[-1])
    if a.ndim == 2 and b.ndim == 2:
        rows, cols = out.shape
        if rows < COLUMN_SPLIT_ROWS and nthreads > 1:
            step = 64  # columns per task: whole cache lines of the output rows

            def part(lo, hi):
                c0, c1 = lo * step, min(cols, hi * step)
                if c1 > c0:
                    np.matmul(a, b[:, c0:c1], out=out[:, c0:c1])
            threads.run_tasks(part, -(-cols // step), (), work, nthreads)
            return

        def part(lo, hi):
            if hi > lo:
                np.matmul(a[lo:hi], b, out=out[lo:hi])
        threads.run_tasks(part, rows, (), work, nthreads)
        return
    batch = out.shape[:-2]
    a3 = np.broadcast_to(a, batch + a.shape[-2:]).reshape((-1,) + a.shape[-2:]) \
        if a.shape[:-2] != batch else a.reshape((-1,) + a.shape[-2:])
    b3 = np.broadcast_to(b, batch + b.shape[-2:]).reshape((-1,) + b.shape[-2:]) \
        if b.shape[:-2] != batch else b.reshape((-1,) + b.shape[-2:])
    o3 = out.reshape((-1,) + out.shape[-2:])

    def part(lo, hi):
        if hi > lo:
            np.matmul(a3[lo:hi], b3[lo:hi], out=o3[lo:hi])
    threads.run_tasks(part, o3.shape[0], (), work, nthreads)


class NativeGemm:
    """Batched product with the generated loop kernel (profile gemm = "native")."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, a, b, out, nthreads: int = 1) -> None:
        batch = out.shape[:-2]
        m, n = out.shape[-2:]
        k = a.shape[-1]
        a3 = np.ascontiguousarray(np.broadcast_to(a, batch + (m, k))).reshape(-1, m, k)
        b3 = np.ascontiguousarray(np.broadcast_to(b, batch + (k, n))).reshape(-1, k, n)
        c3 = out.reshape(-1, m, n)
        threads.run_tasks(self.fn, c3.shape[0] * m, (a3, b3, c3), c3.size * k, nthreads)


def _strided(buf: np.ndarray, view) -> np.ndarray:
    """`buf` (contiguous) read through a StridedView (element offset and strides)."""
    if view.is_contiguous and buf.shape == view.shape:
        return buf
    if not buf.flags.c_contiguous:
        buf = np.ascontiguousarray(buf)
    size = buf.itemsize
    return np.ndarray(view.shape, buf.dtype, buffer=buf, offset=view.offset * size,
                      strides=tuple(st * size for st in view.strides))


def _entry(x: np.ndarray, bi: int) -> np.ndarray:
    """Batch entry `bi` of an operand whose batch dim may be split ([b1, b2, N, D])."""
    if x.ndim == 3:
        return x[bi]
    return x[np.unravel_index(bi, x.shape[:-2])]


_local = threading.local()


def score_scratch(n: int) -> np.ndarray:
    """A per-thread float32 buffer of at least n elements, shared by all attention kernels
    (a thread runs one task at a time), so scratch memory does not grow with the model."""
    buf = getattr(_local, "scores", None)
    if buf is None or buf.size < n:
        buf = _local.scores = np.empty(n, np.float32)
    return buf


class AttentionKernel:
    """Blocked softmax(q kᵀ·scale + rel-pos) v. A task is (batch entry, block of query
    rows): GEMM into a per-thread score block, bias + softmax in place, GEMM into the
    output. The full score matrix never exists; tasks are split over the threads."""

    def __init__(self, spec: AttentionSpec, softmax_fn, info: KernelInfo, nthreads: int = 1):
        self.spec = spec
        self.nthreads = nthreads
        self.fn = softmax_fn
        self.info = info
        b, nq, _ = spec.q_shape
        self.nk = spec.k_shape[1]
        self.block = min(spec.block, nq)
        self.nblocks = -(-nq // self.block)
        self.n_tasks = b * self.nblocks
        self._empty = np.zeros((1, 1, 1), np.float32)
        self.work = b * nq * self.nk * (spec.q_shape[2] + spec.v_shape[2] + 8)

    def _part(self, lo, hi, q, kt, v, rh, rw, out):  # kt: k, transposed per entry below
        scratch = score_scratch(self.block * self.nk + self.block)
        inv_all = scratch[self.block * self.nk:]
        scratch = scratch[:self.block * self.nk]
        scale = np.float32(self.spec.scale)
        has_rel = rh is not None
        nq = self.spec.q_shape[1]
        for task in range(lo, hi):
            bi, blk = divmod(task, self.nblocks)
            r0 = blk * self.block
            r1 = min(nq, r0 + self.block)
            rows = r1 - r0
            s = scratch[:rows * self.nk].reshape(1, rows, self.nk)
            np.matmul(_entry(q, bi)[r0:r1], np.swapaxes(_entry(kt, bi), 0, 1), out=s[0])
            if has_rel:  # small row blocks, made contiguous so the bias loop vectorizes
                h = np.ascontiguousarray(_entry(rh, bi)[None, r0:r1])
                w = np.ascontiguousarray(_entry(rw, bi)[None, r0:r1])
            else:
                h = w = self._empty
            inv = inv_all[:rows]
            self.fn(0, rows, s, h, w, scale, has_rel, inv)
            dest = out[bi, r0:r1]
            np.matmul(s[0], _entry(v, bi), out=dest)
            dest *= inv[:, None]  # softmax normalization, deferred to the narrow output

    def __call__(self, inputs, outputs) -> None:
        q, k, v, rh, rw = [None if op is None else _strided(inputs[op[0]], op[1])
                           for op in self.spec.operands]
        with threads.single_threaded_blas():
            threads.run_tasks(self._part, self.n_tasks, (q, k, v, rh, rw, outputs[0]),
                              self.work, self.nthreads)


class HostKernel:
    """Data movement through numpy (pad, concat, gather, im2col, reductions, fills)."""

    def __init__(self, spec: HostSpec, info: KernelInfo, nthreads: int = 1):
        self.spec = spec
        self.info = info
        self.nthreads = nthreads

    def __call__(self, inputs, outputs) -> None:
        run_host(self.spec, inputs, outputs, self.nthreads)


def cost_of(program) -> int:
    """Rough per-element work of a scalar program (transcendentals count more)."""
    heavy = {"exp", "erf", "tanh", "log", "sin", "cos", "pow", "sqrt", "div"}
    return 1 + sum(8 if i.prim in heavy else 1 for i in program.instrs)


def numel(shape) -> int:
    return math.prod(shape)
