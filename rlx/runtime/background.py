"""Warm-up work on a background thread, one job at a time, failures left to the real call.

Why: some one-time work (linking a cached plan, loading a JIT library's cached
machine code) can run while the caller is busy elsewhere -- typically while a
large graph runs in native code with the GIL released -- so that the call
that needs the result finds it ready. `start(job, name)` runs ``job()`` on a
daemon thread.

Jobs run one after another, never two at once, on purpose: several of them
drive LLVM (rlx's own kernel linking, numba loading its cache), and LLVM's
global state is not meant for two threads at once. The job itself must be
safe to race with the real call (take the same lock, so the loser waits and
then finds the work done).

A job that raises is dropped silently: warming up is an optimisation, and the
real call repeats the work and reports the error where it belongs.

A job waiting for its turn can be cancelled (`Job.cancel`: it then never runs;
one already running finishes -- jobs are short and must be harmless when their
result is no longer wanted, e.g. work for an image that has since been
replaced). That is how a caller keeps stale warm-up work from delaying the
next job or competing for the cores.

A process forked while a job runs starts its own queue: the job's thread does
not exist in the child, so the lock it held is replaced (whatever the job was
building is left to the child's first use; fork only after jobs end --
`wait` -- or use the ``spawn`` start method, as `rlx.datasets` does).
"""

from __future__ import annotations

import os
import threading
from typing import Callable

__all__ = ["Job", "start", "wait"]

#: held while a job runs: jobs never overlap
_serial = threading.Lock()
_threads: list[threading.Thread] = []
_threads_lock = threading.Lock()


class Job(threading.Thread):
    """A warm-up job's daemon thread, which can be cancelled until the job begins."""

    def __init__(self, job: Callable[[], object], name: str):
        super().__init__(name=name, daemon=True)
        self._job = job
        self._state_lock = threading.Lock()
        #: "pending" (waiting for its turn), "running", "done", or "cancelled" (never ran)
        self.state = "pending"

    def cancel(self) -> bool:
        """Skip the job if it has not begun; True if it will not run (now or before)."""
        with self._state_lock:
            if self.state == "pending":
                self.state = "cancelled"
            return self.state == "cancelled"

    @property
    def cancelled(self) -> bool:
        return self.state == "cancelled"

    def run(self) -> None:
        if self.state == "cancelled":  # no need to wait for the queue to say so
            return
        with _serial:
            with self._state_lock:
                if self.state != "pending":
                    return
                self.state = "running"
            try:
                self._job()
            except Exception:  # the real call does the work again and reports it
                pass
            finally:
                self.state = "done"


def start(job: Callable[[], object], name: str) -> Job:
    """Run ``job()`` on a new daemon thread called `name`, after any job still running."""
    t = Job(job, name)
    with _threads_lock:
        _threads[:] = [x for x in _threads if x.is_alive()]
        _threads.append(t)
    t.start()
    return t


def wait(timeout: float | None = None) -> bool:
    """Wait until every job started so far has finished (tests, benchmarks); False on
    timeout."""
    with _threads_lock:
        pending = list(_threads)
    for t in pending:
        t.join(timeout)
    return not any(t.is_alive() for t in pending)


def _forget_after_fork() -> None:
    global _serial, _threads_lock
    _serial = threading.Lock()
    _threads_lock = threading.Lock()
    _threads.clear()


os.register_at_fork(after_in_child=_forget_after_fork)
