"""Shared, session-scoped fixtures for the SAM3 neck tests.

The official neck and its full-size forward pass ([1, 1024, 72, 72] in, 4
levels out, about 215 GFLOP) are computed once per session and shared by
every backend's parity test; the tests only read them.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.models.sam3 import official

SEED_WEIGHTS = 0
SEED_INPUT = 1


@pytest.fixture(scope="session")
def official_neck():
    """The official image-only Sam3DualViTDetNeck, every weight re-drawn (seed 0)."""
    return official.build_official_neck(SEED_WEIGHTS)


@pytest.fixture(scope="session")
def neck_state(official_neck):
    """The official neck's state dict as numpy arrays (no prefix): ``convs.*`` only."""
    return official.state_dict_numpy(official_neck)


@pytest.fixture(scope="session")
def checkpoint_state():
    """State dict of the same neck built with its SAM2 copy (``add_sam2_neck=True``).

    Re-drawing runs in state-dict order, ``convs.*`` first, so with the same
    seed its ``convs.*`` equal `neck_state`'s; the ``sam2_convs.*`` copy has
    other values, so a loader that read it by mistake would be caught.
    """
    return official.state_dict_numpy(
        official.build_official_neck(SEED_WEIGHTS, add_sam2_neck=True))


@pytest.fixture(scope="session")
def feature():
    """A full-size trunk feature [1, 1024, 72, 72], N(0, 1)."""
    return np.random.default_rng(SEED_INPUT).standard_normal((1, 1024, 72, 72), dtype=np.float32)


@pytest.fixture(scope="session")
def official_levels(official_neck, feature):
    """[(features, pos)] of the official neck on `feature`, scales 4, 2, 1, 0.5."""
    return official.run_official(official_neck, feature)
