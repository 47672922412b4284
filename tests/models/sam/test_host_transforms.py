"""Resize-longest-side geometry against the official ResizeLongestSide."""

import numpy as np
import pytest

from models.sam.transforms import apply_boxes, apply_coords, get_preprocess_shape
from rlx.errors import InputError
from tests.support import official_sam  # noqa: F401  (installs the torchvision stand-in)
from segment_anything.utils.transforms import ResizeLongestSide


def _sizes():
    rng = np.random.default_rng(0)
    fixed = [(480, 640), (700, 300), (1, 1), (1, 2000), (2000, 1), (1024, 1024), (1023, 1025),
             (333, 1001), (1500, 2000), (3, 5), (683, 1024), (4000, 3000), (7, 2047)]
    rand = [tuple(int(v) for v in rng.integers(1, 5000, size=2)) for _ in range(300)]
    return fixed + rand


@pytest.mark.parametrize("target", [1024, 256, 64])
def test_get_preprocess_shape_matches_official(target):
    for h, w in _sizes():
        assert get_preprocess_shape(h, w, target) == ResizeLongestSide.get_preprocess_shape(h, w, target), (h, w)


def test_get_preprocess_shape_rounds_half_up():
    # 1024 * 5 / 8 = 640 exactly; 5 * 1024 / 2048 = 2.5 -> 3 (banker's rounding would give 2).
    assert get_preprocess_shape(5, 8, 1024) == (640, 1024)
    assert get_preprocess_shape(5, 2048, 1024) == (3, 1024)
    assert get_preprocess_shape(3, 2048, 1024) == (2, 1024)


@pytest.mark.parametrize("original", [(480, 640), (700, 300), (1500, 2000), (1024, 1024), (333, 1001)])
def test_apply_coords_and_boxes_match_official(original):
    rng = np.random.default_rng(1)
    ref = ResizeLongestSide(1024)
    coords = rng.uniform(-10, max(original) + 10, size=(3, 5, 2))
    ours = apply_coords(coords, original)
    assert ours.dtype == np.float64
    assert np.array_equal(ours, ref.apply_coords(coords, original))
    icoords = rng.integers(0, min(original), size=(7, 2))
    assert np.array_equal(apply_coords(icoords, original), ref.apply_coords(icoords, original))
    boxes = rng.uniform(0, min(original), size=(4, 4))
    ob = apply_boxes(boxes, original)
    assert ob.shape == (4, 4) and ob.dtype == np.float64
    assert np.array_equal(ob, ref.apply_boxes(boxes, original))
    assert np.array_equal(apply_boxes(boxes[0], original), ref.apply_boxes(boxes[0], original))


def test_inputs_are_not_modified():
    coords = np.array([[10.0, 20.0]])
    apply_coords(coords, (480, 640))
    assert coords.tolist() == [[10.0, 20.0]]


def test_other_target_length():
    coords = np.array([[100.0, 50.0]])
    assert np.array_equal(apply_coords(coords, (480, 640), 256),
                          ResizeLongestSide(256).apply_coords(coords, (480, 640)))


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: apply_coords(np.zeros((3, 3)), (10, 10)), ["last axis", "(3, 3)"]),
        (lambda: apply_coords(np.array([[np.nan, 1.0]]), (10, 10)), ["NaN"]),
        (lambda: apply_coords(np.array([["a", "b"]]), (10, 10)), ["numeric"]),
        (lambda: apply_coords(np.zeros((1, 2)), (0, 10)), ["positive"]),
        (lambda: apply_coords(np.zeros((1, 2)), 10), ["(height, width)"]),
        (lambda: apply_boxes(np.zeros((2, 3)), (10, 10)), ["boxes", "(2, 3)"]),
        (lambda: get_preprocess_shape(0, 10, 1024), ["0x10"]),
    ],
)
def test_bad_arguments_raise_input_error(call, words):
    with pytest.raises(InputError) as info:
        call()
    for word in words:
        assert word in str(info.value)
