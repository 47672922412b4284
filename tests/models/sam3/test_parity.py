"""Full-size parity of the compiled SAM3 neck against the official module, per backend.

Every backend that exists in the repository (a module for its entry in
`rlx.backends.base.BACKENDS`) is exercised; a backend whose module exists
but fails to import or compile fails the test, it is not skipped.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from models.sam3 import load_neck
from models.sam3.config import DEFAULT
from rlx.backends.base import BACKENDS
from rlx.runtime import PRESETS

MAX_ABS = 1e-4
MAX_REL_L2 = 1e-5
SCALES = (4.0, 2.0, 1.0, 0.5)


def _present_backends() -> list[str]:
    names = []
    for name, target in BACKENDS.items():
        module = target.partition(":")[0]
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # a parent package is missing
            found = False
        if found:
            names.append(name)
    return names


BACKEND_NAMES = _present_backends()


def test_reference_backend_is_among_the_tested():
    assert "reference" in BACKEND_NAMES


def _errors(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    diff = got.astype(np.float64) - want.astype(np.float64)
    return float(np.abs(diff).max()), float(np.linalg.norm(diff) / np.linalg.norm(want))


@pytest.fixture(scope="module", params=BACKEND_NAMES)
def backend_levels(request, neck_state, feature):
    profile = PRESETS[request.param] if request.param in PRESETS else request.param
    prefixed = {f"detector.backbone.vision_backbone.{k}": v for k, v in neck_state.items()}
    neck = load_neck(prefixed, profile=profile)
    assert neck.profile.backend == request.param
    return request.param, neck, neck(feature)


@pytest.mark.slow
def test_levels_match_official(backend_levels, official_levels):
    backend, neck, levels = backend_levels
    assert len(levels) == len(official_levels) == 4
    report = []
    for scale, (feat, pos), (want_feat, want_pos) in zip(SCALES, levels, official_levels):
        expected = DEFAULT.level_shape(scale)
        for name, got, want in (("features", feat, want_feat), ("pos", pos, want_pos)):
            assert isinstance(got, np.ndarray) and got.dtype == np.float32, (scale, name)
            assert got.shape == want.shape == expected, (scale, name, got.shape, want.shape)
            max_abs, rel = _errors(got, want)
            report.append(f"{backend} {scale:g}x {name}: max|d|={max_abs:.2e} relL2={rel:.2e}")
            assert max_abs <= MAX_ABS and rel <= MAX_REL_L2, report[-1]
    print("\n".join(report))


def test_branches_went_through_the_general_lowering(backend_levels):
    """No HIR conv/deconv/pool survives: the general passes lowered every one of them."""
    _, neck, _ = backend_levels
    for branch in neck.branches:
        ops = {node.op for node in branch.graph.nodes}
        assert not ops & {"conv2d", "conv_transpose2d", "max_pool2d"}, (branch.name, ops)


def test_results_survive_the_next_call(backend_levels, feature):
    """Returned levels are the caller's: a later call (same arena) must not overwrite them.

    Uses the two cheap branches (1x, 0.5x) so the check costs about a second.
    """
    _, neck, levels = backend_levels
    before = [levels[i][0].copy() for i in (2, 3)]
    other = (feature * np.float32(-0.5)).astype(np.float32)
    fresh = [neck.branches[i](other)[0] for i in (2, 3)]
    for i, old, new in zip((2, 3), before, fresh):
        np.testing.assert_array_equal(levels[i][0], old)
        assert not np.array_equal(new, old)
    again = [neck.branches[i](feature)[0] for i in (2, 3)]
    for old, new in zip(before, again):
        np.testing.assert_array_equal(new, old)
