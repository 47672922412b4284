"""Run one function over a dataset of files: resumable, on one machine or on Ray.

Nothing here knows about SAM or about what the function computes. A job is

* a list of `Item`s (`sources`: a folder walked recursively, or a list file),
* a *worker factory*: a picklable callable that builds, once per worker, the
  function ``process(item) -> dict`` (loading a model is the factory's job,
  so each worker holds exactly one); it is called with the number of threads
  the worker may use (``factory(threads)``), which only the engine knows for
  sure (on Ray it follows the cluster's CPUs),
* a `WorkDir` where each item's outcome is written atomically as soon as it
  is done, which is what makes a rerun skip finished items (resume),
* an engine (`engines.local`: worker processes on this machine;
  `engines.ray`: Ray Data actors, on this machine or an existing cluster).

`run_job` ties them together and shows a `Progress` bar on a terminal.
`coco` assembles per-image instance annotations into one COCO file.
Model packages supply the factory and their own command (``rlx annotate`` is
`models.sam.annotate`).
"""

from .engines import ENGINES, plan_workers
from .job import JobSummary, run_job
from .outcome import Item, item_outcome
from .sources import IMAGE_EXTENSIONS, list_images
from .workdir import WorkDir

__all__ = ["ENGINES", "IMAGE_EXTENSIONS", "Item", "JobSummary", "WorkDir", "item_outcome",
           "list_images", "plan_workers", "run_job"]
