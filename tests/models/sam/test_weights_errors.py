"""Bad SAM checkpoints give one clear CheckpointError through the SAM API.

(The loader itself is tested in tests/weights; here: what a SAM user sees.)
"""

import pickle
import struct
import zipfile

import numpy as np
import pytest
import torch

from models.sam import build_sam, sam_model_registry, small_config
from models.sam.config import CONFIGS, expected_state_dict_shapes
from models.sam.debug import DebugOptions
from models.sam.weights import encoder_signature
from rlx.errors import CheckpointError
from tests.models.sam.fixtures_encoder import small_checkpoint, small_official, vit_b_checkpoint
from tests.support import official_sam

OFF = DebugOptions()


@pytest.fixture(scope="module")
def state_dict():
    return small_official().state_dict()


def _save(tmp_path, sd, name="ckpt.pth"):
    path = tmp_path / name
    torch.save(sd, path)
    return path


def _load_error(path, config=None) -> str:
    with pytest.raises(CheckpointError) as err:
        build_sam(config or small_config(), checkpoint=path, profile="reference", debug=OFF)
    return str(err.value)


def test_missing_keys_are_listed(tmp_path, state_dict):
    sd = dict(state_dict)
    gone = ["image_encoder.blocks.2.mlp.lin1.bias", "image_encoder.neck.3.weight",
            "mask_decoder.iou_token.weight"]
    for k in gone:
        del sd[k]
    path = _save(tmp_path, sd)
    msg = _load_error(path)
    assert str(path) in msg and "3 missing" in msg
    for k in gone:
        assert f"missing: {k} (expected [" in msg


def test_unexpected_keys_are_listed(tmp_path, state_dict):
    sd = dict(state_dict)
    sd["image_encoder.blocks.0.attn.extra_scale"] = torch.ones(3)
    sd["head.fc.weight"] = torch.ones(2, 2)
    msg = _load_error(_save(tmp_path, sd))
    assert "2 unexpected" in msg
    assert "unexpected: image_encoder.blocks.0.attn.extra_scale (shape [3])" in msg
    assert "unexpected: head.fc.weight (shape [2, 2])" in msg


def test_wrong_shape_names_key_expected_and_got(tmp_path, state_dict):
    sd = dict(state_dict)
    sd["image_encoder.neck.2.weight"] = torch.zeros(32, 32, 1, 1)
    sd["image_encoder.blocks.3.attn.rel_pos_w"] = torch.zeros(29, 32)
    msg = _load_error(_save(tmp_path, sd))
    assert "image_encoder.neck.2.weight: expected [32, 32, 3, 3], got [32, 32, 1, 1]" in msg
    assert "image_encoder.blocks.3.attn.rel_pos_w: expected [31, 32], got [29, 32]" in msg


def test_integer_tensor_is_refused(tmp_path, state_dict):
    sd = dict(state_dict)
    sd["image_encoder.pos_embed"] = torch.zeros(sd["image_encoder.pos_embed"].shape,
                                                dtype=torch.int32)
    msg = _load_error(_save(tmp_path, sd))
    assert "image_encoder.pos_embed" in msg and "int32" in msg


def test_truncated_file(tmp_path):
    data = open(small_checkpoint(), "rb").read()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) // 2])
    msg = _load_error(path)
    assert str(path) in msg


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n" + bytes(200), b"hello, not weights\n",
                                     b""])
def test_non_checkpoint_file(tmp_path, content):
    path = tmp_path / "not_a_checkpoint.pth"
    path.write_bytes(content)
    msg = _load_error(path)
    assert str(path) in msg


def test_missing_file(tmp_path):
    assert "no such file" in _load_error(tmp_path / "nope.pth")


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    cmd = f"touch '{marker}'"
    payload = (b"\x80\x02cos\nsystem\nX" + struct.pack("<I", len(cmd)) + cmd.encode()
               + b"\x85R.")
    path = tmp_path / "sam_vit_b_evil.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/version", b"3\n")
    with pytest.raises(CheckpointError, match="os.system") as err:
        sam_model_registry["vit_b"](checkpoint=path, profile="reference")
    assert str(path) in str(err.value)
    assert not marker.exists(), "code from the checkpoint ran"
    pickle.loads(payload)  # positive control: plain pickle does run it
    assert marker.exists()


# ---- wrong model size ----------------------------------------------------------------------------

def test_vit_b_checkpoint_for_vit_l_names_vit_b():
    path = vit_b_checkpoint()
    with pytest.raises(CheckpointError) as err:
        sam_model_registry["vit_l"](checkpoint=path, profile="reference")
    msg = str(err.value)
    assert "wrong model size" in msg and "looks like SAM vit_b" in msg
    assert "embed dim 768, 12 blocks" in msg and "vit_l" in msg
    assert "sam_model_registry['vit_b']" in msg and len(msg.splitlines()) == 1


def test_vit_l_shaped_checkpoint_for_vit_b_names_vit_l(tmp_path):
    """The encoder tensors that give a checkpoint's size away, shaped as in vit_l."""
    shapes = expected_state_dict_shapes(CONFIGS["vit_l"])
    tell = {k: s for k, s in shapes.items()
            if k.endswith(("patch_embed.proj.weight", "rel_pos_h", "norm1.weight"))}
    path = _save(tmp_path, {k: torch.zeros(s) for k, s in tell.items()}, "sam_vit_l_part.pth")
    assert encoder_signature({k: np.zeros(s, np.float32) for k, s in tell.items()})[:2] == (1024, 24)
    with pytest.raises(CheckpointError, match=r"looks like SAM vit_l .*build it with "
                       r"sam_model_registry\['vit_l'\]"):
        sam_model_registry["vit_b"](checkpoint=path, profile="reference")


def test_unknown_size_checkpoint_for_vit_b():
    with pytest.raises(CheckpointError) as err:
        sam_model_registry["vit_b"](checkpoint=small_checkpoint(), profile="reference")
    msg = str(err.value)
    assert "wrong model size" in msg and "embed dim 64, 4 blocks" in msg
    assert "vit_b" in msg and "nor any known SAM config" in msg


def test_nested_state_dict_loads(tmp_path, state_dict):
    """Training checkpoints nest the weights ({"model": sd, ...}); the store finds them."""
    path = _save(tmp_path, {"model": dict(state_dict), "epoch": 3})
    sam = build_sam(small_config(), checkpoint=path, profile="reference", debug=OFF)
    ref = official_sam.state_dict_numpy(small_official())
    assert all(np.array_equal(sam.weights[k], v) for k, v in ref.items())
