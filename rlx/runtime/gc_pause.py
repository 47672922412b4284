"""Pause Python's cyclic garbage collector around short bursts of object creation.

Why: a warm compile (unpickling a cached plan, rebuilding a graph, splitting
it into stages) creates tens of thousands of small objects in a few
milliseconds. Each few hundred allocations trigger a collection, and every
so often a full one, which walks *every* tracked object of the process. By
the first click a process holds millions of them (the encoder's plan, numba's
typing registries, llvmlite): measured right after numba's start-up, a full
collection landed inside the unpickling of the prompt graph's plan, which
then took 50-150 ms instead of ~8 ms. Later in a session (no full collection
due) the pause saves less, ~10 ms of young-generation collections per
compile. The skipped collections are not free, only deferred: objects other
threads allocate meanwhile are collected after the pause, possibly by the
thread that paused (seen when numba starts up on a thread during the compile).

`gc_paused()` turns the collector off for the duration of a `with` block and
back on when the outermost block ends (nested and concurrent blocks share one
pause; if the collector was already off it stays off). Only wrap bounded work
that creates little cyclic garbage: nothing is freed that reference counting
does not free anyway, and the collection skipped runs at the next allocation
threshold after the block.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from typing import Iterator

__all__ = ["gc_paused"]

_lock = threading.Lock()
_depth = 0
#: the collector was on when the outermost pause began (so the last one turns it back on)
_was_enabled = False


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()
