"""Host-side sine positional encoding against the official PositionEmbeddingSine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.sam3.position_encoding import sine_position_encoding
from tests.models.sam3 import official

MAX_ABS = 1e-4
MAX_REL_L2 = 1e-5


@pytest.mark.parametrize("h,w,d", [(288, 288, 256), (144, 144, 256), (72, 72, 256),
                                   (36, 36, 256), (5, 9, 256), (1, 3, 64), (17, 4, 128)])
def test_matches_official(h, w, d):
    want = official.position_encoding(d)(torch.zeros(1, d, h, w)).numpy()
    got = sine_position_encoding(h, w, d)
    assert got.shape == want.shape == (1, d, h, w) and got.dtype == np.float32
    diff = got.astype(np.float64) - want
    assert np.abs(diff).max() <= MAX_ABS
    assert np.linalg.norm(diff) / np.linalg.norm(want) <= MAX_REL_L2


def test_y_features_then_x_features():
    pos = sine_position_encoding(3, 5, 8)
    # the first half varies along rows only, the second half along columns only
    assert np.ptp(pos[0, :4], axis=2).max() == 0 and np.ptp(pos[0, :4], axis=1).max() > 0
    assert np.ptp(pos[0, 4:], axis=1).max() == 0 and np.ptp(pos[0, 4:], axis=2).max() > 0


def test_cached_per_shape_and_read_only():
    a = sine_position_encoding(36, 36, 256)
    assert sine_position_encoding(36, 36, 256) is a
    assert sine_position_encoding(36, 18, 256) is not a
    assert not a.flags.writeable
    with pytest.raises(ValueError):
        a[0, 0, 0, 0] = 1.0


@pytest.mark.parametrize("args", [(0, 4, 256), (4, 4, 254)])
def test_bad_arguments(args):
    with pytest.raises(ValueError):
        sine_position_encoding(*args)
