"""SAM checkpoints in every supported format load through the SAM API to the
same weights and the same embedding; synthetic weights are seeded and announced."""

import subprocess
import sys
import warnings

import numpy as np
import pytest

from models.sam import (SamPredictor, SyntheticWeightsWarning, build_sam, load_checkpoint,
                        sam_model_registry, small_config, synthetic_weights)
from models.sam.config import expected_state_dict_shapes
from models.sam.debug import DebugOptions
from rlx.weights import WeightStore, convert
from tests.models.sam.fixtures_encoder import (
    assert_parity, official_embedding, small_checkpoint, small_input, small_official)
from tests.support import official_sam

OFF = DebugOptions()


@pytest.fixture(scope="module")
def official():
    return small_official()


@pytest.fixture(scope="module")
def reference(official):
    x = small_input(2)
    return x, official_embedding(official, x), official_sam.state_dict_numpy(official)


def _check_same(store, state_dict):
    assert set(store) == set(state_dict)
    for k, v in state_dict.items():
        assert store[k].dtype == np.float32 and np.array_equal(store[k], v), k


def test_pth_written_by_torch_save(reference):
    x, ref, sd = reference
    sam = build_sam(small_config(), checkpoint=small_checkpoint(), profile="reference", debug=OFF)
    _check_same(sam.weights, sd)
    assert sam.checkpoint == small_checkpoint() and not sam.synthetic
    assert_parity(sam.image_embedding(x), ref, "small, .pth checkpoint")


def test_safetensors_with_meta_keys_from_rlx_convert(reference, tmp_path):
    x, ref, sd = reference
    out = tmp_path / "sam_small.safetensors"
    summary = convert(small_checkpoint(), out)
    assert summary.tensors == len(expected_state_dict_shapes(small_config()))
    sam = build_sam(small_config(), checkpoint=out, profile="reference", debug=OFF)
    _check_same(sam.weights, sd)
    assert_parity(sam.image_embedding(x), ref, "small, .safetensors (rlx convert)")


def test_safetensors_written_by_the_safetensors_package(reference, tmp_path):
    """The candle-sam convention: Meta's key names, written by another tool."""
    from safetensors.numpy import save_file

    x, ref, sd = reference
    out = tmp_path / "candle_style.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, str(out))
    sam = build_sam(small_config(), checkpoint=str(out), profile="reference", debug=OFF)
    _check_same(sam.weights, sd)
    assert_parity(sam.image_embedding(x), ref, "small, .safetensors (safetensors package)")


def test_half_precision_checkpoint_is_widened_to_float32(reference, tmp_path):
    from safetensors.numpy import save_file

    _, _, sd = reference
    out = tmp_path / "half.safetensors"
    save_file({k: v.astype(np.float16) for k, v in sd.items()}, str(out))
    store = load_checkpoint(out, small_config())
    for k, v in sd.items():
        assert store[k].dtype == np.float32
        np.testing.assert_array_equal(store[k], v.astype(np.float16).astype(np.float32))


def test_weight_store_is_accepted_and_checked(reference):
    _, _, sd = reference
    sam = build_sam(small_config(), checkpoint=WeightStore(sd), profile="reference", debug=OFF)
    _check_same(sam.weights, sd)


def test_loading_needs_no_torch(tmp_path):
    """Load a .pth and embed an image in a process where importing torch fails."""
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, Block())
import numpy as np
from models.sam import build_sam, small_config, SamPredictor
from models.sam.debug import DebugOptions
sam = build_sam(small_config(), checkpoint={small_checkpoint()!r}, profile="reference",
                debug=DebugOptions())
p = SamPredictor(sam)
p.set_image(np.zeros((40, 60, 3), np.uint8))
assert p.get_image_embedding().shape == (1, 32, 16, 16)
assert "torch" not in sys.modules
print("ok")
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parents[3]))
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


# ---- synthetic weights -------------------------------------------------------------------------

def test_synthetic_weights_are_seeded_complete_and_realistic():
    c = small_config()
    a, b, other = synthetic_weights(c, 0), synthetic_weights(c, 0), synthetic_weights(c, 1)
    shapes = expected_state_dict_shapes(c)
    assert {k: v.shape for k, v in a.items()} == shapes
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not any(np.array_equal(a[k], other[k]) for k in a)
    assert all(v.dtype == np.float32 and np.abs(v).max() > 0 for v in a.values())  # no zero tables
    hd = c.encoder_head_dim
    rel = a["image_encoder.blocks.1.attn.rel_pos_h"]
    assert 0.3 / hd ** 0.5 < rel.std() < 0.7 / hd ** 0.5
    assert abs(a["image_encoder.blocks.0.norm1.weight"].mean() - 1.0) < 0.1
    qkv = a["image_encoder.blocks.0.attn.qkv.weight"]
    assert abs(qkv.std() * np.sqrt(c.encoder_embed_dim) - 1.0) < 0.1


@pytest.mark.parametrize("pool_size", [1 << 10, 1 << 22])
def test_synthetic_weights_of_one_shape_differ_across_blocks(monkeypatch, pool_size):
    """A pool smaller than the model (ViT-L/H with the real pool size) must still give each
    block its own weights, or a block-order bug would go unseen."""
    import models.sam.weights as weights

    monkeypatch.setattr(weights, "POOL_SIZE", pool_size)
    # without the patch embedding the largest tensors are the blocks' MLP weights, as in ViT-L
    full = weights.expected_state_dict_shapes
    monkeypatch.setattr(weights, "expected_state_dict_shapes", lambda c: {
        k: v for k, v in full(c).items() if k != "image_encoder.patch_embed.proj.weight"})
    a = synthetic_weights(small_config(), 0)
    same_shape = {}
    for k, v in a.items():
        same_shape.setdefault(v.shape, []).append(k)
    for names in same_shape.values():
        for i, x in enumerate(names):
            for y in names[i + 1:]:
                assert not np.array_equal(a[x] - a[x].mean(), a[y] - a[y].mean()), (x, y)


def test_synthetic_weights_are_announced_and_give_a_sane_embedding():
    with pytest.warns(SyntheticWeightsWarning, match="SYNTHETIC"):
        sam = build_sam(small_config(), checkpoint=None, profile="reference", debug=OFF)
    assert sam.synthetic and "SYNTHETIC" in repr(sam)
    emb = sam.image_embedding(small_input(0))
    assert np.isfinite(emb).all() and 0.5 < emb.std() < 2.0  # O(1) through all blocks
    with pytest.warns(SyntheticWeightsWarning):  # every time, not once per process
        build_sam(small_config(), profile="reference", debug=OFF)


def test_registry_builds_vit_b_with_synthetic_weights():
    with pytest.warns(SyntheticWeightsWarning, match="vit_b"):
        sam = sam_model_registry["vit_b"](profile="reference")
    assert sam.config.name == "vit_b" and set(sam.compiled) == {"encoder", "neck"}
    assert sam_model_registry["default"].__name__ == "build_sam_vit_h"
    assert SamPredictor(sam).model is sam
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntheticWeightsWarning)
        assert sam_model_registry["vit_b"](profile="debug").profile.verify
