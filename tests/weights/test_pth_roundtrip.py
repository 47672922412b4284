"""torch.save -> rlx loads (without torch) -> same values, dtypes, shapes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from rlx.errors import CheckpointError
from rlx.weights import WeightStore, load_weights


def _expected(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    return t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()


def _assert_same(store: WeightStore, state: dict) -> None:
    assert list(store) == list(state)
    for name, tensor in state.items():
        want = _expected(tensor)
        got = store[name]
        assert got.dtype == want.dtype, name
        assert got.shape == want.shape, name
        assert got.flags.c_contiguous, name
        np.testing.assert_array_equal(got, want, err_msg=name)


def _mixed_state() -> dict:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 8, generator=g)
    flat = torch.randn(40, generator=g)
    return {
        "f32": torch.randn(3, 5, generator=g),
        "f16": torch.randn(4, 4, generator=g).half(),
        "bf16": torch.randn(2, 7, generator=g).bfloat16(),
        "f64": torch.randn(3, generator=g).double(),
        "i64": torch.randint(-(2**40), 2**40, (5,), generator=g),
        "i32": torch.randint(-1000, 1000, (2, 3), generator=g, dtype=torch.int32),
        "i8": torch.randint(-128, 127, (9,), generator=g, dtype=torch.int8),
        "u8": torch.randint(0, 255, (9,), generator=g, dtype=torch.uint8),
        "bool": torch.rand(3, 3, generator=g) > 0.5,
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 3),
        # views sharing one storage, saved together with their base
        "base": base,
        "base_t": base.t(),
        "base_slice": base[1:5:2, ::3],
        "flat_window": flat[5:17].view(3, 4),  # nonzero storage offset, flat not saved
        "expanded": torch.randn(1, 4, generator=g).expand(3, 4),  # stride 0
        "channels_last": torch.randn(2, 3, 4, 5, generator=g).to(memory_format=torch.channels_last),
        "bf16_t": torch.randn(3, 5, generator=g).bfloat16().t(),
        "u16": torch.arange(7, dtype=torch.int32).to(torch.uint16),  # written with _rebuild_tensor_v3
    }


def test_mixed_dtypes_views_and_shared_storages(tmp_path):
    state = _mixed_state()
    path = tmp_path / "mixed.pth"
    torch.save(state, path)
    store = load_weights(path)
    _assert_same(store, state)
    assert store.source == path
    assert store.widened == {"bf16", "bf16_t"}
    assert store.nbytes == sum(_expected(t).nbytes for t in state.values())


def test_arrays_are_read_only_and_independent_of_shared_storage(tmp_path):
    state = _mixed_state()
    torch.save(state, tmp_path / "m.pth")
    store = load_weights(tmp_path / "m.pth")
    with pytest.raises(ValueError):
        store["base"][0, 0] = 1.0
    # a view is copied, so it does not pin or alias its base's bytes
    assert not np.shares_memory(store["base"], store["base_t"])


def test_module_state_dict_with_parameters_and_metadata(tmp_path):
    """A real nn.Module state dict (OrderedDict with _metadata), names kept."""
    torch.manual_seed(0)
    model = torch.nn.Sequential()
    model.add_module("patch_embed", torch.nn.Conv2d(3, 8, 4, stride=4))
    model.add_module("norm", torch.nn.LayerNorm(8))
    model.add_module("bn", torch.nn.BatchNorm1d(8))  # has an int64 num_batches_tracked
    state = model.state_dict()
    torch.save(state, tmp_path / "m.pth")
    _assert_same(load_weights(tmp_path / "m.pth"), state)
    # whole Parameters (torch._utils._rebuild_parameter) load too
    params = dict(model.named_parameters())
    torch.save(params, tmp_path / "p.pth")
    _assert_same(load_weights(tmp_path / "p.pth"), params)


def test_state_dict_nested_under_model_key(tmp_path):
    state = {"w": torch.randn(2, 2), "b": torch.randn(2).bfloat16()}
    torch.save({"model": state, "epoch": 7, "optimizer": {"lr": 0.1}}, tmp_path / "ckpt.pth")
    store = load_weights(tmp_path / "ckpt.pth")
    _assert_same(store, state)
    assert store.widened == {"b"}


def test_big_endian_checkpoint(tmp_path, write_zip):
    """A file saved on a big-endian host: byteorder record 'big', swapped bytes."""
    state = {"f": torch.randn(3, 4), "i": torch.arange(5), "h": torch.randn(6).bfloat16()}
    torch.save(state, tmp_path / "le.pth")
    entries = {}
    with zipfile.ZipFile(tmp_path / "le.pth") as zf:
        for info in zf.infolist():
            name = info.filename.split("/", 1)[1]
            entries[name] = zf.read(info)
    assert entries["byteorder"] == b"little"
    entries["byteorder"] = b"big"
    itemsizes = {"f": 4, "i": 8, "h": 2}
    # storage keys follow the save order of the dict
    for key, name in zip(("0", "1", "2"), state):
        raw = np.frombuffer(entries[f"data/{key}"], dtype=f"<u{itemsizes[name]}")
        entries[f"data/{key}"] = raw.astype(f">u{itemsizes[name]}").tobytes()
    path = write_zip(tmp_path / "be.pth", entries)
    _assert_same(load_weights(path), state)


def test_unsupported_dtype_names_the_tensor(tmp_path):
    torch.save({"ok": torch.ones(2), "q": torch.zeros(3, dtype=torch.float8_e4m3fn)}, tmp_path / "f8.pth")
    with pytest.raises(CheckpointError) as err:
        load_weights(tmp_path / "f8.pth")
    msg = str(err.value)
    assert str(tmp_path / "f8.pth") in msg and "'q'" in msg and "float8_e4m3fn" in msg


_NO_TORCH_SCRIPT = r"""
import sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
sys.path.insert(0, sys.argv[1])
import numpy as np
from rlx.weights import load_weights
store = load_weights(sys.argv[2])
np.savez(sys.argv[3], **dict(store))
assert sys.modules["torch"] is None
import json
print(json.dumps(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))))
"""


def test_loader_works_without_torch(tmp_path, repo_root):
    state = _mixed_state()
    torch.save(state, tmp_path / "m.pth")
    out = tmp_path / "loaded.npz"
    proc = subprocess.run(
        [sys.executable, "-c", _NO_TORCH_SCRIPT, str(repo_root), str(tmp_path / "m.pth"), str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert proc.returncode == 0, proc.stderr
    # only the blocking None entry: nothing imported torch or a torch submodule
    assert json.loads(proc.stdout) == ["torch"]
    with np.load(out) as loaded:
        assert sorted(loaded.files) == sorted(state)
        for name, tensor in state.items():
            np.testing.assert_array_equal(loaded[name], _expected(tensor), err_msg=name)
            assert loaded[name].dtype == _expected(tensor).dtype, name
