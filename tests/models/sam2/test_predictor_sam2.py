"""``SAM2ImagePredictor`` end to end against the official one, on re-drawn weights (f32).

Both sides start from the same uint8 image: the official predictor runs its
own ``set_image`` (SAM2Transforms through the torchvision stand-in of
`tests.support.official_sam2_predictor`, then ``forward_image``), rlx runs its
preprocessing and the compiled image and prompt graphs. Compared per prompt:
low-res logits (max|d| <= 1e-3), IoU (|d| <= 1e-4) and the full-size masks
(>= 99.99 % identical pixels).

hiera_t runs at the official 1024 (the one full-size test of this model);
the other sizes run on 128-pixel models (the size of their image-feature tests, so the
image graphs' kernels are shared through the kernel cache).
"""

from __future__ import annotations

import numpy as np
import pytest

from models.sam2 import SAM2ImagePredictor, build_sam2
from models.sam2.predictor import ImageNotSetError
from rlx.errors import InputError
from tests.support.official_sam2 import official_sam2, state_dict_numpy
from tests.support.official_sam2_predictor import official_predictor

LOW_TOL, IOU_TOL, PIXELS = 1e-3, 1e-4, 0.9999


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth synthetic photo-like image (gradients + blobs), not pure noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([xx / w * 255, yy / h * 255, (xx + yy) / (h + w) * 255], -1)
    for _ in range(6):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.05, 0.3) * min(h, w)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


def _pair(name: str, image_size, image: np.ndarray, seed: int = 0):
    ref_model = official_sam2(name, seed=seed, image_size=image_size)
    ref = official_predictor(ref_model)
    ref.set_image(image)
    model = build_sam2(name, checkpoint=state_dict_numpy(ref_model), image_size=image_size)
    ours = SAM2ImagePredictor(model)
    ours.set_image(image)
    return ref, ours


def _compare(ref, ours, **prompt):
    r_masks, r_iou, r_low = ref.predict(**prompt)
    masks, iou, low = ours.predict(**prompt)
    assert masks.shape == r_masks.shape and masks.dtype == r_masks.dtype
    assert iou.shape == r_iou.shape and low.shape == r_low.shape
    d_low = float(np.abs(low - r_low).max())
    d_iou = float(np.abs(iou - r_iou).max())
    if prompt.get("return_logits"):
        assert float(np.abs(masks - r_masks).max()) <= LOW_TOL
        masks, r_masks = masks > 0, r_masks > 0
    same = float((masks == r_masks).mean())
    print(f"parity: low-res max|d| {d_low:.2e}, IoU max|d| {d_iou:.2e}, "
          f"masks identical {same:.6f}")  # shown with pytest -s
    assert d_low <= LOW_TOL, f"low-res logits max|d| {d_low}"
    assert d_iou <= IOU_TOL, f"IoU max|d| {d_iou}"
    assert same >= PIXELS, f"identical mask pixels {same:.6f}"
    return masks, iou, low


# ---- hiera_t at 1024 ---------------------------------------------------------------------

H, W = 480, 640


@pytest.fixture(scope="module")
def tiny():
    return _pair("sam2.1_hiera_t", None, _image(H, W))


PROMPTS = {
    "points": dict(point_coords=[[320, 240], [100, 400]], point_labels=[1, 0]),
    "box": dict(box=[80, 60, 500, 420]),
    "points+box": dict(point_coords=[[300, 200]], point_labels=[1], box=[80, 60, 500, 420]),
    "one click": dict(point_coords=[[10.5, 470.25]], point_labels=[1]),
}


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("kind", list(PROMPTS))
def test_hiera_t_prompts(tiny, kind, multimask):
    ref, ours = tiny
    masks, iou, low = _compare(ref, ours, multimask_output=multimask, **PROMPTS[kind])
    assert masks.shape == ((3 if multimask else 1), H, W)
    assert low.shape[-2:] == (256, 256)


def test_hiera_t_mask_input(tiny):
    """Refinement: the best low-res mask of a click fed back with a second click."""
    ref, ours = tiny
    _, iou, low = _compare(ref, ours, **PROMPTS["points"])
    best = low[int(np.argmax(iou))][None]
    _compare(ref, ours, point_coords=[[320, 240], [500, 100]], point_labels=[1, 0],
             mask_input=best, multimask_output=False)
    _compare(ref, ours, mask_input=best, multimask_output=True)  # a mask prompt alone


def test_hiera_t_logits_normalized_and_batched(tiny):
    ref, ours = tiny
    _compare(ref, ours, point_coords=[[0.5, 0.5]], point_labels=[1], normalize_coords=False,
             return_logits=True)
    masks, iou, low = _compare(ref, ours, box=[[80, 60, 500, 420], [0, 0, 320, 240]],
                               multimask_output=False)
    assert masks.shape == (2, 1, H, W) and iou.shape == (2, 1)


def test_hiera_t_features_and_embedding(tiny):
    ref, ours = tiny
    emb = ours.get_image_embedding()
    assert emb.shape == (1, 256, 64, 64) and not emb.flags.writeable
    np.testing.assert_allclose(emb, ref.get_image_embedding().numpy(), atol=1e-4, rtol=0)


# ---- the other sizes, 128-pixel models ------------------------------------------------------


@pytest.mark.parametrize("name", ["sam2_hiera_s", "sam2.1_hiera_b+", "sam2_hiera_l"])
def test_other_sizes(name):
    ref, ours = _pair(name, 128, _image(200, 150, seed=1), seed=1)
    _compare(ref, ours, point_coords=[[75, 100]], point_labels=[1], box=[10, 20, 140, 190])
    _, iou, low = _compare(ref, ours, point_coords=[[30, 40]], point_labels=[1],
                           multimask_output=False)
    _compare(ref, ours, point_coords=[[30, 40], [120, 150]], point_labels=[1, 0],
             mask_input=low, multimask_output=False)


# ---- errors ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_predictor():
    ref_model = official_sam2("sam2.1_hiera_t", seed=2, image_size=256)
    model = build_sam2("sam2.1_hiera_t", checkpoint=state_dict_numpy(ref_model),
                       image_size=256, compile_image=False)
    return SAM2ImagePredictor(model)


def test_predict_before_set_image(small_predictor):
    small_predictor.reset_predictor()
    with pytest.raises(ImageNotSetError, match="set_image"):
        small_predictor.predict(point_coords=[[1, 1]], point_labels=[1])


@pytest.mark.parametrize("prompt, message", [
    (dict(), "empty prompt"),
    (dict(point_coords=[[10, 10]]), "point_labels must be supplied"),
    (dict(point_coords=[[10, 10]], point_labels=[1, 1]), "one label per point"),
    (dict(point_coords=[[10, 10]], point_labels=[2]), "point_labels must be 1"),
    (dict(point_coords=[[10, 500]], point_labels=[1]), "outside the 150x200 image"),
    (dict(point_coords=[[0.5, 1.5]], point_labels=[1], normalize_coords=False), r"outside \[0, 1\]"),
    (dict(point_coords=[[np.nan, 1]], point_labels=[1]), "finite"),
    (dict(box=[10, 10, 5, 20]), "x0 <= x1"),
    (dict(box=[1, 2, 3]), "box must be 4 numbers"),
    (dict(mask_input=np.zeros((1, 256, 256))), "mask_input must be 1 x 64 x 64"),
    (dict(point_coords=[[1, 1]], point_labels=[1], box=[[0, 0, 5, 5], [0, 0, 6, 6]]),
     "1 point prompts but 2 boxes"),
])
def test_bad_prompts(small_predictor, prompt, message):
    g = 16
    rng = np.random.default_rng(0)
    feats = {"image_embed": rng.standard_normal((1, 256, g, g)),
             "high_res_0": rng.standard_normal((1, 32, 4 * g, 4 * g)),
             "high_res_1": rng.standard_normal((1, 64, 2 * g, 2 * g))}
    small_predictor.set_features(feats, (200, 150))
    with pytest.raises(InputError, match=message):
        small_predictor.predict(**prompt)


def test_bad_features_and_options(small_predictor):
    with pytest.raises(InputError, match="image_embed"):
        small_predictor.set_features({"image_embed": np.zeros((1, 256, 8, 8))}, (10, 10))
    with pytest.raises(InputError, match="max_hole_area"):
        SAM2ImagePredictor(small_predictor.model, max_hole_area=10)
    with pytest.raises(InputError, match="build_sam2"):
        SAM2ImagePredictor(object())


def test_image_batch_matches_official():
    """set_image_batch / predict_batch: one prompt per image, each against the official batch."""
    images = [_image(120, 160, seed=3), _image(200, 100, seed=4)]
    ref_model = official_sam2("sam2.1_hiera_t", seed=4, image_size=256)
    ref = official_predictor(ref_model)
    ref.set_image_batch(images)
    ours = SAM2ImagePredictor(build_sam2("sam2.1_hiera_t", checkpoint=state_dict_numpy(ref_model),
                                         image_size=256))
    ours.set_image_batch(images)
    prompts = dict(point_coords_batch=[np.array([[50.0, 60.0]]), np.array([[20.0, 150.0]])],
                   point_labels_batch=[np.array([1]), np.array([1])],
                   box_batch=[None, np.array([5.0, 10.0, 90.0, 190.0])])
    r_masks, r_iou, r_low = ref.predict_batch(**prompts)
    masks, iou, low = ours.predict_batch(**prompts)
    for i in range(2):
        assert masks[i].shape == r_masks[i].shape == (3,) + images[i].shape[:2]
        assert np.abs(low[i] - r_low[i]).max() <= LOW_TOL
        assert np.abs(iou[i] - r_iou[i]).max() <= IOU_TOL
        assert (masks[i] == r_masks[i]).mean() >= PIXELS
