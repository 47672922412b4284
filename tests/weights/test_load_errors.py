"""Bad files stop with a CheckpointError that names the file."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

from rlx.errors import CheckpointError
from rlx.weights import load_weights


def _fails(path, *fragments: str) -> str:
    with pytest.raises(CheckpointError) as err:
        load_weights(path)
    msg = str(err.value)
    assert str(path) in msg, msg
    for fragment in fragments:
        assert fragment in msg, msg
    return msg


@pytest.fixture
def good_pth(tmp_path):
    path = tmp_path / "good.pth"
    torch.save({"a": torch.randn(64, 64), "b": torch.arange(10)}, path)
    return path


def test_missing_file(tmp_path):
    _fails(tmp_path / "nope.pth", "no such file")


def test_directory(tmp_path):
    _fails(tmp_path, "not a regular file")


def test_empty_file(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    _fails(tmp_path / "empty.pth", "empty")


def test_random_bytes(tmp_path):
    data = bytearray(np.random.default_rng(0).bytes(4096))
    data[0] = 0x00  # no accidental zip / pickle magic
    (tmp_path / "noise.bin").write_bytes(bytes(data))
    _fails(tmp_path / "noise.bin", "unrecognised checkpoint format")


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_truncated_pth(tmp_path, good_pth, keep):
    data = good_pth.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: int(len(data) * keep)])
    _fails(cut)


def test_corrupt_storage_bytes(tmp_path, good_pth):
    data = bytearray(good_pth.read_bytes())
    with zipfile.ZipFile(good_pth) as zf:
        info = zf.getinfo("good/data/0")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + 100] ^= 0xFF  # CRC no longer matches
    bad = tmp_path / "flipped.pth"
    bad.write_bytes(bytes(data))
    _fails(bad, "good/data/0")


def test_legacy_format(tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save({"a": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    _fails(path, "legacy", "re-save")


def test_bare_pickle(tmp_path):
    import pickle

    (tmp_path / "x.pkl").write_bytes(pickle.dumps({"a": 1}, protocol=4))
    _fails(tmp_path / "x.pkl", "pickle")


def test_zip_without_data_pkl(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
    _fails(path, "data.pkl")


def test_empty_zip(tmp_path):
    path = tmp_path / "empty.zip"
    zipfile.ZipFile(path, "w").close()
    _fails(path, "data.pkl")


def test_missing_storage_record(tmp_path, good_pth):
    path = tmp_path / "holey.pth"
    with zipfile.ZipFile(good_pth) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            if info.filename != "good/data/1":
                dst.writestr(info.filename, src.read(info))
    _fails(path, "good/data/1", "missing")


def test_short_storage_record(tmp_path, good_pth):
    path = tmp_path / "short.pth"
    with zipfile.ZipFile(good_pth) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info.filename, data[:8] if info.filename == "good/data/0" else data)
    _fails(path, "good/data/0", "bytes")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_archive(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    _fails(path, "TorchScript")


def test_malformed_pickle(tmp_path, write_zip):
    path = write_zip(tmp_path / "bad.pth", {"data.pkl": b"\x80\x02}q\x00(R.", "version": b"3\n"})
    _fails(path, "malformed")


def test_not_a_dict(tmp_path):
    torch.save([torch.ones(2)], tmp_path / "list.pth")
    _fails(tmp_path / "list.pth", "list", "dict of tensors")


def test_no_state_dict_found(tmp_path):
    torch.save({"weights": {"a": torch.ones(2)}, "epoch": 3}, tmp_path / "odd.pth")
    _fails(tmp_path / "odd.pth", "'weights' (dict of tensors)", "'epoch' (int)", "state_dict")


def test_ambiguous_state_dicts(tmp_path):
    sd = {"a": torch.ones(2)}
    torch.save({"model": sd, "state_dict": sd}, tmp_path / "two.pth")
    _fails(tmp_path / "two.pth", "several candidate state dicts")


def test_mixed_tensors_and_values_at_top_level(tmp_path):
    torch.save({"a": torch.ones(2), "epoch": 3}, tmp_path / "mixed.pth")
    _fails(tmp_path / "mixed.pth", "mixes tensors with other values: 'epoch' (int)")


def test_non_string_tensor_name(tmp_path):
    torch.save({0: torch.ones(2)}, tmp_path / "intkey.pth")
    _fails(tmp_path / "intkey.pth", "0")


def test_bad_byteorder_record(tmp_path, good_pth, write_zip):
    with zipfile.ZipFile(good_pth) as zf:
        entries = {i.filename.split("/", 1)[1]: zf.read(i) for i in zf.infolist()}
    entries["byteorder"] = b"middle"
    path = write_zip(tmp_path / "bo.pth", entries)
    _fails(path, "byteorder")
