"""What a `SamPredictor` prepares in the background so that the first click finds it ready.

One-time costs that used to land on the first ``predict`` of a process:

* loading numba and the mask post-processing kernels from numba's cache
  (`postprocess_kernels.prefetch`, started when a predictor is created);
* building the one-click prompt graph, linking its cached plan and binding
  its weights (`PromptDecoder.prefetch` of `prompt_graph.CLICK_BUCKET`,
  started by ``set_image`` before the encoder runs: the encoder's kernels run
  in native code with the GIL released, so the compile overlaps them), then
  *priming* its memory (`rlx.runtime.staged`, ``prime(run=False)``): its
  arenas and the image stage's result arrays are allocated and written, so
  their pages are mapped in -- on this project's 2-core VM a fresh page cost
  up to ~100 us to map, and the first click used to spend 100-200 ms on
  exactly that (~1300 pages);
* per image size, known before the encoder runs: the post-processing tables
  (upscaling matrices of that size) and the kernels' first run
  (`start_click_warmup`, with the compile above);
* per image: the click graph's image-only stage (the embedding in token
  layout, the first layer's projections of it) -- `start_image_stage`,
  started by ``set_image`` (and `predict.set_image_embedding`) as soon as
  the embedding exists, so that a click arriving a moment later only runs
  the per-click part. A click arriving sooner waits for it (the same lock)
  instead of doing it twice; a new image cancels the job if it has not
  begun, and a job that has begun skips what is left once its image is no
  longer the current one.

All go through `rlx.runtime.background` (one job at a time; a failing job is
dropped and the first use does the work and reports the error).
``RLX_SAM_PREFETCH=0`` turns them all off: everything then happens on first
use, as a library user without spare cores may want.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

__all__ = ["ENV", "enabled", "start_click_warmup", "start_image_stage", "cancel_image_stage"]

ENV = "RLX_SAM_PREFETCH"

#: image sizes whose post-processing was warmed up in this process
_warmed_sizes: set = set()


def enabled() -> bool:
    """False when ``RLX_SAM_PREFETCH=0``."""
    return os.environ.get(ENV, "1").strip() != "0"


def cancel_image_stage(predictor) -> None:
    """Cancel `predictor`'s warm-up jobs for its image still waiting for their turn (the
    image is being replaced)."""
    for attr in ("_image_stage_job", "_size_job"):
        job = getattr(predictor, attr, None)
        if job is not None:
            job.cancel()
            setattr(predictor, attr, None)


def start_click_warmup(predictor, input_size, original_size) -> None:
    """Before the encoder runs: compile and prime the one-click graph
    (`PromptDecoder.prefetch`), then warm the post-processing for this image size."""
    if not enabled():
        return
    from rlx.runtime import background

    from .prompt_graph import CLICK_BUCKET, decoder_for

    decoder = decoder_for(predictor.model)
    decoder.prefetch(*CLICK_BUCKET)
    config = decoder.config
    if _size_key(config, input_size, original_size) in _warmed_sizes:
        return  # the tables are cached per size: once is enough
    predictor._size_job = background.start(
        lambda: _warm_size(config, input_size, original_size),
        name="rlx-sam-postprocess-size")


def start_image_stage(predictor) -> Optional[object]:
    """Start the per-image warm-up for `predictor`'s current embedding in the background.

    Runs the image-only stage of every prompt graph compiled so far (the one-click
    graph first). Returns the `rlx.runtime.background.Job`, or None when prefetching
    is off or no image is set. A previous job of the predictor still waiting for its
    turn is cancelled.
    """
    job = getattr(predictor, "_image_stage_job", None)
    if job is not None:
        job.cancel()
    predictor._image_stage_job = None
    if not enabled() or not getattr(predictor, "is_image_set", False):
        return None
    from rlx.runtime import background

    from .prompt_graph import decoder_for

    features = predictor.features
    decoder = decoder_for(predictor.model)

    def current() -> bool:
        return predictor.features is features

    predictor._image_stage_job = background.start(
        lambda: decoder.prepare_image(features, current), name="rlx-sam-image-stage")
    return predictor._image_stage_job


def start_embedding_stage(decoder, features, input_size, original_size, current):
    """For an embedding kept outside a predictor (``rlx serve``'s uploads): one background
    job that runs the image-only stage of `decoder`'s compiled prompt graphs for
    `features` and warms the post-processing of the image's size, so the first click
    on it costs what the next ones do. `current()` says whether the image is still the
    one to prepare (asked before the work and between buckets). Returns the
    `rlx.runtime.background.Job`, or None when prefetching is off."""
    if not enabled():
        return None
    from rlx.runtime import background

    def job() -> None:
        if not current():
            return
        decoder.prepare_image(features, current)
        if current():
            _warm_size(decoder.config, input_size, original_size)

    return background.start(job, name="rlx-sam-embedding-stage")


def _size_key(config, input_size, original_size) -> tuple:
    return (tuple(input_size), tuple(original_size), config.image_size,
            config.image_embedding_size, config.num_multimask_outputs)


def _warm_size(config, input_size, original_size) -> None:
    """`_warm_postprocess` once per image size (its tables are cached per size)."""
    key = _size_key(config, input_size, original_size)
    if key not in _warmed_sizes:
        _warm_postprocess(config, input_size, original_size)
        _warmed_sizes.add(key)


def _warm_postprocess(config, input_size, original_size) -> None:
    """Post-process zeros of a click's shape: builds (and caches) the upscaling tables of
    this image size and runs the kernels once (their outputs' memory is then malloc's)."""
    from .postprocess import postprocess_binary

    s = 4 * config.image_embedding_size
    low = np.zeros((1, config.num_multimask_outputs, s, s), np.float32)
    postprocess_binary(low, input_size, original_size, config.image_size,
                       float(config.mask_threshold))
