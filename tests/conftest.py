"""Suite-wide test setup.

Kernel caches go to one temporary directory per test session (unless
RLX_CACHE_DIR is set, as `.ci/run` does), so tests never read a developer's
cache and a run starts cold. The fast suite and the full-size parity tests
are all part of the default run.
"""

from __future__ import annotations

import os
import tempfile

import pytest


def pytest_configure(config):
    if not os.environ.get("RLX_CACHE_DIR"):
        os.environ["RLX_CACHE_DIR"] = tempfile.mkdtemp(prefix="rlx-test-cache-")


@pytest.fixture(scope="session")
def cache_dir() -> str:
    return os.environ["RLX_CACHE_DIR"]
