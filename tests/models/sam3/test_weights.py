"""Checkpoint extraction: the three SAM3 prefixes, both file formats, clear errors."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from models.sam3 import load_neck
from models.sam3.config import DEFAULT, expected_state_dict_shapes
from models.sam3.weights import PREFIXES, extract_neck_weights, find_prefix, synthetic_weights
from rlx.errors import CheckpointError
from rlx.weights import WeightStore

#: Unrelated tensors a real SAM3 checkpoint holds next to the neck (small stand-ins).
def _others(prefix: str) -> dict:
    rng = np.random.default_rng(7)
    return {
        f"{prefix}trunk.blocks.0.attn.qkv.weight": rng.standard_normal((12, 4), dtype=np.float32),
        f"{prefix}trunk.pos_embed": rng.standard_normal((1, 3, 4), dtype=np.float32),
        "detector.transformer.encoder.layers.0.norm1.weight": np.ones(4, np.float32),
        "tracker.maskmem_backbone.mask_downsampler.encoder.0.weight": np.ones((2, 1, 3, 3), np.float32),
    }


def _checkpoint(state: dict, prefix: str) -> dict:
    out = {prefix + k: v for k, v in state.items()}
    out.update(_others(prefix))
    return out


@pytest.fixture(scope="module")
def checkpoint_files(tmp_path_factory, checkpoint_state):
    """(prefix, format) -> path: the neck with its SAM2 copy plus unrelated tensors."""
    root = tmp_path_factory.mktemp("sam3_ckpt")
    files = {}
    for i, prefix in enumerate(PREFIXES):
        state = _checkpoint(checkpoint_state, prefix)
        st = root / f"p{i}.safetensors"
        WeightStore(state).save_safetensors(st)
        files[(prefix, "safetensors")] = st
        pth = root / f"p{i}.pth"
        tensors = {k: torch.from_numpy(np.array(v)) for k, v in state.items()}
        # the official builder accepts {"model": state_dict}; store one prefix that way
        torch.save({"model": tensors} if i == 0 else tensors, pth)
        files[(prefix, "pth")] = pth
    return files


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
@pytest.mark.parametrize("prefix", PREFIXES)
def test_checkpoint_with_each_prefix_loads(checkpoint_files, neck_state, prefix, fmt):
    weights = extract_neck_weights(checkpoint_files[(prefix, fmt)])
    assert set(weights) == set(expected_state_dict_shapes()) == set(neck_state)
    for name, array in weights.items():
        assert array.dtype == np.float32
        np.testing.assert_array_equal(array, neck_state[name], err_msg=name)


def test_sam2_copy_is_skipped_not_read(checkpoint_state, neck_state):
    """The SAM2 copy differs from the detection branches and none of it is returned."""
    sam2 = {k: v for k, v in checkpoint_state.items() if k.startswith("sam2_convs.")}
    assert len(sam2) == len(neck_state)
    assert all(not np.array_equal(sam2["sam2_" + k], v) for k, v in neck_state.items())
    weights = extract_neck_weights(_checkpoint(checkpoint_state, "backbone.vision_backbone."))
    assert not any("sam2" in k for k in weights)
    for name, array in weights.items():
        np.testing.assert_array_equal(array, neck_state[name])


def test_bare_neck_state_dict_loads(neck_state):
    weights = extract_neck_weights(neck_state)
    assert set(weights) == set(neck_state)


def test_float16_checkpoint_is_widened(neck_state):
    half = {k: v.astype(np.float16) for k, v in neck_state.items()}
    weights = extract_neck_weights(half)
    for name, array in weights.items():
        assert array.dtype == np.float32
        np.testing.assert_array_equal(array, half[name].astype(np.float32))


def test_load_neck_from_path_uses_profile_near_weights(checkpoint_files, feature, official_levels):
    path = checkpoint_files[("vision_backbone.", "safetensors")]
    profile_file = path.with_name(path.name.split(".")[0] + ".rlx.toml")
    profile_file.write_text('base = "debug"\nname = "neck-tuned"\n')
    try:
        neck = load_neck(path)
    finally:
        profile_file.unlink()
    assert neck.profile.name == "neck-tuned" and neck.profile.source == str(profile_file)
    assert load_neck(path, profile="reference").profile.name == "reference"
    # the cheapest branch, to show the weights read from the file are the ones that run
    got = neck.branches[3](feature)[0]
    want = official_levels[3][0]
    assert float(np.abs(got - want).max()) <= 1e-4


# ---- errors ---------------------------------------------------------------------------------


def _raises(state, *patterns):
    with pytest.raises(CheckpointError) as info:
        extract_neck_weights(state)
    message = str(info.value)
    for pattern in patterns:
        assert re.search(pattern, message), f"{pattern!r} not in:\n{message}"
    return message


def test_missing_tensor_names_key_and_shape(neck_state):
    state = _checkpoint(neck_state, "vision_backbone.")
    del state["vision_backbone.convs.1.conv_3x3.bias"]
    _raises(state, r"missing tensor vision_backbone\.convs\.1\.conv_3x3\.bias \(expected \[256\]\)")


def test_misshaped_tensor_names_key_expected_and_got(neck_state):
    state = _checkpoint(neck_state, "detector.backbone.vision_backbone.")
    key = "detector.backbone.vision_backbone.convs.0.dconv_2x2_1.weight"
    state[key] = np.zeros((256, 512, 2, 2), np.float32)  # out/in swapped
    _raises(state, re.escape(f"wrong shape for {key}: expected [512, 256, 2, 2], "
                             f"got [256, 512, 2, 2]"))


def test_missing_branch_names_branch_and_scale(neck_state):
    state = {k: v for k, v in _checkpoint(neck_state, "backbone.vision_backbone.").items()
             if ".convs.3." not in k}
    message = _raises(state, r"missing branch convs\.3 \(scale 0\.5x, subgraph branch_0_5x\)",
                      r"backbone\.vision_backbone\.convs\.3\.")
    assert "missing tensor" not in message  # one line for the branch, not one per tensor


def test_all_problems_reported_at_once(neck_state):
    state = dict(neck_state)
    del state["convs.0.dconv_2x2_0.weight"]
    state["convs.2.conv_1x1.weight"] = np.zeros((256, 512, 1, 1), np.float32)
    _raises(state, r"missing tensor convs\.0\.dconv_2x2_0\.weight \(expected \[1024, 512, 2, 2\]\)",
            r"wrong shape for convs\.2\.conv_1x1\.weight: expected \[256, 1024, 1, 1\], "
            r"got \[256, 512, 1, 1\]")


def test_error_from_a_file_names_the_file(tmp_path, neck_state):
    state = _checkpoint(neck_state, "vision_backbone.")
    del state["vision_backbone.convs.2.conv_3x3.weight"]
    path = tmp_path / "broken.safetensors"
    WeightStore(state).save_safetensors(path)
    _raises(path, re.escape(str(path)), r"missing tensor vision_backbone\.convs\.2\.conv_3x3\.weight")
    with pytest.raises(CheckpointError):  # and load_neck stops before compiling anything
        load_neck(path)


def test_no_neck_at_all_lists_the_prefixes():
    message = _raises({"image_encoder.blocks.0.norm1.weight": np.ones(3, np.float32)},
                      r"no SAM3 neck weights", r"image_encoder")
    for prefix in PREFIXES:
        assert prefix in message


def test_two_prefixes_are_ambiguous(neck_state):
    state = {**_checkpoint(neck_state, "vision_backbone."),
             **_checkpoint(neck_state, "backbone.vision_backbone.")}
    _raises(state, r"several prefixes", r"backbone\.vision_backbone\.", r"vision_backbone\.")


def test_integer_tensor_is_rejected(neck_state):
    state = dict(neck_state)
    state["convs.3.conv_1x1.bias"] = np.zeros(256, np.int64)
    _raises(state, r"wrong dtype for convs\.3\.conv_1x1\.bias: expected a float tensor, got int64")


def test_find_prefix_prefers_the_exact_match():
    assert find_prefix(["detector.backbone.vision_backbone.convs.0.conv_1x1.weight"]) == \
        "detector.backbone.vision_backbone."
    assert find_prefix(["backbone.vision_backbone.convs.0.conv_1x1.weight"]) == \
        "backbone.vision_backbone."


def test_synthetic_weights_fit_and_are_seeded():
    a, b, c = synthetic_weights(0), synthetic_weights(0), synthetic_weights(1)
    assert {k: v.shape for k, v in a.items()} == expected_state_dict_shapes(DEFAULT)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not any(np.array_equal(a[k], c[k]) for k in a)
    # realistic scale: weight std ~ 1/sqrt(fan_in), so a 1x1 conv of N(0,1) input stays O(1)
    w = a["convs.2.conv_1x1.weight"]
    assert abs(float(w.std()) * np.sqrt(1024) - 1.0) < 0.05
    assert extract_neck_weights(a).keys() == a.keys()
