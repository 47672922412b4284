"""rlx convert: .pth -> .safetensors with equal tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlx.errors import CheckpointError
from rlx.weights import convert, convert_command, load_weights


def _state() -> dict:
    g = torch.Generator().manual_seed(3)
    base = torch.randn(5, 6, generator=g)
    return {
        "image_encoder.patch_embed.proj.weight": torch.randn(8, 3, 4, 4, generator=g),
        "image_encoder.patch_embed.proj.bias": torch.randn(8, generator=g),
        "t": base.t(),
        "base": base,
        "half": torch.randn(4, generator=g).half(),
        "bf": torch.randn(2, 2, generator=g).bfloat16(),
        "steps": torch.tensor(12),
        "flag": torch.tensor([True, False, True]),
    }


def test_convert_pth_to_safetensors(tmp_path):
    state = _state()
    torch.save(state, tmp_path / "in.pth")
    summary = convert(tmp_path / "in.pth", tmp_path / "out.safetensors")
    assert summary.tensors == len(state) and summary.widened == 1
    out = load_weights(tmp_path / "out.safetensors")
    assert set(out) == set(state)
    for name, t in state.items():
        want = t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()
        assert out[name].dtype == want.dtype and out[name].shape == want.shape, name
        np.testing.assert_array_equal(out[name], want, err_msg=name)
    assert summary.nbytes == out.nbytes
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_convert_command_line(tmp_path):
    torch.save(_state(), tmp_path / "in.pth")
    line = convert_command(tmp_path / "in.pth", tmp_path / "out.safetensors")
    assert line.startswith(f"converted {tmp_path / 'in.pth'} -> {tmp_path / 'out.safetensors'}: 8 tensors, ")
    assert line.endswith("(1 bf16 tensor widened to float32)")
    assert "\n" not in line


def test_refuses_to_overwrite_input(tmp_path):
    torch.save(_state(), tmp_path / "in.pth")
    convert(tmp_path / "in.pth", tmp_path / "a.safetensors")
    before = (tmp_path / "a.safetensors").read_bytes()
    with pytest.raises(CheckpointError, match="refusing to overwrite the input"):
        convert(tmp_path / "a.safetensors", tmp_path / "sub" / ".." / "a.safetensors")
    assert (tmp_path / "a.safetensors").read_bytes() == before


def test_refuses_wrong_suffix_and_bad_input(tmp_path):
    torch.save(_state(), tmp_path / "in.pth")
    with pytest.raises(CheckpointError, match=r"must end in \.safetensors"):
        convert(tmp_path / "in.pth", tmp_path / "out.pth")
    with pytest.raises(CheckpointError, match="no such file"):
        convert(tmp_path / "missing.pth", tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()
