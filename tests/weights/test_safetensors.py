"""safetensors reading and atomic writing."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import save_file as torch_save_file

from rlx.errors import CheckpointError
from rlx.weights import WeightStore, load_weights


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "image_encoder.blocks.0.attn.qkv.weight": rng.standard_normal((12, 4)).astype(np.float32),
        "half": rng.standard_normal((3, 3)).astype(np.float16),
        "f64": rng.standard_normal(5),
        "i64": rng.integers(-(2**40), 2**40, 6),
        "i32": rng.integers(-9, 9, (2, 2)).astype(np.int32),
        "u8": rng.integers(0, 255, 7).astype(np.uint8),
        "mask": rng.random((2, 5)) > 0.5,
        "scalar": np.array(2.5, np.float32),
        "empty": np.zeros((0, 4), np.float32),
        "transposed": rng.standard_normal((4, 6)).astype(np.float32).T,  # non-contiguous input
    }


def test_round_trip(tmp_path):
    arrays = _arrays()
    WeightStore(arrays).save_safetensors(tmp_path / "w.safetensors")
    store = load_weights(tmp_path / "w.safetensors")
    assert store.source == tmp_path / "w.safetensors"
    assert set(store) == set(arrays)
    for name, want in arrays.items():
        assert store[name].dtype == want.dtype, name
        assert store[name].shape == want.shape, name
        np.testing.assert_array_equal(store[name], want, err_msg=name)


def test_reads_files_written_by_torch_including_bf16(tmp_path):
    g = torch.Generator().manual_seed(1)
    state = {
        "mask_decoder.iou_token.weight": torch.randn(1, 256, generator=g),
        "bf": torch.randn(3, 4, generator=g).bfloat16(),
        "half": torch.randn(5, generator=g).half(),
        "flag": torch.tensor([True, False]),
        "bf_scalar": torch.tensor(1.5, dtype=torch.bfloat16),
    }
    torch_save_file(state, str(tmp_path / "t.safetensors"), metadata={"format": "pt"})
    store = load_weights(tmp_path / "t.safetensors")
    assert store.widened == {"bf", "bf_scalar"}
    for name, t in state.items():
        want = t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()
        assert store[name].dtype == want.dtype and store[name].shape == want.shape, name
        np.testing.assert_array_equal(store[name], want, err_msg=name)


def test_unsupported_dtype_names_the_tensor(tmp_path):
    torch_save_file({"f8": torch.zeros(2, dtype=torch.float8_e4m3fn)}, str(tmp_path / "f8.safetensors"))
    with pytest.raises(CheckpointError, match=r"'f8'.*F8_E4M3") as err:
        load_weights(tmp_path / "f8.safetensors")
    assert str(tmp_path / "f8.safetensors") in str(err.value)


def test_truncated_file(tmp_path):
    WeightStore(_arrays()).save_safetensors(tmp_path / "w.safetensors")
    data = (tmp_path / "w.safetensors").read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[:-10])
    with pytest.raises(CheckpointError) as err:
        load_weights(cut)
    assert str(cut) in str(err.value)


def test_corrupt_header(tmp_path):
    header = b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]'  # unterminated JSON
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))
    with pytest.raises(CheckpointError) as err:
        load_weights(path)
    assert str(path) in str(err.value)


def test_header_offsets_out_of_bounds(tmp_path):
    header = b'{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}'
    path = tmp_path / "short.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))
    with pytest.raises(CheckpointError) as err:
        load_weights(path)
    assert str(path) in str(err.value)


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "w.safetensors"
    WeightStore({"a": np.ones(3, np.float32)}).save_safetensors(path)
    WeightStore({"b": np.zeros(2, np.int64)}).save_safetensors(path)  # overwrite
    assert list(load_weights(path)) == ["b"]
    assert _leftovers(tmp_path) == []


def test_failure_mid_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    WeightStore({"old": np.arange(4, dtype=np.float32)}).save_safetensors(path)
    before = path.read_bytes()

    def crash(fd):  # the new bytes are in the temp file; then the "disk" fails
        raise OSError("simulated failure while writing")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="simulated"):
        WeightStore({"new": np.ones((100, 100), np.float32)}).save_safetensors(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []
    assert list(load_weights(path)) == ["old"]
