"""Shared pieces of the SAM prompt-encoder / mask-decoder / predict tests.

Backends: every test that runs compiled graphs is parametrized over the
profiles whose backend module exists in ``rlx/backends/`` (the reference
interpreter always; ``numba`` and ``llvm`` as soon as their packages land).
A backend whose package exists but fails to import makes the tests fail, not
skip: `available_profiles` only looks for the package directory.

Official models are re-drawn (`tests.support.official_sam`), so every
parameter -- the Fourier gaussian matrix, the point / not-a-point / no-mask
embeddings, the IoU and mask tokens, every LayerNorm -- carries weight.
"""

from __future__ import annotations

import functools
import os
from typing import List, Tuple

import numpy as np

import rlx.backends
from models.sam.config import small_config
from tests.support import official_sam

import torch  # noqa: E402  (after official_sam, which installs the torchvision shim)

#: seed of the small official model used by the decoder / predict tests
SMALL_SEED = 5

_BACKENDS_DIR = os.path.dirname(rlx.backends.__file__)


def available_profiles() -> List[str]:
    """Preset names of every backend whose package exists (reference first)."""
    out = ["reference"]
    for name in ("numba", "llvm"):
        if os.path.isfile(os.path.join(_BACKENDS_DIR, name, "backend.py")):
            out.append(name)
    return out


PROFILES = available_profiles()


@functools.lru_cache(maxsize=None)
def small_official():
    """The official small-config SAM, re-drawn with `SMALL_SEED` (read-only: do not modify)."""
    return official_sam.build_official(small_config(), seed=SMALL_SEED)


@functools.lru_cache(maxsize=None)
def small_weights():
    return official_sam.state_dict_numpy(small_official())


def max_abs(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(np.asarray(got, np.float64) - np.asarray(ref, np.float64)).max())


def assert_close(got: np.ndarray, ref: np.ndarray, what: str, rel: float = 1e-4) -> float:
    """max |got - ref| <= rel * max(1, max |ref|); prints the measured number (pytest -s)."""
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != official {ref.shape}"
    assert got.dtype == np.float32, f"{what}: dtype {got.dtype}"
    assert np.isfinite(got).all(), f"{what}: non-finite values"
    d = max_abs(got, ref)
    scale = max(1.0, float(np.abs(ref).max()))
    print(f"\n[parity] {what}: max|d|={d:.3e} (max|ref|={scale:.2f})")
    assert d <= rel * scale, f"{what}: max|d| = {d:.3e} > {rel:g} * {scale:.3g}"
    return d


def t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x))


def random_inputs(shapes: List[Tuple[int, ...]], seed: int, scale: float = 1.0):
    rng = np.random.default_rng(seed)
    return [(scale * rng.standard_normal(s)).astype(np.float32) for s in shapes]
