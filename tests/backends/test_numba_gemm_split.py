"""How numba GEMMs are split over threads: tiny ones not at all, few-row ones by columns.

A token-side GEMM of SAM's decoder has 7 rows and a 2 MB weight: split by
rows, each thread would pack the whole weight. These cases check the column
split (plain, transposed weight, with an epilogue, odd column counts) and
the single-thread path of small products against the reference.
"""

from __future__ import annotations

import numpy as np
import pytest

from rlx.backends.common import threads
from rlx.backends.numba import kernels
from tests.backends.test_numba_ops import NUMBA, check


@pytest.mark.parametrize("rows,cols,transpose_b", [(7, 2048, True), (7, 2048, False),
                                                   (1, 333, True), (63, 130, False)])
@pytest.mark.parametrize("epilogue", [False, True])
def test_few_row_gemms(rows, cols, transpose_b, epilogue, monkeypatch):
    monkeypatch.setattr(kernels, "GEMM_PARALLEL_MIN_WORK", 0)  # split even small ones
    calls = []
    real = threads.run_tasks

    def spy(fn, n_tasks, args, work, nthreads=None):
        calls.append(n_tasks)
        return real(fn, n_tasks, args, work, nthreads)

    monkeypatch.setattr(threads, "run_tasks", spy)

    def build(b):
        x = b.input("x", (rows, 256))
        w = b.weight("w", (cols, 256) if transpose_b else (256, cols))
        y = b.matmul(x, w, transpose_b=transpose_b)
        if epilogue:
            y = b.relu(b.add(y, b.weight("bias", (cols,))))
        b.output(y)
        return {}

    check(build, NUMBA, atol=1e-4)  # sums of 256 products of N(0, 1) numbers
    assert -(-cols // 64) in calls  # split by 64-column blocks


def test_tiny_gemm_runs_on_the_calling_thread(monkeypatch):
    seen = []
    real = threads.run_tasks

    def spy(fn, n_tasks, args, work, nthreads=None):
        seen.append(nthreads)
        return real(fn, n_tasks, args, work, nthreads)

    monkeypatch.setattr(threads, "run_tasks", spy)

    def build(b):
        x = b.input("x", (7, 256))
        b.output(b.matmul(x, b.weight("w", (256, 256))))
        return {}

    check(build, NUMBA, atol=1e-4)
    assert seen == [1]


def test_many_row_gemm_still_splits_by_rows():
    def build(b):
        x = b.input("x", (700, 64))
        b.output(b.relu(b.add(b.matmul(x, b.weight("w", (64, 96))), b.weight("bias", (96,)))))
        return {}

    compiled = check(build, NUMBA, atol=1e-4)
    (gemm,) = [k for k in compiled.plan.kernels if k is not None]
    assert gemm.tasks_per_row is not None and np.prod(gemm.spec.out_shape[:-1]) == 700


@pytest.mark.parametrize("cols", [96, 4])
def test_gemm_epilogue_reads_the_accumulator_through_the_output_view(cols):
    """The epilogue updates the GEMM output in place; loaded through a second view of
    the same buffer, LLVM's runtime alias check would fail and the loop run scalar."""
    def build(b):
        x = b.input("x", (300, 64))
        y = b.add(b.matmul(x, b.weight("w", (64, cols))), b.weight("bias", (cols,)))
        b.output(b.gelu(y, approximate="none"))
        return {}

    compiled = check(build, NUMBA, atol=1e-4)
    (gemm,) = [k for k in compiled.plan.kernels if k is not None]
    source = gemm.info.source
    assert "x0 = w0[j]" in source and "r0 = a0" not in source, source
