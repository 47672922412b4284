"""A .pth is a pickle: the loader must refuse anything but tensors and dicts,
and must never run code from the file.

Each malicious payload is first shown to be live -- the standard unpickler
really does run it -- so a loader that ran it would be caught.
"""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest
import torch

from rlx.errors import CheckpointError
from rlx.weights import load_weights

_VERSION = {"version": b"3\n", "byteorder": b"little"}


def _refused(path, global_name: str) -> str:
    with pytest.raises(CheckpointError) as err:
        load_weights(path)
    msg = str(err.value)
    assert global_name in msg, msg
    assert str(path) in msg, msg
    return msg


@pytest.mark.parametrize(
    "module, name, make_code",
    [
        ("os", "system", lambda marker: f"touch '{marker}'"),
        ("builtins", "exec", lambda marker: f"open({str(marker)!r}, 'w').write('ran')"),
        ("builtins", "eval", lambda marker: f"open({str(marker)!r}, 'w').write('ran')"),
    ],
)
def test_code_executing_global_is_refused_and_not_run(tmp_path, write_zip, call_global, module, name, make_code):
    marker = tmp_path / "pwned"
    payload = call_global(module, name, make_code(marker))
    path = write_zip(tmp_path / "evil.pth", {"data.pkl": payload, **_VERSION})

    _refused(path, f"{module}.{name}")
    assert not marker.exists(), "code from the checkpoint ran"

    # Positive control: the same bytes do run code under plain pickle.
    live_marker = tmp_path / "control"
    pickle.loads(call_global(module, name, make_code(live_marker)))
    assert live_marker.exists()


def test_stack_global_protocol_4_is_refused(tmp_path, write_zip):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('ran')",))

    payload = pickle.dumps({"w": Evil()}, protocol=4)
    assert b"\x93" in payload  # STACK_GLOBAL, not GLOBAL
    path = write_zip(tmp_path / "evil4.pth", {"data.pkl": payload, **_VERSION})
    _refused(path, "builtins.exec")
    assert not marker.exists()


@pytest.mark.parametrize(
    "module, name",
    [
        ("torch._utils", "_rebuild_device_tensor_from_numpy"),
        ("torch", "load"),
        ("torch.nn.modules.linear", "Linear"),
        ("torch.serialization", "_get_restore_location"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("collections", "defaultdict"),
    ],
)
def test_plausible_but_disallowed_global_is_refused(tmp_path, write_zip, call_global, module, name):
    path = write_zip(tmp_path / "odd.pth", {"data.pkl": call_global(module, name, "x"), **_VERSION})
    _refused(path, f"{module}.{name}")


def test_whole_pickled_module_is_refused(tmp_path):
    """torch.save(model) pickles the module class: refused by name."""
    torch.save(torch.nn.Linear(2, 3), tmp_path / "model.pth")
    _refused(tmp_path / "model.pth", "torch.nn.modules.linear.Linear")


def _tensor_pickle(unicode_op, size, stride, offset=0, numel=4) -> bytes:
    """{'w': _rebuild_tensor_v2(storage('0', numel floats), offset, size, stride, False, OrderedDict())}"""

    def ints(values):
        return b"(" + b"".join(b"J" + struct.pack("<i", v) for v in values) + b"t"

    storage = (
        b"(" + unicode_op("storage") + b"ctorch\nFloatStorage\n" + unicode_op("0")
        + unicode_op("cpu") + b"J" + struct.pack("<i", numel) + b"tQ"
    )
    return (
        b"\x80\x02}" + unicode_op("w") + b"ctorch._utils\n_rebuild_tensor_v2\n("
        + storage + b"J" + struct.pack("<i", offset) + ints(size) + ints(stride)
        + b"\x89ccollections\nOrderedDict\n)RtRs."
    )


def test_crafted_tensor_pickle_is_understood(tmp_path, write_zip, unicode_op):
    """Sanity check of the hand-built pickle used by the bounds tests."""
    data = np.arange(4, dtype="<f4").tobytes()
    pkl = _tensor_pickle(unicode_op, size=(2, 2), stride=(1, 2))
    path = write_zip(tmp_path / "ok.pth", {"data.pkl": pkl, "data/0": data, **_VERSION})
    np.testing.assert_array_equal(load_weights(path)["w"], np.array([[0, 2], [1, 3]], np.float32))


@pytest.mark.parametrize(
    "size, stride, offset, numel, record_floats",
    [
        ((2, 2), (2, 1), 1, 4, 4),  # offset pushes the last element past the end
        ((3,), (2,), 0, 4, 4),  # stride walks off the end
        ((4,), (1,), 0, 1000, 4),  # storage claims more elements than the record holds
    ],
)
def test_out_of_bounds_view_is_refused(tmp_path, write_zip, unicode_op, size, stride, offset, numel, record_floats):
    pkl = _tensor_pickle(unicode_op, size, stride, offset, numel)
    data = np.zeros(record_floats, "<f4").tobytes()
    path = write_zip(tmp_path / "oob.pth", {"data.pkl": pkl, "data/0": data, **_VERSION})
    with pytest.raises(CheckpointError) as err:
        load_weights(path)
    assert str(path) in str(err.value) and "archive/data/0" in str(err.value)


def test_negative_stride_is_refused(tmp_path, write_zip, unicode_op):
    pkl = _tensor_pickle(unicode_op, (2,), (-1,), offset=1)
    path = write_zip(tmp_path / "neg.pth", {"data.pkl": pkl, "data/0": bytes(16), **_VERSION})
    with pytest.raises(CheckpointError, match="malformed size"):
        load_weights(path)


def test_file_cannot_mutate_the_loaders_dtype_tags(tmp_path, write_zip, unicode_op):
    """BUILD on an allowed global (the float32 tag) must fail, not retarget
    float32 for every later load in the process."""
    attack = b"\x80\x02ctorch\nfloat32\n}" + unicode_op("read_as") + unicode_op("u1") + b"sb."
    path = write_zip(tmp_path / "mut.pth", {"data.pkl": attack, **_VERSION})
    with pytest.raises(CheckpointError):
        load_weights(path)
    slot_attack = b"\x80\x02ctorch\nfloat32\nN}" + unicode_op("read_as") + unicode_op("u1") + b"s\x86b."
    path2 = write_zip(tmp_path / "mut2.pth", {"data.pkl": slot_attack, **_VERSION})
    with pytest.raises(CheckpointError):
        load_weights(path2)
    torch.save({"x": torch.arange(3, dtype=torch.float32)}, tmp_path / "after.pth")
    got = load_weights(tmp_path / "after.pth")["x"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, [0, 1, 2])


def test_storage_key_cannot_escape_the_data_folder(tmp_path, write_zip, unicode_op):
    pkl = _tensor_pickle(unicode_op, (1,), (1,)).replace(unicode_op("0"), unicode_op("../data.pkl"), 1)
    path = write_zip(tmp_path / "key.pth", {"data.pkl": pkl, **_VERSION})
    with pytest.raises(CheckpointError, match="bad storage key"):
        load_weights(path)
