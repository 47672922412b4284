"""What a `SamPredictor` prepares in the background so that the first click finds it ready.

Two one-time costs used to land on the first ``predict`` of a process:

* loading numba and the mask post-processing kernels from numba's cache
  (`postprocess_kernels.prefetch`, started when a predictor is created);
* building the one-click prompt graph, linking its cached plan and binding
  its weights (`PromptDecoder.prefetch` of `prompt_graph.CLICK_BUCKET`,
  started by ``set_image`` before the encoder runs: the encoder's kernels run
  in native code with the GIL released, so the compile overlaps them).

Both go through `rlx.runtime.background` (one job at a time; a failing job
is dropped and the first use does the work and reports the error). A first
``predict`` arriving before a job ends waits for it (the same lock) instead
of doing the work twice. ``RLX_SAM_PREFETCH=0`` turns both off: everything
then happens on first use, as a library user without spare cores may want.
"""

from __future__ import annotations

import os

__all__ = ["ENV", "enabled"]

ENV = "RLX_SAM_PREFETCH"


def enabled() -> bool:
    """False when ``RLX_SAM_PREFETCH=0``."""
    return os.environ.get(ENV, "1").strip() != "0"
