"""WeightStore behaviour: mapping, subset, check messages."""

from __future__ import annotations

import numpy as np
import pytest

from rlx.errors import CheckpointError
from rlx.weights import MissingWeightError, WeightStore


def _store() -> WeightStore:
    return WeightStore(
        {
            "image_encoder.pos_embed": np.zeros((1, 4, 4, 8), np.float32),
            "image_encoder.blocks.0.attn.qkv.weight": np.zeros((24, 8), np.float32),
            "image_encoder.blocks.0.attn.qkv.bias": np.zeros(24, np.float32),
            "image_encoder_extra.w": np.zeros(2, np.float32),
            "mask_decoder.iou_token.weight": np.zeros((1, 8), np.float32),
        },
        source="/ckpt/sam.pth",
        widened=["mask_decoder.iou_token.weight"],
    )


def test_mapping_basics():
    s = _store()
    assert len(s) == 5 and "image_encoder.pos_embed" in s and "nope" not in s
    assert s.get("nope") is None
    assert s.nbytes == 4 * (128 + 192 + 24 + 2 + 8)
    assert "5 tensors" in repr(s)
    with pytest.raises(TypeError):
        s["x"] = np.zeros(1)  # type: ignore[index]


def test_missing_key_is_a_key_error_and_checkpoint_error_with_hint():
    s = _store()
    with pytest.raises(MissingWeightError) as err:
        s["image_encoder.pos_embd"]
    assert isinstance(err.value, KeyError) and isinstance(err.value, CheckpointError)
    msg = str(err.value)
    assert "/ckpt/sam.pth" in msg and "'image_encoder.pos_embd'" in msg
    assert "did you mean 'image_encoder.pos_embed'" in msg


def test_arrays_are_read_only_but_callers_arrays_are_untouched():
    mine = np.arange(6, dtype=np.float32).reshape(2, 3)
    s = WeightStore({"w": mine, "t": mine.T})
    assert mine.flags.writeable
    assert not s["w"].flags.writeable
    with pytest.raises(ValueError):
        s["w"][0, 0] = 5
    assert s["t"].flags.c_contiguous
    np.testing.assert_array_equal(s["t"], mine.T)
    assert WeightStore({"s": np.array(1.0)})["s"].shape == ()  # 0-d stays 0-d


def test_constructor_rejects_bad_entries():
    with pytest.raises(CheckpointError, match="not a string"):
        WeightStore({1: np.zeros(1)})
    with pytest.raises(CheckpointError, match="'w' has dtype object"):
        WeightStore({"w": np.array([object()])})
    with pytest.raises(CheckpointError, match="'s' has dtype <U"):
        WeightStore({"s": np.array(["text"])})


def test_subset_strips_whole_components():
    s = _store()
    enc = s.subset("image_encoder")
    assert sorted(enc) == ["blocks.0.attn.qkv.bias", "blocks.0.attn.qkv.weight", "pos_embed"]
    assert enc.source == s.source
    assert sorted(s.subset("image_encoder.")) == sorted(enc)
    kept = s.subset("mask_decoder", strip=False)
    assert list(kept) == ["mask_decoder.iou_token.weight"]
    assert kept.widened == {"mask_decoder.iou_token.weight"}
    assert s.subset("mask_decoder").widened == {"iou_token.weight"}
    assert list(enc.subset("blocks.0.attn")) == ["qkv.weight", "qkv.bias"]


def test_subset_errors_and_messages_use_full_names():
    s = _store()
    with pytest.raises(CheckpointError, match="no tensors under 'image_encodr.'.*image_encoder, "):
        s.subset("image_encodr")
    enc = s.subset("image_encoder")
    with pytest.raises(MissingWeightError, match="'image_encoder.neck.0.weight'"):
        enc["neck.0.weight"]


def test_check_passes_when_everything_fits():
    enc = _store().subset("image_encoder")
    enc.check({k: v.shape for k, v in enc.items()}, what="encoder")
    enc.check({"pos_embed": (1, 4, 4, 8)}, what="encoder", allow_unexpected=True)


def test_check_reports_missing_unexpected_and_wrong_shapes_at_once():
    enc = _store().subset("image_encoder")
    expected = {
        "pos_embed": (1, 64, 64, 8),
        "blocks.0.attn.qkv.weight": (24, 8),
        "blocks.0.attn.proj.weight": (8, 8),
    }
    with pytest.raises(CheckpointError) as err:
        enc.check(expected, what="SAM ViT-B image encoder")
    msg = str(err.value)
    assert msg.splitlines()[0] == (
        "/ckpt/sam.pth: weights do not fit SAM ViT-B image encoder "
        "(1 missing, 1 unexpected, 1 wrong shape)"
    )
    assert "missing: image_encoder.blocks.0.attn.proj.weight (expected [8, 8])" in msg
    assert "unexpected: image_encoder.blocks.0.attn.qkv.bias (shape [24])" in msg
    assert "wrong shape: image_encoder.pos_embed: expected [1, 64, 64, 8], got [1, 4, 4, 8]" in msg

    with pytest.raises(CheckpointError) as err:
        enc.check(expected, what="encoder", allow_unexpected=True)
    assert "unexpected" not in str(err.value)


def test_check_truncates_long_lists():
    s = WeightStore({f"extra.{i}": np.zeros(1) for i in range(25)})
    expected = {f"need.{i}": (2,) for i in range(13)}
    with pytest.raises(CheckpointError) as err:
        s.check(expected, what="model")
    msg = str(err.value)
    assert msg.startswith("weights: weights do not fit model (13 missing, 25 unexpected)")
    assert msg.count("  missing: ") == 10 and "... and 3 more missing" in msg
    assert msg.count("  unexpected: ") == 10 and "... and 15 more unexpected" in msg
