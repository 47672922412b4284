"""``set_image`` compiles the one-click prompt graph in the background (models.sam.prefetch).

Checked: the compile runs on the warm-up thread while ``set_image`` runs,
the first click then compiles nothing and gives the same masks as a
predictor that compiled on first use; a click arriving mid-compile waits
for it (one compile, not two); ``RLX_SAM_PREFETCH=0`` and
``prefetch_click=False`` leave the compile to the first click; a compile that
fails in the background is repeated by the first click.
"""

from __future__ import annotations

import threading
import time
import warnings

import numpy as np
import pytest

import models.sam.prompt_graph as prompt_graph
from models.sam.config import small_config
from models.sam.model import SamPredictor, build_sam
from models.sam.prompt_graph import CLICK_BUCKET, bucket_name, decoder_for
from rlx.runtime import background
from tests.support import synthetic_images

PREFETCH_THREAD = f"rlx-sam-prefetch-{bucket_name(*CLICK_BUCKET)}"
CLICK = (np.array([[120.0, 90.0]]), np.array([1]))


def make_sam(profile: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_sam(small_config(), profile=profile, seed=4)


@pytest.fixture
def image():
    return synthetic_images.make_image(300, 400, seed=2)


@pytest.fixture
def compiles(monkeypatch):
    """Names of the threads that compiled a prompt bucket (the real compile still runs)."""
    names: list[str] = []
    real = prompt_graph.compile_staged

    def counting(*a, **k):
        names.append(threading.current_thread().name)
        return real(*a, **k)

    monkeypatch.setattr(prompt_graph, "compile_staged", counting)
    return names


def test_set_image_compiles_the_click_graph_in_the_background(image, compiles):
    sam = make_sam("llvm")
    predictor = SamPredictor(sam)
    assert CLICK_BUCKET not in decoder_for(sam).buckets
    predictor.set_image(image)
    assert background.wait(300)
    assert CLICK_BUCKET in decoder_for(sam).buckets
    assert compiles == [PREFETCH_THREAD]
    masks, iou, low = predictor.predict(*CLICK)
    assert compiles == [PREFETCH_THREAD]  # the click found it compiled

    # Same answer as compiling on first use (a second model with the same weights).
    other = SamPredictor(make_sam("llvm"), prefetch_click=False)
    other.set_image(image)
    assert background.wait(300)
    assert len(compiles) == 1
    want = other.predict(*CLICK)
    assert compiles == [PREFETCH_THREAD, "MainThread"]
    np.testing.assert_array_equal(masks, want[0])
    np.testing.assert_array_equal(iou, want[1])
    np.testing.assert_array_equal(low, want[2])


def test_a_click_during_the_compile_waits_for_it(image, monkeypatch):
    calls = []
    real = prompt_graph.compile_staged

    def slow(*a, **k):
        calls.append(threading.current_thread().name)
        time.sleep(0.5)  # the click below surely arrives mid-compile
        return real(*a, **k)

    monkeypatch.setattr(prompt_graph, "compile_staged", slow)
    sam = make_sam("reference")
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    masks, _, _ = predictor.predict(*CLICK)
    assert calls == [PREFETCH_THREAD]
    assert masks.shape == (3, 300, 400)


@pytest.mark.parametrize("how", ["env", "argument"])
def test_prefetch_can_be_turned_off(image, compiles, monkeypatch, how):
    if how == "env":
        monkeypatch.setenv("RLX_SAM_PREFETCH", "0")
    sam = make_sam("reference")
    predictor = SamPredictor(sam, prefetch_click=how != "argument")
    predictor.set_image(image)
    assert background.wait(60)
    assert compiles == [] and CLICK_BUCKET not in decoder_for(sam).buckets
    predictor.predict(*CLICK)
    assert compiles == ["MainThread"]


def test_a_failed_background_compile_is_repeated_by_the_click(image, monkeypatch):
    calls = []
    real = prompt_graph.compile_staged

    def fails_once(*a, **k):
        calls.append(threading.current_thread().name)
        if len(calls) == 1:
            raise MemoryError("no room for the warm-up")
        return real(*a, **k)

    monkeypatch.setattr(prompt_graph, "compile_staged", fails_once)
    sam = make_sam("reference")
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    assert background.wait(60)
    assert CLICK_BUCKET not in decoder_for(sam).buckets
    masks, _, _ = predictor.predict(*CLICK)
    assert calls == [PREFETCH_THREAD, "MainThread"]
    assert masks.shape == (3, 300, 400)


def test_one_prefetch_per_bucket(image, compiles):
    """A second set_image (a new image) compiles nothing: the bucket is kept per model."""
    sam = make_sam("reference")
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    assert background.wait(60)
    predictor.set_image(image[::-1].copy())
    assert background.wait(60)
    assert decoder_for(sam).prefetch(*CLICK_BUCKET) is None
    assert compiles == [PREFETCH_THREAD]


def test_segment_everything_does_not_compile_the_click_graph(image, compiles):
    from models.sam.automatic import SamAutomaticMaskGenerator

    sam = make_sam("reference")
    gen = SamAutomaticMaskGenerator(sam, points_per_side=2, progress=False)
    gen.predictor.set_image(image)
    assert background.wait(60)
    assert compiles == [] and CLICK_BUCKET not in decoder_for(sam).buckets
