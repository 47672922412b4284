"""`run_job`: items + a worker factory + a work folder + an engine -> every outcome.

The steps: open the work folder (refusing one made with other settings),
take the outcomes of finished items from it, run the rest on the engine and
write each outcome the moment it arrives, with a progress bar on a terminal.
Returns the outcomes in item order. On Ctrl-C or any failure, what was
written stays written: the same command resumes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from .engines import get_engine
from .outcome import Item
from rlx.utils.progress import Progress
from .workdir import WorkDir

__all__ = ["JobSummary", "run_job"]


@dataclass
class JobSummary:
    outcomes: List[Dict[str, Any]]  # in item order
    reused: int                     # taken from the work folder
    processed: int                  # processed in this run
    seconds: float                  # wall time of the processing
    errors: List[Dict[str, Any]] = field(default_factory=list)


def run_job(items: Sequence[Item], factory: Callable, workdir: WorkDir,
            settings: Mapping[str, Any], engine: str = "local", workers: int = 1,
            threads: int = 1, progress: Optional[bool] = None, label: str = "",
            on_outcome: Optional[Callable[[Dict[str, Any]], None]] = None,
            **engine_options) -> JobSummary:
    """Run ``factory``'s function over ``items``; see the module docstring.

    ``on_outcome`` is called with each new outcome after it is on disk (the
    benchmark times the steady state with it).
    """
    import time

    run = get_engine(engine)
    workdir.open(settings)
    outcomes = workdir.finished(items)
    todo = [it for it in items if it.key not in outcomes]
    bar = Progress(len(items), done=len(outcomes), label=label, enabled=progress)
    t0 = time.perf_counter()
    processed = 0
    written = 0
    try:
        for outcome in run(todo, factory, workers=workers, threads=threads, **engine_options):
            workdir.write(outcome)
            written += 1
            outcomes[outcome["key"]] = outcome
            processed += 1
            bar.update(bool(outcome.get("ok")))
            if on_outcome is not None:
                on_outcome(outcome)
    except BaseException:
        if workdir.created and not written:
            workdir.remove()  # e.g. the model would not load: leave nothing behind
        raise
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    ordered = [outcomes[it.key] for it in items]
    errors = [o for o in ordered if not o.get("ok")]
    return JobSummary(ordered, len(items) - len(todo), processed, seconds, errors)
