"""The compiled post-processing kernels against the blockwise BLAS version.

`test_host_postprocess` compares `postprocess_masks` (compiled by default)
with the official ``Sam.postprocess_masks``; here the compiled path is
checked against the blockwise fallback on every size case, for the fused
threshold (`postprocess_binary`), thread counts, strided and float64 inputs,
and the table builders' edge cases.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.sam import postprocess as pp
from models.sam.postprocess_kernels import TAPS, bands_of, kernels, taps_of
from models.sam.transforms import get_preprocess_shape
from rlx.backends.common import threads
from tests.models.sam.test_host_postprocess import CASES, _logits


def test_numba_kernels_are_available():
    """Without them every test below would silently compare the fallback with itself."""
    assert kernels() is not None


@pytest.mark.parametrize("low_size, img_size, original", CASES, ids=lambda v: str(v))
def test_compiled_equals_blockwise(low_size, img_size, original):
    input_size = get_preprocess_shape(*original, img_size)
    low = _logits((2, 3, low_size, low_size), seed=sum(original) + 1)
    assert pp._fused_tables((low_size, low_size), input_size, original, img_size) is not None
    ref = pp.postprocess_masks(low, input_size, original, img_size, compiled=False)
    got = pp.postprocess_masks(low, input_size, original, img_size)
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())
    binary = pp.postprocess_binary(low, input_size, original, img_size)
    assert binary.dtype == np.bool_ and binary.shape == ref.shape
    decided = np.abs(ref) > 1e-4
    assert np.array_equal(binary[decided], (ref > 0)[decided])
    # the threshold is applied to the compiled logits exactly
    assert np.array_equal(binary, got > 0)


def test_user_threshold_and_thread_counts():
    original, img = (1500, 2000), 1024
    input_size = get_preprocess_shape(*original, img)
    low = _logits((1, 4, 256, 256), seed=9)[:, 1:]  # the multimask selection: a strided view
    ref = pp.postprocess_masks(np.ascontiguousarray(low), input_size, original, img,
                               compiled=False)
    threads.configure(2)
    logits = pp.postprocess_masks(low, input_size, original, img)
    for n in (1, 2):
        assert np.array_equal(pp._fused(low, input_size, original, img, None, n), logits)
        for t in (0.0, 2.5, -1.0):
            got = pp._fused(low, input_size, original, img, t, n)
            assert np.array_equal(got, logits > np.float32(t))
            decided = np.abs(ref - t) > 1e-4
            assert np.array_equal(got[decided], (ref > t)[decided])
    assert np.array_equal(pp.postprocess_binary(low, input_size, original, img, 2.5),
                          logits > np.float32(2.5))


def test_float64_input():
    low = _logits((1, 1, 48, 80), seed=3).astype(np.float64)
    ref = pp.postprocess_masks(low, (300, 500), (600, 1000), 512, compiled=False)
    got = pp.postprocess_masks(low, (300, 500), (600, 1000), 512)
    assert got.dtype == np.float32 and np.abs(got - ref).max() <= 1e-4


def test_only_the_rows_the_crop_keeps_are_read():
    """Low-res rows below the crop never reach the output (a wide image: 768 of 1024)."""
    input_size = get_preprocess_shape(1500, 2000, 1024)
    rows = pp._fused_tables((256, 256), input_size, (1500, 2000), 1024)[0]
    assert rows < 256
    low = _logits((1, 1, 256, 256), seed=4)
    changed = low.copy()
    changed[0, 0, rows:] = 1e6
    a = pp.postprocess_masks(low, input_size, (1500, 2000), 1024)
    assert np.array_equal(a, pp.postprocess_masks(changed, input_size, (1500, 2000), 1024))


def test_tap_and_band_tables():
    rng = np.random.default_rng(0)
    m = np.zeros((37, 20), np.float32)
    for r in range(37):
        start = min(r // 2, 20 - 3)
        k = 1 + r % 3
        m[r, start:start + k] = rng.random(k) + 0.1
    idx, wts = taps_of(m)
    assert idx.shape == wts.shape == (37, TAPS)
    x = rng.standard_normal(20).astype(np.float32)
    np.testing.assert_allclose((wts * x[idx]).sum(axis=1), m @ x, rtol=1e-6)
    base, bands = bands_of(m, block=8)
    assert bands.shape[0] == 5 and bands.shape[2] == 8 and (base + bands.shape[1] <= 20).all()
    dense = np.zeros((5 * 8, 20), np.float32)
    for b in range(5):
        dense[b * 8:(b + 1) * 8, base[b]:base[b] + bands.shape[1]] = bands[b].T
    np.testing.assert_array_equal(dense[:37], m)
    assert not dense[37:].any()
    m[3, :] = 1.0  # twenty taps in one row: not a bilinear composite, no kernel tables
    assert taps_of(m) is None


def test_matrices_the_kernels_cannot_take_fall_back_to_blas(monkeypatch):
    monkeypatch.setattr(pp, "_fused_tables", lambda *a: None)
    low = _logits((1, 2, 64, 64), seed=5)
    got = pp.postprocess_binary(low, (256, 192), (400, 300), 256)
    ref = pp.postprocess_masks(low, (256, 192), (400, 300), 256, compiled=False) > 0
    assert np.array_equal(got, ref)
