"""`rlx.runtime.background`: warm-up jobs run on daemon threads, one at a time, and a
failing job is dropped without a trace on the caller."""

from __future__ import annotations

import threading
import time

from rlx.runtime import background


def test_jobs_never_overlap_and_all_run():
    running, overlaps, done = [0], [], []
    lock = threading.Lock()

    def job(i):
        def run():
            with lock:
                running[0] += 1
                overlaps.append(running[0])
            time.sleep(0.05)
            with lock:
                running[0] -= 1
            done.append(i)
        return run

    threads = [background.start(job(i), name=f"test-job-{i}") for i in range(3)]
    assert all(t.daemon for t in threads)
    assert background.wait(10)
    assert sorted(done) == [0, 1, 2]
    assert max(overlaps) == 1


def test_a_failing_job_is_dropped_and_the_next_one_runs():
    ran = []

    def bad():
        raise RuntimeError("warm-up failed")

    t = background.start(bad, name="test-bad")
    background.start(lambda: ran.append(True), name="test-good")
    assert background.wait(10)
    assert not t.is_alive() and ran == [True]


def test_the_thread_carries_the_name():
    names = []
    background.start(lambda: names.append(threading.current_thread().name), name="test-name")
    assert background.wait(10)
    assert names == ["test-name"]


def test_a_child_forked_mid_job_runs_its_own_jobs():
    import os

    release = threading.Event()
    background.start(lambda: release.wait(10), name="test-held")
    time.sleep(0.05)  # the job now holds the queue's lock
    pid = os.fork()
    if pid == 0:  # child: the holder does not exist here; a new job must still run
        ran = []
        background.start(lambda: ran.append(True), name="test-child")
        ok = background.wait(5) and ran == [True]
        os._exit(0 if ok else 1)
    release.set()
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert background.wait(10)


def test_a_pending_job_can_be_cancelled_a_running_one_finishes():
    release, started, ran = threading.Event(), threading.Event(), []

    def hold():
        started.set()
        release.wait(10)
        ran.append("held")

    holder = background.start(hold, name="test-holder")
    assert started.wait(10)
    waiting = background.start(lambda: ran.append("cancelled one"), name="test-cancelled")
    kept = background.start(lambda: ran.append("kept"), name="test-kept")
    assert waiting.state == "pending" and waiting.cancel() and waiting.cancelled
    assert waiting.cancel()                      # cancelling twice: still cancelled
    assert holder.state == "running" and not holder.cancel()
    release.set()
    assert background.wait(10)
    assert ran == ["held", "kept"]
    assert holder.state == "done" and kept.state == "done" and waiting.state == "cancelled"
    assert not kept.cancel()                     # too late: it ran
