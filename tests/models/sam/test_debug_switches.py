"""RLX_SAM_DEBUG_* switches: parsed from the environment, announced, and each
one checked against the same change made to the official PyTorch model."""

import warnings

import pytest
import torch

from models.sam import build_sam, small_config
from models.sam.debug import ENV_VARS, DebugOptions, DebugSwitchError, DebugSwitchWarning
from tests.models.sam.fixtures_encoder import (
    assert_parity, official_embedding, small_checkpoint, small_input, small_official)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ENV_VARS.values():
        monkeypatch.delenv(var, raising=False)


# ---- parsing ---------------------------------------------------------------------------------

def test_defaults_are_off():
    opts = DebugOptions.from_env({})
    assert opts == DebugOptions() and not opts.active and opts.describe() == ""


def test_all_switches_parse():
    env = {"RLX_SAM_DEBUG_DEPTH": " 3 ", "RLX_SAM_DEBUG_NO_RELPOS": "true",
           "RLX_SAM_DEBUG_FORCE_GLOBAL": "on", "RLX_SAM_DEBUG_ZERO_RELH": "1",
           "RLX_SAM_DEBUG_ZERO_RELW": "yes"}
    opts = DebugOptions.from_env(env)
    assert opts == DebugOptions(depth=3, no_relpos=True, force_global=True, zero_relh=True,
                                zero_relw=True)
    assert opts.describe() == ("RLX_SAM_DEBUG_DEPTH=3, RLX_SAM_DEBUG_NO_RELPOS=1, "
                               "RLX_SAM_DEBUG_FORCE_GLOBAL=1, RLX_SAM_DEBUG_ZERO_RELH=1, "
                               "RLX_SAM_DEBUG_ZERO_RELW=1")
    assert DebugOptions.from_env({"RLX_SAM_DEBUG_NO_RELPOS": "0",
                                  "RLX_SAM_DEBUG_DEPTH": ""}) == DebugOptions()


@pytest.mark.parametrize("env, culprit", [
    ({"RLX_SAM_DEBUG_DEPTH": "two"}, "RLX_SAM_DEBUG_DEPTH"),
    ({"RLX_SAM_DEBUG_DEPTH": "0"}, "RLX_SAM_DEBUG_DEPTH"),
    ({"RLX_SAM_DEBUG_DEPTH": "-1"}, "RLX_SAM_DEBUG_DEPTH"),
    ({"RLX_SAM_DEBUG_ZERO_RELH": "maybe"}, "RLX_SAM_DEBUG_ZERO_RELH"),
    ({"RLX_SAM_DEBUG_NORELPOS": "1"}, "RLX_SAM_DEBUG_NORELPOS"),  # a typo is not ignored
])
def test_bad_values_name_the_variable(env, culprit):
    with pytest.raises(DebugSwitchError, match=culprit):
        DebugOptions.from_env(env)


def test_depth_beyond_the_model_is_refused(monkeypatch):
    monkeypatch.setenv("RLX_SAM_DEBUG_DEPTH", "5")
    with pytest.raises(DebugSwitchError, match="only 4 blocks"):
        build_sam(small_config(), checkpoint=small_checkpoint(), profile="reference")


# ---- parity of each switch ---------------------------------------------------------------------

def _depth(model, n):
    model.image_encoder.blocks = model.image_encoder.blocks[:n]


def _no_relpos(model):
    for blk in model.image_encoder.blocks:
        blk.attn.use_rel_pos = False


def _force_global(model):
    for blk in model.image_encoder.blocks:
        blk.window_size = 0  # windowed tables (27 rows) get interpolated to 31 by get_rel_pos


def _zero(model, attr):
    with torch.no_grad():
        for blk in model.image_encoder.blocks:
            getattr(blk.attn, attr).zero_()


SWITCHES = {
    "depth1": ({"RLX_SAM_DEBUG_DEPTH": "1"}, lambda m: _depth(m, 1)),
    "depth3": ({"RLX_SAM_DEBUG_DEPTH": "3"}, lambda m: _depth(m, 3)),
    "no_relpos": ({"RLX_SAM_DEBUG_NO_RELPOS": "1"}, _no_relpos),
    "force_global": ({"RLX_SAM_DEBUG_FORCE_GLOBAL": "1"}, _force_global),
    "zero_relh": ({"RLX_SAM_DEBUG_ZERO_RELH": "1"}, lambda m: _zero(m, "rel_pos_h")),
    "zero_relw": ({"RLX_SAM_DEBUG_ZERO_RELW": "1"}, lambda m: _zero(m, "rel_pos_w")),
    "global_zero_relh": ({"RLX_SAM_DEBUG_FORCE_GLOBAL": "1", "RLX_SAM_DEBUG_ZERO_RELH": "1"},
                         lambda m: (_force_global(m), _zero(m, "rel_pos_h"))),
}


@pytest.fixture(scope="module")
def unmodified():
    x = small_input(7)
    return x, official_embedding(small_official(), x)


@pytest.mark.parametrize("switch", list(SWITCHES))
def test_switch_matches_the_same_change_on_the_official_model(monkeypatch, unmodified, switch):
    env, change = SWITCHES[switch]
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    with pytest.warns(DebugSwitchWarning, match="NOT the model's"):
        sam = build_sam(small_config(), checkpoint=small_checkpoint(), profile="reference")
    assert sam.debug.active and "debug" in repr(sam)
    official = small_official()
    change(official)
    x, plain = unmodified
    ref = official_embedding(official, x)
    got = sam.image_embedding(x)
    assert_parity(got, ref, f"debug switch {switch}")
    # The switch really changed the computation (on both sides).
    assert float(abs(ref - plain).max()) > 1e-2


def test_no_warning_without_switches():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DebugSwitchWarning)
        sam = build_sam(small_config(), checkpoint=small_checkpoint(), profile="reference")
    assert not sam.debug.active
