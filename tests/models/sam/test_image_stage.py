"""The click graph is primed, and its image-only stage runs in the background (models.sam.prefetch).

Checked: after ``set_image`` the background compile job has primed the
one-click graph (a run on zeros, forgotten) and the image-stage job has run
its slow stage for *this* image's embedding, so the click runs only the fast
stage -- with masks identical to a predictor that does everything on the
click; a second image gets its own stage run and correct masks; a new image
cancels a job still waiting for its turn, and a job whose image was replaced
meanwhile skips its work; ``set_image_embedding`` starts the job too;
``RLX_SAM_PREFETCH=0`` and ``prefetch_click=False`` start nothing; the
post-processing tables of the image's size are built before the click.
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest

from models.sam.config import small_config
from models.sam.model import SamPredictor, build_sam
from models.sam.predict import set_image_embedding
from models.sam.prompt_graph import CLICK_BUCKET, decoder_for
from rlx.runtime import background
from tests.support import synthetic_images

CLICK = (np.array([[120.0, 90.0]]), np.array([1]))
BOX = np.array([30.0, 40.0, 200.0, 150.0])


def make_sam(profile: str = "llvm"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_sam(small_config(), profile=profile, seed=4)


@pytest.fixture(scope="module")
def images():
    return [synthetic_images.make_image(300, 400, seed=s) for s in (2, 3, 4)]


def _same(got, want):
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def _kept_for(bucket, features) -> bool:
    return bucket._kept is not None and bucket._keys[0][0] is features


def test_the_image_stage_runs_in_the_background_and_the_click_uses_it(images):
    sam = make_sam()
    predictor = SamPredictor(sam)
    reference = SamPredictor(make_sam(), prefetch_click=False)  # everything on the click
    for n, image in enumerate(images[:2], start=1):
        predictor.set_image(image)
        assert background.wait(300)
        dec = decoder_for(sam)
        click = dec.buckets[CLICK_BUCKET]
        assert CLICK_BUCKET in dec._primed
        # run for this image's embedding, before any click (priming counts no slow run)
        assert click.slow_runs == n and _kept_for(click, predictor.features)
        got = predictor.predict(*CLICK)
        assert click.slow_runs == n  # the click ran the fast stage only
        reference.set_image(image)
        _same(got, reference.predict(*CLICK))
        _same(predictor.predict(box=BOX), reference.predict(box=BOX))
    # the box bucket, compiled by a click, is prepared for the next image too
    box_bucket = decoder_for(sam).buckets[(2, False)]
    predictor.set_image(images[0])
    assert background.wait(300)
    assert _kept_for(box_bucket, predictor.features)


def test_a_new_image_cancels_the_pending_job_and_a_stale_job_skips_its_work(images):
    sam = make_sam("reference")
    predictor = SamPredictor(sam)
    predictor.set_image(images[0])
    assert background.wait(300)
    click = decoder_for(sam).buckets[CLICK_BUCKET]
    runs = click.slow_runs
    release = threading.Event()
    background.start(lambda: release.wait(60), name="test-hold-the-queue")
    try:
        predictor.set_image(images[1])
        first = predictor._image_stage_job
        assert first is not None and first.state == "pending"
        predictor.set_image(images[2])
        second = predictor._image_stage_job
        assert first.cancelled and second is not first and second.state == "pending"
    finally:
        release.set()
    assert background.wait(300)
    assert second.state == "done"
    assert click.slow_runs == runs + 1 and _kept_for(click, predictor.features)
    # a job that began for an image no longer current does nothing
    stale = predictor.features + np.float32(1.0)  # another image's embedding
    assert decoder_for(sam).prepare_image(stale, current=lambda: False) == 0
    assert click.slow_runs == runs + 1
    # reset_image cancels too
    release = threading.Event()
    background.start(lambda: release.wait(60), name="test-hold-the-queue")
    try:
        predictor.set_image(images[1])
        job = predictor._image_stage_job
        predictor.reset_image()
        assert job.cancelled
    finally:
        release.set()
    assert background.wait(300)
    assert click.slow_runs == runs + 1


def test_set_image_embedding_starts_the_image_stage(images):
    sam = make_sam("reference")
    predictor = SamPredictor(sam)
    predictor.set_image(images[0])
    assert background.wait(300)
    emb = np.random.default_rng(5).standard_normal(predictor.features.shape).astype(np.float32)
    set_image_embedding(predictor, emb, (300, 400))
    assert background.wait(300)
    click = decoder_for(sam).buckets[CLICK_BUCKET]
    assert _kept_for(click, predictor.features)
    runs = click.slow_runs
    got = predictor.predict(*CLICK)
    assert click.slow_runs == runs
    other = SamPredictor(make_sam("reference"), prefetch_click=False)
    set_image_embedding(other, emb, (300, 400))
    _same(got, other.predict(*CLICK))


@pytest.mark.parametrize("how", ["env", "argument"])
def test_no_image_stage_when_prefetch_is_off(images, monkeypatch, how):
    if how == "env":
        monkeypatch.setenv("RLX_SAM_PREFETCH", "0")
    sam = make_sam("reference")
    predictor = SamPredictor(sam, prefetch_click=how != "argument")
    decoder_for(sam).bucket(*CLICK_BUCKET)  # compiled, so only the stage job could run it
    predictor.set_image(images[0])
    assert background.wait(300)
    assert getattr(predictor, "_image_stage_job", None) is None
    assert decoder_for(sam).buckets[CLICK_BUCKET].slow_runs == 0


def test_the_postprocessing_of_the_image_size_is_ready_before_the_click():
    from models.sam import postprocess

    sam = make_sam("reference")
    predictor = SamPredictor(sam)
    image = synthetic_images.make_image(211, 333, seed=9)  # a size no other test uses
    predictor.set_image(image)
    assert background.wait(300)
    before = postprocess._fused_tables.cache_info()
    predictor.predict(*CLICK)
    after = postprocess._fused_tables.cache_info()
    assert after.misses == before.misses and after.hits > before.hits
