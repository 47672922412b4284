"""Compatibility name: the kernel thread pool lives in `rlx.backends.common.threads`
(shared by every compiled backend, so they also share one pool and one BLAS setting)."""

from rlx.backends.common.threads import (  # noqa: F401
    PARALLEL_MIN_WORK, blas_threads, configure, run_tasks, set_blas_threads,
    single_threaded_blas, threads)
