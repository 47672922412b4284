"""Mask postprocessing against the official Sam.postprocess_masks."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from models.sam.postprocess import linear_resize_matrix, postprocess_masks, postprocess_matrices, threshold
from models.sam.transforms import get_preprocess_shape
from rlx.errors import InputError
from tests.support.official_sam import Sam


def official_postprocess(low, input_size, original_size, img_size):
    """Run the official method; it only reads image_encoder.img_size from self."""
    fake_self = SimpleNamespace(image_encoder=SimpleNamespace(img_size=img_size))
    with torch.no_grad():
        out = Sam.postprocess_masks(fake_self, torch.from_numpy(low), input_size, original_size)
    return out.numpy()


def _logits(shape, seed):
    rng = np.random.default_rng(seed)
    # Smooth-ish logits in a realistic range (about +-20) with sign changes.
    base = rng.normal(0, 6, size=shape).astype(np.float32)
    return base + np.linspace(-8, 8, shape[-1], dtype=np.float32)


CASES = [
    # (low-res size, img_size, original size)
    (256, 1024, (480, 640)),     # downscale back to the original
    (256, 1024, (700, 300)),     # portrait
    (256, 1024, (1500, 2000)),   # upscale past the encoder frame
    (256, 1024, (1024, 1024)),   # no padding, second resize is a copy
    (256, 1024, (999, 1001)),    # odd sizes
    (256, 1024, (31, 2000)),     # extreme aspect
    (64, 256, (180, 240)),       # the small config
    (64, 256, (256, 100)),
]


@pytest.mark.parametrize("low_size, img_size, original", CASES, ids=lambda v: str(v))
def test_postprocess_matches_official(low_size, img_size, original):
    input_size = get_preprocess_shape(*original, img_size)
    low = _logits((2, 3, low_size, low_size), seed=sum(original))
    ref = official_postprocess(low, input_size, original, img_size)
    ours = postprocess_masks(low, input_size, original, img_size)
    assert ours.dtype == np.float32 and ours.shape == ref.shape == (2, 3) + tuple(original)
    err = np.abs(ours - ref).max()
    assert err <= 1e-4, f"max |delta| {err:.2e}"
    # Binary masks agree wherever the reference is not within rounding of the threshold.
    decided = np.abs(ref) > 1e-4
    assert np.array_equal(threshold(ours)[decided], (ref > Sam.mask_threshold)[decided])


def test_non_square_low_res_and_float64_input():
    low = _logits((1, 1, 48, 80), seed=3).astype(np.float64)
    ref = official_postprocess(low.astype(np.float32), (300, 500), (600, 1000), 512)
    ours = postprocess_masks(low, (300, 500), (600, 1000), 512)
    assert ours.dtype == np.float32 and np.abs(ours - ref).max() <= 1e-4


def test_resize_matrix_matches_torch_1d():
    for n_in, n_out in [(256, 1024), (768, 1500), (1024, 2000), (683, 1999), (1024, 333), (7, 5), (5, 5)]:
        v = np.random.default_rng(n_in).normal(size=n_in).astype(np.float32)
        ref = torch.nn.functional.interpolate(
            torch.from_numpy(v)[None, None, None], (1, n_out), mode="bilinear", align_corners=False
        )[0, 0, 0].numpy()
        m = linear_resize_matrix(n_in, n_out)
        assert m.shape == (n_out, n_in) and np.allclose(m.sum(axis=1), 1.0)
        assert np.abs(m @ v - ref).max() <= 2e-6, (n_in, n_out)


def test_composite_matrices_are_banded_and_cached():
    mh, mw = postprocess_matrices((256, 256), (768, 1024), (1500, 2000), 1024)
    assert mh.shape == (1500, 256) and mw.shape == (2000, 256)
    assert (mh != 0).sum(axis=1).max() <= 3 and (mw != 0).sum(axis=1).max() <= 3
    again = postprocess_matrices((256, 256), (768, 1024), (1500, 2000), 1024)
    assert again[0] is mh and not mh.flags.writeable


def test_threshold():
    m = np.array([[-1.0, 0.0, 1e-7, 3.0]], np.float32)
    assert threshold(m).tolist() == [[False, False, True, True]]
    assert threshold(m, 0.5).tolist() == [[False, False, False, True]]
    assert threshold(m).dtype == bool


@pytest.mark.parametrize(
    "args, words",
    [
        ((np.zeros((3, 64, 64), np.float32), (256, 256), (256, 256), 256), ["[B, C, h, w]", "(3, 64, 64)"]),
        ((np.zeros((1, 1, 64, 64), np.int32), (256, 256), (256, 256), 256), ["int32"]),
        ((np.zeros((1, 1, 64, 64), np.float32), (300, 256), (300, 256), 256), ["input_size", "256"]),
        ((np.zeros((1, 1, 64, 64), np.float32), (256, 256), (0, 256), 256), ["original_size"]),
        ((np.zeros((1, 1, 64, 64), np.float32), 256, (256, 256), 256), ["input_size"]),
        ((np.zeros((1, 1, 0, 64), np.float32), (256, 256), (256, 256), 256), ["empty"]),
    ],
)
def test_bad_arguments_raise_input_error(args, words):
    with pytest.raises(InputError) as info:
        postprocess_masks(*args)
    for word in words:
        assert word in str(info.value)
