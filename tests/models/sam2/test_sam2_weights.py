"""SAM 2 checkpoints: Meta's ``.pt`` read without torch, safetensors, every misfit named.

Checkpoints are written the way Meta's are (``torch.save({"model": state_dict})``)
from the official model with re-drawn weights, or from synthetic tensors with
the official names and shapes where only the layout matters.
"""

from __future__ import annotations

import pickle
import struct
import zipfile

import numpy as np
import pytest
import torch

from models.sam2.config import CONFIG_NAMES, get_config
from models.sam2.image_features import build_image_features
from models.sam2.weights import (image_weight_shapes, load_checkpoint, model_weight_shapes,
                                 prompt_weight_shapes, synthetic_weights)
from rlx.backends.reference import run_graph
from rlx.errors import CheckpointError
from rlx.weights import convert
from tests.support.official_sam2 import (official_image_features, official_sam2, state_dict_numpy,
                                         write_checkpoint)

NAME, SIZE = "sam2.1_hiera_t", 128


@pytest.fixture(scope="module")
def official():
    return official_sam2(NAME, seed=4, image_size=SIZE)


@pytest.fixture(scope="module")
def checkpoint(official, tmp_path_factory):
    path = tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_tiny.pt"
    write_checkpoint(official, path)
    return path


def _save(tensors, path):
    torch.save({"model": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}},
               str(path))
    return path


def test_meta_pt_checkpoint_loads_through_the_restricted_unpickler_and_runs(official, checkpoint):
    store = load_checkpoint(checkpoint, NAME)
    sd = state_dict_numpy(official)
    assert set(store) == set(sd)  # video-only tensors are kept, just not checked or used
    for k in model_weight_shapes(NAME):
        np.testing.assert_array_equal(store[k], sd[k])
    x = np.random.default_rng(0).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    got = run_graph(build_image_features(NAME, SIZE), [x], store)
    want = official_image_features(official, x)
    for a, key in zip(got, ("high_res_0", "high_res_1", "image_embed")):
        assert np.abs(a - want[key]).max() <= 1e-4


def test_converted_safetensors_loads_the_same(checkpoint, tmp_path):
    out = tmp_path / "tiny.safetensors"
    convert(checkpoint, out)
    a, b = load_checkpoint(checkpoint, NAME), load_checkpoint(out, NAME)
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_prompt_side_shapes_are_the_official_ones(official):
    sd = {k: tuple(v.shape) for k, v in official.state_dict().items()}
    official_prompt = {k: v for k, v in sd.items()
                       if k.startswith(("sam_prompt_encoder.", "sam_mask_decoder."))}
    assert prompt_weight_shapes(NAME) == official_prompt
    for k, shape in image_weight_shapes(NAME).items():
        assert sd[k] == shape, k


def test_wrong_size_checkpoint_names_the_config_it_looks_like(tmp_path):
    large = synthetic_weights("sam2.1_hiera_l", 0, image_weight_shapes("sam2.1_hiera_l"))
    large["no_obj_embed_spatial"] = np.zeros((1, 64), np.float32)  # a SAM 2.1 checkpoint
    path = _save(large, tmp_path / "sam2.1_hiera_large.pt")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, "sam2.1_hiera_t")
    msg = str(err.value)
    assert str(path) in msg and "looks like sam2.1_hiera_l" in msg and "144" in msg


def test_missing_and_misshaped_tensors_are_named(tmp_path):
    tensors = synthetic_weights(NAME, 0)
    del tensors["sam_mask_decoder.conv_s1.bias"]
    tensors["image_encoder.trunk.blocks.3.attn.qkv.weight"] = np.zeros((10, 192), np.float32)
    path = _save(tensors, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, NAME)
    msg = str(err.value)
    assert str(path) in msg
    assert "missing: sam_mask_decoder.conv_s1.bias (expected [64])" in msg
    assert ("image_encoder.trunk.blocks.3.attn.qkv.weight: expected [1152, 192], got [10, 192]"
            in msg)


def test_integer_tensor_is_refused(tmp_path):
    tensors = synthetic_weights(NAME, 0)
    tensors["no_mem_embed"] = np.zeros((1, 1, 256), np.int64)
    with pytest.raises(CheckpointError, match="no_mem_embed"):
        load_checkpoint(_save(tensors, tmp_path / "int.pt"), NAME)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04truncated"])
def test_broken_files_are_refused(tmp_path, content):
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, NAME)
    assert str(path) in str(err.value)


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    cmd = f"touch '{marker}'"
    payload = (b"\x80\x02cos\nsystem\nX" + struct.pack("<I", len(cmd)) + cmd.encode() + b"\x85R.")
    path = tmp_path / "sam2.1_hiera_evil.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/version", b"3\n")
    with pytest.raises(CheckpointError, match="os.system") as err:
        load_checkpoint(path, NAME)
    assert str(path) in str(err.value)
    assert not marker.exists(), "code from the checkpoint ran"
    pickle.loads(payload)  # positive control: plain pickle does run it
    assert marker.exists()


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_synthetic_weights_cover_image_mode_at_documented_scales(name):
    w = synthetic_weights(name, 3)
    shapes = model_weight_shapes(name)
    assert {k: v.shape for k, v in w.items()} == shapes
    assert all(v.dtype == np.float32 for v in w.values())
    c = get_config(name)
    qkv = w["image_encoder.trunk.blocks.0.attn.qkv.weight"]
    assert abs(qkv.std() * np.sqrt(c.embed_dim) - 1) < 0.05  # N(0, 1/fan_in)
    assert abs(w["image_encoder.trunk.pos_embed"].std() - 0.5) < 0.1
    norm = w["image_encoder.trunk.blocks.0.norm1.weight"]
    assert abs(norm.mean() - 1) < 0.05 and 0.05 < norm.std() < 0.15


def test_synthetic_weights_are_seeded_per_name():
    a = synthetic_weights(NAME, 0)
    b = synthetic_weights(NAME, 0, {"no_mem_embed": (1, 1, 256)})  # fewer names, same draws
    np.testing.assert_array_equal(a["no_mem_embed"], b["no_mem_embed"])
    c = synthetic_weights(NAME, 1, {"no_mem_embed": (1, 1, 256)})
    assert not np.array_equal(a["no_mem_embed"], c["no_mem_embed"])


def test_every_official_tensor_has_a_synthetic_rule(official):
    """The rules also cover the video-only tensors, so a full state dict can be drawn."""
    shapes = {k: tuple(v.shape) for k, v in official.state_dict().items()}
    assert set(synthetic_weights(NAME, 0, shapes)) == set(shapes)
