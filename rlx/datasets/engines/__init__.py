"""Engines: where the items of a dataset job are processed.

Every engine is a generator ``run(items, factory, workers=, threads=, **options)``
yielding one outcome dict (`rlx.datasets.outcome`) per item, in completion
order, as soon as it is done. The caller writes outcomes to the work folder;
engines never touch the disk (on a cluster, the workers cannot see it).

* ``local`` (`local`): worker processes on this machine, one model each;
* ``ray`` (`ray`): Ray Data actors, on a local Ray instance or an existing
  cluster (``ray_address``); needs the ``[ray]`` extra.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

from rlx.errors import InputError

__all__ = ["ENGINES", "available_cores", "get_engine", "plan_workers"]

ENGINES = ("local", "ray")

#: threads one worker should get before a second worker pays off: below this the
#: encoder's GEMMs are compute bound per thread and one model per 4 cores keeps
#: the memory (one model per worker) reasonable
THREADS_PER_WORKER = 4


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def plan_workers(cores: int, workers: Optional[int] = None,
                 threads: Optional[int] = None) -> Tuple[int, int]:
    """(workers, threads per worker) for ``cores`` cores; explicit values win.

    Default: one worker per `THREADS_PER_WORKER` cores (at least one), the
    cores shared out evenly -- one worker with 2 threads on a 2-core machine,
    4 x 4 on 16 cores.
    """
    for name, v in (("--workers", workers), ("--threads", threads)):
        if v is not None and v < 1:
            raise InputError(f"{name} must be at least 1, got {v}")
    if workers is None:
        per = threads or THREADS_PER_WORKER
        workers = max(1, cores // per)
    if threads is None:
        threads = max(1, cores // workers)
    return workers, threads


def get_engine(name: str):
    if name == "local":
        from .local import run
    elif name == "ray":
        from .ray import run
    else:
        raise InputError(f"unknown engine {name!r}; choose from {', '.join(ENGINES)}")
    return run
