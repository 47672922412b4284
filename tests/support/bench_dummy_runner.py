"""A tiny benchmark runner for the harness tests: no model, just records
what the harness handed it (threads, keyword arguments)."""

from __future__ import annotations

from benchmarks.harness import Prepared


def prepare(threads: int = 1, size: int = 1) -> dict:
    # no 'points' parameter: the harness must not pass per-call arguments here
    return {"prepared_threads": threads, "size": size}


def work(threads: int = 1, size: int = 1, points: int = 1):
    data = list(range(size * 100))
    return Prepared(lambda: sum(data), 0.0,
                    {"threads": threads, "points": points, "size": size})
