"""The llvm backend's native fork-join (`rlx.backends.llvm.forkjoin`).

A task range handed to a spinning worker, to a sleeping one (woken through
its event), to one that never comes (its share is taken back), from two Python
threads at once (one owns the workers, the other falls back to the pool), with
every argument count the trampoline has -- checked by the result of real
kernels, never by timing; workers are kept off their caller's core.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from rlx.backends.llvm import forkjoin
from rlx.ir import GraphBuilder
from rlx.runtime import compile_graph
from tests.backends.test_llvm_ops import LLVM
from tests.support.threads import run_threads


def _kernel(n_inputs: int, rows: int = 64):
    """A compiled elementwise kernel over n_inputs [rows, 1024] inputs (sum of all / 2 + 1)."""
    b = GraphBuilder(f"fj{n_inputs}")
    xs = [b.input(f"x{i}", (rows, 1024)) for i in range(n_inputs)]
    acc = xs[0]
    for x in xs[1:]:
        acc = b.add(acc, x)
    b.output(b.add(b.mul(acc, 0.5), 1.0))
    compiled = compile_graph(b.build(), LLVM, weights={})
    (k,) = [k for k in compiled.plan.kernels if k is not None]
    return k


def _run(fj, k, arrays, out):
    ptrs = tuple(a.__array_interface__["data"][0] for a in arrays + [out])
    assert fj.try_run(k.fn_address, k.fn, k.n_tasks, ptrs, 2)


def test_tasks_run_on_a_spinning_and_on_a_sleeping_worker():
    fj = forkjoin.get(2)
    k = _kernel(2)
    assert k.n_tasks >= 2
    rng = np.random.default_rng(0)
    for i in range(30):
        arrays = [rng.standard_normal((64, 1024), dtype=np.float32) for _ in range(2)]
        out = np.full((64, 1024), np.nan, np.float32)
        if i % 10 == 9:  # let the worker spin out and go to sleep on its event
            time.sleep(2 * forkjoin.SPIN_US / 1e6 + 0.01)
        _run(fj, k, arrays, out)
        np.testing.assert_allclose(out, (arrays[0] + arrays[1]) * 0.5 + 1.0, rtol=1e-6)


@pytest.mark.parametrize("n_inputs", [1, 7, forkjoin.MAX_ARGS - 1])
def test_trampoline_passes_every_pointer(n_inputs):
    fj = forkjoin.get(2)
    k = _kernel(n_inputs, rows=16)
    rng = np.random.default_rng(n_inputs)
    arrays = [rng.standard_normal((16, 1024), dtype=np.float32) for _ in range(n_inputs)]
    out = np.zeros((16, 1024), np.float32)
    _run(fj, k, arrays, out)
    np.testing.assert_allclose(out, np.sum(arrays, axis=0) * 0.5 + 1.0, rtol=1e-5, atol=1e-5)


def test_too_many_pointers_or_one_part_is_declined():
    fj = forkjoin.get(2)
    k = _kernel(1)
    assert not fj.try_run(k.fn_address, k.fn, k.n_tasks, (0,) * (forkjoin.MAX_ARGS + 1), 2)
    assert not fj.try_run(k.fn_address, k.fn, 1, (0, 0), 2)


def test_two_python_threads_running_plans_at_once():
    b = GraphBuilder("fj_plan")
    x = b.input("x", (256, 1024))
    b.output(b.gelu(b.mul(b.add(x, 1.0), 0.5), approximate="none"))
    graph = b.build()
    compiled = [compile_graph(graph, LLVM, weights={}) for _ in range(2)]
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((256, 1024), dtype=np.float32) for _ in range(2)]
    expected = [compiled[0](x)[0] for x in inputs]

    def work(i):
        for _ in range(40):
            np.testing.assert_array_equal(compiled[i](inputs[i])[0], expected[i])

    run_threads(work, 2)


def _run_in_child(queue):
    fj = forkjoin.get(2)
    k = _kernel(2)
    arrays = [np.full((64, 1024), 2.0, np.float32) for _ in range(2)]
    out = np.zeros((64, 1024), np.float32)
    _run(fj, k, arrays, out)
    queue.put(float(out.min()) == float(out.max()) == 3.0)


def test_a_forked_child_gets_its_own_workers():
    import multiprocessing

    forkjoin.get(2)  # the parent's workers exist before the fork
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_run_in_child, args=(queue,))
    child.start()
    child.join(60)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung waiting for workers it does not have")
    assert child.exitcode == 0 and queue.get(timeout=5)


def test_workers_are_parked_after_a_plan_call_and_released_by_the_next():
    b = GraphBuilder("fj_park")
    x = b.input("x", (256, 1024))
    b.output(b.mul(b.add(x, 1.0), 0.5))
    compiled = compile_graph(b.build(), LLVM, weights={})
    data = np.ones((256, 1024), np.float32)
    np.testing.assert_array_equal(compiled(data)[0], 1.0)
    fj = forkjoin.get(2)
    assert (fj._slots[:, forkjoin.PARK] == 1).all()  # the plan call ended: no spinning
    forkjoin.wake()
    assert (fj._slots[:, forkjoin.PARK] == 0).all()
    for _ in range(5):  # parked, woken, parked again: results stay right
        np.testing.assert_array_equal(compiled(data)[0], 1.0)


def _asleep(fj, k: int = 0) -> None:
    """Park worker k and wait until it sleeps on its event."""
    fj.park()
    for _ in range(2000):
        if fj._slots[k, forkjoin.SLEEPING]:
            return
        time.sleep(0.001)
    pytest.fail("the parked worker never went to sleep")


class _NeverSet:
    """An event whose set() wakes nobody: stands in for a worker that never gets a core."""

    def set(self):
        pass


def test_a_share_the_worker_never_starts_is_taken_back():
    """Without take-back the caller would spin forever on the absent worker's share."""
    from concurrent.futures import ThreadPoolExecutor, TimeoutError

    fj = forkjoin.ForkJoin(1)  # its own worker, not the process's
    k = _kernel(2)
    _asleep(fj)
    real = fj._events[0]
    fj._events[0] = _NeverSet()
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal((64, 1024), dtype=np.float32) for _ in range(2)]
    out = np.full((64, 1024), np.nan, np.float32)
    seq = int(fj._slots[0, forkjoin.SEQ])
    with ThreadPoolExecutor(1) as pool:
        done = pool.submit(_run, fj, k, arrays, out)
        try:
            done.result(timeout=30)
        except TimeoutError:
            fj._slots[0, forkjoin.DONE] = fj._slots[0, forkjoin.SEQ]  # let it return
            pytest.fail("the caller waited for a worker that never started its share")
        finally:
            fj._events[0] = real
    assert fj._slots[0, forkjoin.SEQ] == seq + 1  # the share was posted ...
    assert fj._slots[0, forkjoin.DONE] != seq + 1  # ... and never run by the worker
    np.testing.assert_allclose(out, (arrays[0] + arrays[1]) * 0.5 + 1.0, rtol=1e-6)
    real.set()  # the worker wakes, finds its share taken, and waits again
    out[:] = np.nan
    _run(fj, k, arrays, out)
    np.testing.assert_allclose(out, (arrays[0] + arrays[1]) * 0.5 + 1.0, rtol=1e-6)


def test_workers_are_kept_off_the_callers_core():
    import os

    cpus = os.sched_getaffinity(0)
    fj = forkjoin.ForkJoin(1)
    for _ in range(2000):
        if fj._tids[0] is not None:
            break
        time.sleep(0.001)
    fj.wake()
    if len(cpus) < 2:  # nowhere else to go: left alone
        assert fj._kept_off is None and os.sched_getaffinity(fj._tids[0]) == cpus
        return
    cpu = fj._kept_off
    assert cpu in cpus
    assert os.sched_getaffinity(fj._tids[0]) == cpus - {cpu}
