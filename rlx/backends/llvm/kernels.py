"""Runtime side of llvm kernels: numpy buffers in, one foreign call per thread chunk.

Every compiled kernel has the signature ``f(task_lo, task_hi, ptr...)`` and is
called through ctypes, which releases the GIL for the duration of the call,
so the task range is split over threads and the chunks really run in
parallel: handed to the native fork-join's spinning workers
(`rlx.backends.llvm.forkjoin`), or to the shared kernel thread pool when a
kernel wraps its entry point (attention: per-thread scratch) or another
thread owns the fork-join. While a kernel that calls BLAS runs, OpenBLAS is set
to one thread (the pool is the parallelism), so `threads` cores are busy,
never more; its previous setting is restored afterwards.
"""

from __future__ import annotations

import ctypes
import threading
import weakref

import numpy as np

from rlx.backends.base import KernelInfo
from rlx.backends.common import threads  # the kernel pool and BLAS control shared by backends
from rlx.backends.common.host import run_host
from rlx.backends.llvm import forkjoin
from rlx.errors import RlxError


#: id(view) -> (weak reference to the view, its data address); see `_address`
_addresses: dict[int, tuple] = {}
ADDRESSES_KEPT = 1 << 14


def _address(a: np.ndarray | None, keep: list) -> int | None:
    """The data address of `a` (made contiguous first, the copy kept alive by `keep`).

    Reading it (``__array_interface__``) costs ~1 us, several times per kernel call; a
    plan passes the same arena and weight views on every call, so the address of a view
    (an array that does not own its memory, hence cannot be resized) is remembered
    under its id, checked against a weak reference to that very object."""
    if a is None:
        return None
    hit = _addresses.get(id(a))
    if hit is not None and hit[0]() is a:
        return hit[1]
    if not a.flags.c_contiguous:
        a = np.ascontiguousarray(a)
        keep.append(a)
        return a.__array_interface__["data"][0]
    addr = a.__array_interface__["data"][0]
    if a.base is not None:
        if len(_addresses) >= ADDRESSES_KEPT:
            _addresses.clear()
        _addresses[id(a)] = (weakref.ref(a), addr)
    return addr


class PlanCall:
    """The llvm backend's run context (see `LLVMBackend.run_context`)."""

    def __enter__(self):
        forkjoin.wake()
        self._blas = threads.single_threaded_blas()
        self._blas.__enter__()
        return self

    def __exit__(self, *exc):
        self._blas.__exit__(*exc)
        forkjoin.park()
        return False


class CompiledKernel:
    """A generated function over `n_tasks` tasks of one node."""

    def __init__(self, loaded, n_ptrs: int, n_tasks: int, work: int, nthreads: int,
                 info: KernelInfo, unusable: str | None = None, calls_blas: bool = False):
        proto = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64,
                                 *([ctypes.c_void_p] * n_ptrs))
        self.fn = proto(loaded.address)
        self.fn_address = loaded.address
        self._tracker = loaded.tracker  # keeps the code mapped
        self.n_tasks = n_tasks
        self.work = work
        self.nthreads = nthreads
        self.info = info
        self.unusable = unusable
        #: BLAS calls inside tasks: OpenBLAS runs single-threaded meanwhile (the tasks
        #: are the parallelism), then gets its previous setting back
        self.calls_blas = calls_blas

    def _run(self, fn, ptrs) -> None:
        if self.calls_blas:
            with threads.single_threaded_blas():
                self._split(fn, ptrs)
        else:
            self._split(fn, ptrs)

    def _split(self, fn, ptrs) -> None:
        """The task range over the threads: through the native fork-join when the entry
        point itself is called (no per-thread Python wrapper), else the thread pool."""
        if (fn is self.fn and self.nthreads > 1 and self.n_tasks > 1
                and self.work >= threads.PARALLEL_MIN_WORK):
            fj = forkjoin.get(self.nthreads)
            if fj is not None and fj.try_run(self.fn_address, fn, self.n_tasks, ptrs,
                                             self.nthreads):
                return
        threads.run_tasks(fn, self.n_tasks, ptrs, self.work, self.nthreads)

    def prepare(self, inputs, outputs):
        """The operand arrays actually passed (subclasses pack operands here)."""
        return list(inputs) + list(outputs)

    def __call__(self, inputs, outputs) -> None:
        if self.unusable:
            raise RlxError(self.unusable)
        if self.n_tasks == 0:
            return
        keep = self.prepare(inputs, outputs)  # owns any packed operand during the call
        ptrs = tuple(_address(a, keep) for a in list(keep))
        self._run(self.fn, ptrs)


class NativeGemmKernel(CompiledKernel):
    """The native GEMM reads op(A) and op(B) as contiguous matrices: they are packed here
    (through the operands' index maps) and passed after the output."""

    def __init__(self, *args, spec, **kw):
        super().__init__(*args, **kw)
        self.spec = spec

    def prepare(self, inputs, outputs):
        s = self.spec
        a = gemm_operand(inputs[s.a], s.a_view, s.a_shape, s.transpose_a)
        b = gemm_operand(inputs[s.b], s.b_view, s.b_shape, s.transpose_b)
        return list(inputs) + list(outputs) + [a, b]


def gemm_operand(buf: np.ndarray, view, shape, transpose: bool) -> np.ndarray:
    """op(X) as a contiguous array: X (logical `shape`) read from `buf` through `view`."""
    x = buf if view is None else strided(buf, view).reshape(shape)
    if transpose:
        x = np.swapaxes(x, -1, -2)
    return np.ascontiguousarray(x)


def strided(buf: np.ndarray, view) -> np.ndarray:
    """`buf` (contiguous) read through a StridedView (element offset and strides)."""
    if view.is_contiguous and buf.shape == view.shape:
        return buf
    buf = np.ascontiguousarray(buf)
    size = buf.itemsize
    return np.ndarray(view.shape, buf.dtype, buffer=buf, offset=view.offset * size,
                      strides=tuple(st * size for st in view.strides))


_local = threading.local()
#: scratch alignment in bytes (one AVX-512 vector, one cache line)
ALIGN = 64


def score_scratch(n: int) -> np.ndarray:
    """A per-thread, 64-byte aligned float32 block of at least n elements, shared by every
    attention kernel (a thread runs one task at a time), so scratch memory does not grow
    with the model."""
    buf = getattr(_local, "scores", None)
    if buf is None or buf.size < n:
        raw = np.empty(max(n, 1) + ALIGN // 4, np.float32)
        skip = (-raw.__array_interface__["data"][0] % ALIGN) // 4
        buf = _local.scores = raw[skip:skip + max(n, 1)]
    return buf


class AttentionKernel(CompiledKernel):
    """Blocked attention: the node's inputs are passed as they are (the kernel reads q, k,
    v and the rel-pos terms through their index maps), plus the output and the calling
    thread's scratch."""

    def __init__(self, *args, n_operand_ptrs: int, scratch_elems: int, **kw):
        super().__init__(*args, **kw)
        self.n_operand_ptrs = n_operand_ptrs
        self.scratch_elems = scratch_elems

    def _part(self, lo, hi, *ptrs):
        s = score_scratch(self.scratch_elems)
        self.fn(lo, hi, *ptrs, s.__array_interface__["data"][0])

    def __call__(self, inputs, outputs) -> None:
        if self.unusable:
            raise RlxError(self.unusable)
        if self.n_tasks == 0:
            return
        keep = list(inputs[:self.n_operand_ptrs]) + [outputs[0]]
        ptrs = tuple(_address(a, keep) for a in list(keep))
        self._run(self._part, ptrs)


class HostKernel:
    """Data movement (pad, concat, gather, im2col, reductions, fills) through numpy
    (`rlx.backends.common.host`): copies or tiny reductions that numpy already does in
    one pass each, so no code is generated for them."""

    def __init__(self, spec, info: KernelInfo, nthreads: int = 1):
        self.spec = spec
        self.info = info
        self.nthreads = nthreads

    def __call__(self, inputs, outputs) -> None:
        run_host(self.spec, inputs, outputs, self.nthreads)
