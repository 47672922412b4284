"""Run a test body on several threads at once and re-raise the first failure in the caller.

An assertion inside a thread does not fail a test by itself (the thread just
ends): `run_threads` collects what each thread raised and raises it again
in the test's own thread.
"""

from __future__ import annotations

import threading
from typing import Callable


def run_threads(work: Callable[[int], None], n: int) -> None:
    """Call ``work(i)`` for i in 0..n-1, each on its own thread, started together."""
    errors: list[BaseException] = []
    start = threading.Barrier(n)

    def body(i: int) -> None:
        try:
            start.wait()
            work(i)
        except BaseException as exc:  # re-raised below, in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
