"""Fixtures for the SAM host-side tests.

The repository root is put on ``sys.path`` so ``models`` and ``tests.support``
import however pytest is started (the repo has no installed package and no
top-level conftest). Reference models are session-scoped: building them is
the expensive part, and the tests only read them.
"""

import os
import sys
import time

import pytest

_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.support import official_sam, synthetic_images  # noqa: E402
from models.sam.config import small_config  # noqa: E402


@pytest.fixture(scope="session")
def small_sam():
    """Official SAM with the small config, every parameter re-drawn (seed 0)."""
    return official_sam.build_official(small_config(), seed=0)


@pytest.fixture(scope="session")
def vit_b_build():
    """(model, seconds): a full official ViT-B re-drawn with seed 0, and its build time."""
    t0 = time.perf_counter()
    model = official_sam.build_official("vit_b", seed=0)
    return model, time.perf_counter() - t0


@pytest.fixture(scope="session")
def image_files(tmp_path_factory):
    """name -> path of the synthetic image zoo, written once per session."""
    return synthetic_images.write_test_images(str(tmp_path_factory.mktemp("sam_images")))
