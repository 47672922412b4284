"""The Ray engine: the same job as Ray Data batch inference, here or on a cluster.

The items become a ``ray.data`` dataset (one row per item, its own block, so
rows spread over actors); ``map_batches`` runs `_Actor`, a callable class
whose constructor calls the factory -- one model per actor, built once --
with ``concurrency = workers`` actors of ``threads`` CPUs each. Outcomes
are streamed back to the driver (``iter_rows``) as blocks finish, so the
caller writes each to the work folder while the rest still run.

``address`` joins an existing cluster (``ray.init(address=...)``); without
it a Ray instance already initialised in this process is used, else a local
one is started and shut down at the end. On a cluster every node must see
the item paths (a shared file system) and have rlx and the model package
installed; the driver alone writes the output.

Ray is optional (the ``[ray]`` extra) and imported only here, on use.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Dict, Iterable, Iterator, Optional

from rlx.errors import InputError, RlxError

from ..outcome import Item, item_outcome
from . import plan_workers

__all__ = ["run", "import_ray", "INSTALL_HINT"]

INSTALL_HINT = "pip install -e '.[ray]'"


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401  (the extra is ray[data])
    except ImportError as e:
        raise InputError(f"--engine ray needs Ray Data, which is not installed ({e}); "
                         f"install the extra: {INSTALL_HINT}") from None
    return ray


class _Actor:
    """One model per Ray actor: built in ``__init__``, applied row by row."""

    def __init__(self, factory, threads):
        self.process = factory(threads)

    def __call__(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        import numpy as np

        out = [json.dumps(item_outcome(self.process, Item.from_dict(json.loads(text))))
               for text in batch["item"]]
        return {"outcome": np.array(out, dtype=object)}


def _cluster_cpus(ray) -> int:
    try:
        return int(ray.cluster_resources().get("CPU", 0))
    except Exception:  # an old or odd cluster: do not guess, let Ray schedule
        return 0


def run(items: Iterable[Item], factory: Callable[[int], Callable[[Item], Dict[str, Any]]],
        workers: Optional[int] = None, threads: Optional[int] = None,
        ray_address: Optional[str] = None, **_options) -> Iterator[Dict[str, Any]]:
    """Yield one outcome per item, processed by ``workers`` Ray actors.

    ``workers`` / ``threads`` left at None are planned from the CPUs of the
    cluster (`plan_workers`), not of the machine running the driver.
    """
    items = list(items)
    if not items:
        return
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        try:
            ray.init(address=ray_address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
        except ConnectionError as e:
            raise InputError(f"cannot join the Ray cluster at {ray_address}: {e}") from None
        started = True
    try:
        cpus = _cluster_cpus(ray)
        if workers is None or threads is None:
            workers, threads = plan_workers(cpus or 1, workers, threads)
        if cpus and threads > cpus:
            raise InputError(f"--threads {threads} asks for more CPUs per actor than the Ray "
                             f"cluster has ({cpus})")
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # we draw our own
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-run INFO lines
        rows = [{"item": json.dumps(it.to_dict())} for it in items]
        try:
            ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        except TypeError:  # Ray < 2.10 calls it parallelism
            ds = ray.data.from_items(rows, parallelism=len(rows))
        out = ds.map_batches(_Actor, fn_constructor_args=(factory, threads), batch_size=1,
                             batch_format="numpy", num_cpus=threads,
                             compute=ray.data.ActorPoolStrategy(size=workers))
        for row in out.iter_rows():
            yield json.loads(row["outcome"])
    except RlxError:
        raise
    except Exception as e:
        # Ray wraps an actor's exception (e.g. the factory's InputError on a broken
        # checkpoint) in its own types; an input error inside is still the user's.
        cause = e
        while cause is not None and not isinstance(cause, RlxError):
            cause = getattr(cause, "cause", None) or cause.__cause__
        if isinstance(cause, RlxError):
            raise cause from None
        raise
    finally:
        if started:
            ray.shutdown()
