"""The Python entry point: `load_neck`, input checks, profiles, structure vs the official module."""

from __future__ import annotations

import numpy as np
import pytest

from models.sam3 import DEFAULT, Sam3Neck, load_neck
from models.sam3.builder import INPUT_NAME, branch_builders, build_branch
from models.sam3.config import branch_name, expected_state_dict_shapes
from models.sam3.weights import synthetic_weights
from rlx.errors import InputError, ProfileError
from rlx.runtime import PRESETS


@pytest.fixture(scope="module")
def neck():
    """A reference-backend neck on synthetic weights (compiling it is cheap; running is not)."""
    return load_neck(synthetic_weights(0), profile="reference")


def test_config_matches_official_state_dict(neck_state):
    assert expected_state_dict_shapes() == {k: tuple(v.shape) for k, v in neck_state.items()}


def test_subgraphs_in_scale_order():
    assert list(branch_builders()) == ["branch_4x", "branch_2x", "branch_1x", "branch_0_5x"]
    assert [branch_name(s) for s in DEFAULT.scale_factors] == list(branch_builders())
    for i, (name, build) in enumerate(branch_builders().items()):
        g = build()
        assert g.name == name
        assert [v.name for v in g.inputs] == [INPUT_NAME] and g.inputs[0].shape == (1, 1024, 72, 72)
        assert g.outputs[0].shape == DEFAULT.level_shape(DEFAULT.scale_factors[i])
        assert all(w.startswith(f"convs.{i}.") for w in g.weights)


def test_4x_branch_uses_exact_gelu():
    gelus = [n for n in build_branch(0, 4.0).nodes if n.op == "gelu"]
    assert len(gelus) == 1 and gelus[0].attrs["approximate"] == "none"
    assert not any(n.op == "gelu" for i, s in enumerate((2.0, 1.0, 0.5), 1)
                   for n in build_branch(i, s).nodes)


def test_level_shapes():
    assert [DEFAULT.level_shape(s) for s in DEFAULT.scale_factors] == [
        (1, 256, 288, 288), (1, 256, 144, 144), (1, 256, 72, 72), (1, 256, 36, 36)]


def test_neck_object(neck):
    assert isinstance(neck, Sam3Neck) and len(neck.branches) == 4
    assert [b.name for b in neck.branches] == list(branch_builders())
    assert neck.profile.name == "reference"
    assert [p.shape for p in neck.pos] == [DEFAULT.level_shape(s) for s in DEFAULT.scale_factors]
    assert "branch_0_5x" in repr(neck)


@pytest.mark.parametrize("bad, what", [
    (np.zeros((1, 1024, 72, 72), np.float64), "float64"),
    (np.zeros((1, 1024, 64, 64), np.float32), "64,64"),
    (np.zeros((1, 768, 72, 72), np.float32), "768"),
    (np.zeros((2, 1024, 72, 72), np.float32), "2,1024"),
    (np.zeros((1024, 72, 72), np.float32), "1024,72,72]"),
])
def test_wrong_input_is_one_clear_error(neck, bad, what):
    with pytest.raises(InputError) as info:
        neck(bad)
    message = str(info.value)
    assert "float32[1,1024,72,72]" in message and what in message


def test_non_array_input(neck):
    with pytest.raises(InputError, match="numpy array, got list"):
        neck([[0.0]])


def test_profiles():
    w = synthetic_weights(0)
    assert load_neck(w).profile == PRESETS["default"]  # dict, no profile: the default preset
    assert load_neck(w, profile="debug").profile.name == "debug"
    with pytest.raises(ProfileError, match="no-such-preset"):
        load_neck(w, profile="no-such-preset")
