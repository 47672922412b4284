"""Prompt validation of ``SamPredictor.predict``: one clear `InputError` per mistake.

Runs on a small-config model with synthetic weights (validation happens
before any compiled graph runs; the few calls that do run use the reference
backend).
"""

import warnings

import numpy as np
import pytest

from models.sam.config import small_config
from models.sam.model import ImageNotSetError, SamPredictor, build_sam
from models.sam.predict import predict, set_image_embedding
from models.sam.weights import SyntheticWeightsWarning
from rlx.errors import InputError, RlxError
from tests.support import synthetic_images

H, W = 300, 500


@pytest.fixture(scope="module")
def sam():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntheticWeightsWarning)
        return build_sam(small_config(), checkpoint=None, profile="reference", seed=3)


@pytest.fixture(scope="module")
def predictor(sam):
    p = SamPredictor(sam)
    p.set_image(synthetic_images.make_image(H, W, seed=2))
    return p


def test_predict_before_set_image(sam):
    p = SamPredictor(sam)
    with pytest.raises(ImageNotSetError, match="set_image"):
        p.predict(point_coords=np.array([[10.0, 10.0]]), point_labels=np.array([1]))
    assert issubclass(ImageNotSetError, RlxError)
    p.set_image(synthetic_images.make_image(H, W, seed=2))
    p.reset_image()
    with pytest.raises(ImageNotSetError):
        p.predict(box=np.array([0, 0, 10, 10]))


S = small_config().mask_input_size

BAD = {
    "empty prompt": (dict(), "empty prompt"),
    "labels missing": (dict(point_coords=[[10, 10]]), "point_labels must be supplied"),
    "coords missing": (dict(point_labels=[1]), "without point_coords"),
    "labels count": (dict(point_coords=[[10, 10], [20, 20]], point_labels=[1]),
                     "one label per point: 2 points"),
    "labels shape": (dict(point_coords=[[10, 10]], point_labels=[[1]]), "one label per point"),
    "label value": (dict(point_coords=[[10, 10]], point_labels=[2]), r"got \[2.0\]"),
    "coords shape": (dict(point_coords=[10, 10], point_labels=[1]), r"N x 2 .* shape \(2,\)"),
    "no points": (dict(point_coords=np.zeros((0, 2)), point_labels=np.zeros(0)), "no points"),
    "too many points": (dict(point_coords=np.full((63, 2), 5.0), point_labels=np.ones(63)),
                        "at most 62 points per prompt, got 63"),
    "nan point": (dict(point_coords=[[np.nan, 10]], point_labels=[1]), "NaN"),
    "text point": (dict(point_coords=[["a", "b"]], point_labels=[1]), "numeric"),
    "x outside": (dict(point_coords=[[10, 10], [W + 1, 5]], point_labels=[1, 1]),
                  rf"point 1 \(x={W + 1}, y=5\) is outside the {W}x{H} image"),
    "y negative": (dict(point_coords=[[10, -0.5]], point_labels=[1]), "point 0 .* outside"),
    "box shape": (dict(box=[0, 0, 10]), "box must be 4 numbers"),
    "box order": (dict(box=[50, 10, 20, 40]), "x0 <= x1 and y0 <= y1"),
    "box outside": (dict(box=[10, 10, 20, H + 50]), r"box corner \(x1, y1\) .* outside"),
    "mask 2d": (dict(mask_input=np.zeros((S, S))), rf"1 x {S} x {S}"),
    "mask size": (dict(mask_input=np.zeros((1, S // 2, S // 2))), "got shape"),
    "mask batch": (dict(mask_input=np.zeros((2, S, S))), "got shape"),
    "mask inf": (dict(mask_input=np.full((1, S, S), np.inf)), "infinite"),
    "threshold": (dict(box=[0, 0, 10, 10], mask_threshold="high"), "mask_threshold"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_prompt_is_one_clear_input_error(predictor, name):
    kwargs, pattern = BAD[name]
    kwargs = {k: (np.asarray(v) if isinstance(v, list) else v) for k, v in kwargs.items()}
    with pytest.raises(InputError, match=pattern) as info:
        predictor.predict(**kwargs)
    assert "\n" not in str(info.value)


def test_edges_of_the_image_are_inside(predictor):
    """The closed interval: a click on the far corner and a full-image box are valid."""
    masks, iou, low = predictor.predict(point_coords=np.array([[W, H], [0, 0]]),
                                        point_labels=np.array([1, 0]),
                                        box=np.array([0, 0, W, H]), multimask_output=False)
    assert masks.shape == (1, H, W) and iou.shape == (1,) and low.shape == (1, S, S)


def test_user_threshold_and_logits(predictor):
    prompt = dict(point_coords=np.array([[200.0, 100.0]]), point_labels=np.array([1]))
    logits, iou, low = predictor.predict(**prompt, return_logits=True)
    assert logits.dtype == np.float32 and logits.shape == (3, H, W)
    for thr in (0.0, 0.7, -1.5):
        masks, iou2, low2 = predict(predictor, **prompt, mask_threshold=thr)
        assert masks.dtype == np.bool_
        assert np.array_equal(masks, logits > thr)
        assert np.array_equal(iou, iou2) and np.array_equal(low, low2)
    # the default is the model's mask_threshold, 0.0
    assert np.array_equal(predictor.predict(**prompt)[0], logits > 0.0)
    # thresholds change the masks (the test above is not vacuous)
    assert not np.array_equal(logits > 0.7, logits > -1.5)


def test_mask_input_from_previous_prediction_round_trips(predictor):
    """The documented loop: feed the best low-res logits back as the next mask_input."""
    prompt = dict(point_coords=np.array([[200.0, 100.0]]), point_labels=np.array([1]))
    _, iou, low = predictor.predict(**prompt)
    best = low[int(np.argmax(iou))][None]
    masks, _, _ = predictor.predict(**prompt, mask_input=best, multimask_output=False)
    assert masks.shape == (1, H, W)


def test_set_image_embedding_checks_its_input(sam):
    p = SamPredictor(sam)
    c = small_config()
    with pytest.raises(InputError, match="image embedding must have shape"):
        set_image_embedding(p, np.zeros((1, c.prompt_embed_dim, 8, 8)), (H, W))
    with pytest.raises(InputError, match="original_size"):
        set_image_embedding(p, np.zeros((1, c.prompt_embed_dim, 16, 16)), "big")
    assert not p.is_image_set
