"""Threads for kernels and for BLAS, sized by the profile, never both at once.

Shared by the compiled backends (numba, llvm): one pool, one BLAS setting.

Kernels are compiled ``nogil`` and take a task range, so a small pool of
Python threads runs them in parallel (no OpenMP runtime: nothing spins after
a kernel returns and steals cycles from BLAS). GEMMs go to numpy's bundled
OpenBLAS, whose own thread count is set through its exported
``*_set_num_threads*`` symbol (found with ctypes in numpy's library folder).
While a compiled GEMM or attention kernel runs, OpenBLAS is set to one thread
and the product is split into row blocks over the same pool, so at most
`threads` threads are busy at any moment; the previous setting is restored
afterwards.
"""

from __future__ import annotations

import ctypes
import glob
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

_lock = threading.Lock()
_PREFIX = "rlx-kernel"
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_blas_setter = None

#: below this much work (elements x cost) a kernel runs on the calling thread
PARALLEL_MIN_WORK = 1 << 16


def _find_blas_setter():
    """(openblas_set_num_threads, openblas_get_num_threads) from numpy's bundled OpenBLAS."""
    libdir = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libdir, "*openblas*.so*"))):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas", "64_"), ("openblas", "64_"),
                               ("scipy_openblas", ""), ("openblas", "")):
            setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
            getter = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            if setter is not None and getter is not None:
                setter.argtypes = [ctypes.c_int]
                setter.restype = None
                getter.argtypes = []
                getter.restype = ctypes.c_int
                return setter, getter
    return None


def _blas():
    global _blas_setter
    if _blas_setter is None:
        _blas_setter = _find_blas_setter() or False
    return _blas_setter


def set_blas_threads(n: int) -> bool:
    """Set OpenBLAS's thread count; False if numpy's OpenBLAS was not found."""
    with _lock:
        fns = _blas()
        if not fns:
            return False
        fns[0](int(n))
        return True


def blas_threads() -> int | None:
    """OpenBLAS's current thread count (None if numpy's OpenBLAS was not found)."""
    fns = _blas()
    return fns[1]() if fns else None


class single_threaded_blas:
    """Context: OpenBLAS at one thread inside (our threads split the work), restored after.

    Restoring keeps other users of numpy in the process (the reference backend, a
    benchmark's numpy baseline) at their own BLAS setting.
    """

    def __enter__(self):
        fns = _blas()
        self.prev = fns[1]() if fns else None
        if self.prev is not None and self.prev != 1:
            fns[0](1)
        return self

    def __exit__(self, *exc):
        if self.prev is not None and self.prev != 1:
            _blas()[0](self.prev)
        return False


def configure(threads: int) -> None:
    """Make sure the pool can run `threads` threads (it only grows).

    Splitting GEMMs ourselves (row blocks per thread) instead of letting OpenBLAS
    spawn its own threads keeps exactly `threads` threads busy: OpenBLAS's
    workers spin for a while after each call and would compete with the kernel
    threads for the same cores. Each kernel then uses as many of the pool's
    threads as its own profile asks for.
    """
    global _pool, _pool_size
    threads = max(1, int(threads))
    with _lock:
        if threads > _pool_size:
            if _pool is not None:
                _pool.shutdown(wait=True)
            _pool = ThreadPoolExecutor(threads - 1, thread_name_prefix=_PREFIX) \
                if threads > 1 else None
            _pool_size = threads


def threads() -> int:
    return max(_pool_size, 1)


def run_tasks(fn, n_tasks: int, args: tuple, work: int, nthreads: int | None = None) -> None:
    """fn(lo, hi, *args) over [0, n_tasks), split over `nthreads` threads (the calling
    thread is one of them) when `work` is large enough to pay for the hand-off."""
    pool = _pool
    nthreads = min(nthreads or _pool_size, _pool_size)
    nested = threading.current_thread().name.startswith(_PREFIX)  # never wait on our own pool
    if pool is None or nested or nthreads < 2 or n_tasks < 2 or work < PARALLEL_MIN_WORK:
        fn(0, n_tasks, *args)
        return
    parts = min(nthreads, n_tasks)
    bounds = [n_tasks * k // parts for k in range(parts + 1)]
    futures = [pool.submit(fn, bounds[k], bounds[k + 1], *args) for k in range(1, parts)]
    fn(bounds[0], bounds[1], *args)
    for f in futures:
        f.result()
