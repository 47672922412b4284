"""Read PyTorch zip checkpoints (``torch.save`` since torch 1.6) without torch.

Why not just ``torch.load``? rlx must run where torch is not installed, and a
``.pth`` file is a pickle: unpickling it with the standard machinery can run
any code the file's author chose. This reader never does that. It
unpickles ``<archive>/data.pkl`` with a restricted unpickler whose
``find_class`` hands out only a handful of harmless stand-ins -- our own
tensor-rebuilding functions, tags for storage types and dtypes, and
``collections.OrderedDict`` -- and refuses every other global with a
``CheckpointError`` naming it. Tensor bytes come from ``<archive>/data/<key>``
through ``persistent_load``; every offset, size and stride is bounds-checked
against the real record before numpy looks at the memory.

The format, as written by ``torch.save(obj, f)``:

* a zip archive whose entries all live under one folder ``<archive>/``;
* ``<archive>/data.pkl``: the pickled object (protocol 2), where each tensor
  is ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
  requires_grad, hooks[, metadata])`` -- or ``_rebuild_tensor_v3(..., dtype)``
  for dtypes without a legacy ``torch.XStorage`` class -- and each storage is
  a persistent id ``("storage", torch.XStorage, key, location, numel)``;
* ``<archive>/data/<key>``: the raw bytes of each storage;
* ``<archive>/byteorder`` (``little``/``big``; absent means little).

bfloat16 tensors are widened to float32 (numpy has no bf16; see
``rlx.weights.dtypes``). Their key paths are reported in
``PthContents.widened`` so callers can say so.

Legacy (pre-1.6, non-zip) torch files and TorchScript archives are refused
with an explanation of how to re-save them.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlx.errors import CheckpointError
from rlx.weights.dtypes import bf16_bits_to_float32

ZIP_MAGIC = b"PK\x03\x04"
EMPTY_ZIP_MAGIC = b"PK\x05\x06"

# The number torch's legacy (pre-1.6) format pickles first, right after the
# protocol opcode: ``\x80\x02`` then LONG1 with 10 bytes.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_HEAD = b"\x80\x02\x8a\x0a" + _LEGACY_MAGIC.to_bytes(10, "little")


class _Frozen:
    """Base of the stand-ins handed to the unpickler.

    A pickle's BUILD opcode sets attributes on, or calls ``__setstate__`` of,
    whatever object is on its stack. These objects are partly module-level
    singletons (the dtype tags), so they must not be changeable by a file:
    no ``__dict__`` (slots), and attribute setting and ``__setstate__`` refuse.
    """

    __slots__ = ()

    def __init__(self, **fields):
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is immutable")

    __delattr__ = __setattr__

    def __setstate__(self, state):
        raise AttributeError(f"{type(self).__name__} is immutable")


class _DType(_Frozen):
    """A torch element type: its torch name, the numpy dtype its bytes are
    read as (None when numpy cannot represent it), and its size in bytes."""

    __slots__ = ("name", "read_as", "itemsize")
    name: str
    read_as: str | None
    itemsize: int

    @property
    def widened(self) -> bool:
        return self.name == "bfloat16"


def _dt(name: str, read_as: str | None, itemsize: int) -> _DType:
    return _DType(name=name, read_as=read_as, itemsize=itemsize)


# torch dtype name -> element type. bf16 is read as uint16 and widened.
_DTYPES: dict[str, _DType] = {
    d.name: d
    for d in (
        _dt("float64", "f8", 8),
        _dt("float32", "f4", 4),
        _dt("float16", "f2", 2),
        _dt("bfloat16", "u2", 2),
        _dt("int64", "i8", 8),
        _dt("int32", "i4", 4),
        _dt("int16", "i2", 2),
        _dt("int8", "i1", 1),
        _dt("uint8", "u1", 1),
        _dt("uint16", "u2", 2),
        _dt("uint32", "u4", 4),
        _dt("uint64", "u8", 8),
        _dt("bool", "?", 1),
        _dt("complex64", "c8", 8),
        _dt("complex128", "c16", 16),
        # Known to torch, not representable in numpy: loading a tensor of
        # these fails with the tensor's name (see _to_numpy_tree).
        _dt("complex32", None, 4),
        _dt("float8_e5m2", None, 1),
        _dt("float8_e4m3fn", None, 1),
        _dt("float8_e5m2fnuz", None, 1),
        _dt("float8_e4m3fnuz", None, 1),
        _dt("float8_e8m0fnu", None, 1),
        _dt("float4_e2m1fn_x2", None, 1),
        _dt("qint8", None, 1),
        _dt("quint8", None, 1),
        _dt("qint32", None, 4),
        _dt("quint4x2", None, 1),
        _dt("quint2x4", None, 1),
        _dt("bits8", None, 1),
        _dt("bits16", None, 2),
        _dt("bits1x8", None, 1),
        _dt("bits2x4", None, 1),
        _dt("bits4x2", None, 1),
    )
}
# Aliases torch accepts as attribute names of the ``torch`` module.
_DTYPE_ALIASES = {
    "double": "float64",
    "float": "float32",
    "half": "float16",
    "long": "int64",
    "int": "int32",
    "short": "int16",
    "cfloat": "complex64",
    "cdouble": "complex128",
    "chalf": "complex32",
}

# Legacy typed-storage classes (``torch.FloatStorage`` ...) -> element type.
_STORAGE_CLASSES: dict[str, str] = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "ComplexDoubleStorage": "complex128",
    "ComplexFloatStorage": "complex64",
    "QInt8Storage": "qint8",
    "QUInt8Storage": "quint8",
    "QInt32Storage": "qint32",
    "QUInt4x2Storage": "quint4x2",
    "QUInt2x4Storage": "quint2x4",
}

_STORAGE_KEY = re.compile(r"[A-Za-z0-9_]+")


class _Rebuild(_Frozen):
    """An allowed callable handed to the unpickler. Wrapping our functions
    keeps a file from setting attributes such as ``__defaults__`` on them."""

    __slots__ = ("fn",)
    fn: Any

    def __call__(self, *args):
        return self.fn(*args)


class _StorageKind(_Frozen):
    """Stand-in for a ``torch.XStorage`` class in a persistent id."""

    __slots__ = ("dtype", "untyped")
    dtype: _DType
    untyped: bool


class _Storage(_Frozen):
    """One storage record: its raw bytes (a read-only uint8 array) and the
    element type / element count the checkpoint declares for it."""

    __slots__ = ("key", "raw", "dtype", "numel")
    key: str
    raw: np.ndarray
    dtype: _DType
    numel: int


class _Tensor(_Frozen):
    """A rebuilt tensor: a numpy array, or -- for dtypes numpy lacks -- just
    the dtype and shape so the error can name the tensor afterwards."""

    __slots__ = ("array", "dtype", "shape")
    array: np.ndarray | None
    dtype: _DType
    shape: tuple[int, ...]


@dataclass(frozen=True)
class PthContents:
    """What a ``.pth`` file holds: the unpickled object with every tensor
    replaced by a numpy array, and the key paths (tuples of dict keys / list
    indices from the top) of tensors that were bf16 and are now float32."""

    obj: Any
    widened: frozenset[tuple]


def looks_like_legacy_torch(head: bytes) -> bool:
    """True for a pickle stream (legacy torch files start with one)."""
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def legacy_message(path: Path, head: bytes) -> str:
    if head.startswith(_LEGACY_HEAD):
        return (
            f"{path}: legacy (pre-1.6, non-zip) PyTorch checkpoint format is not "
            "supported; re-save it with a newer torch: "
            "torch.save(torch.load(old_path), new_path)"
        )
    return (
        f"{path}: a bare pickle file, not a PyTorch zip checkpoint; rlx never "
        "unpickles arbitrary files. Re-save the tensors with a newer torch "
        "(torch.save(state_dict, path)) or as .safetensors"
    )


def read_pth(path: str | os.PathLike) -> PthContents:
    """Load a PyTorch zip checkpoint into numpy arrays without running its code."""
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise CheckpointError(
            f"{path}: not a readable PyTorch zip checkpoint (truncated or corrupt?): {e}"
        ) from e
    with zf:
        archive = _archive_prefix(zf, path)
        byteorder = _byteorder(zf, archive, path)
        try:
            pickled = zf.read(f"{archive}/data.pkl")
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error, ValueError) as e:
            raise CheckpointError(f"{path}: cannot read {archive}/data.pkl: {e}") from e
        unpickler = _RestrictedUnpickler(io.BytesIO(pickled), zf, archive, byteorder, path)
        try:
            obj = unpickler.load()
        except CheckpointError:
            raise
        except RecursionError as e:
            raise CheckpointError(f"{path}: {archive}/data.pkl is nested too deeply") from e
        except Exception as e:  # any malformed pickle: stack underflow, bad args, ...
            raise CheckpointError(
                f"{path}: malformed {archive}/data.pkl ({type(e).__name__}: {e})"
            ) from e
    widened: set[tuple] = set()
    try:
        tree = _to_numpy_tree(obj, (), widened, path)
    except RecursionError as e:
        raise CheckpointError(f"{path}: {archive}/data.pkl is nested too deeply") from e
    return PthContents(tree, frozenset(widened))


def _archive_prefix(zf: zipfile.ZipFile, path: Path) -> str:
    names = zf.namelist()
    pkls = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
    if not pkls:
        raise CheckpointError(
            f"{path}: zip archive has no '<archive>/data.pkl'; not a PyTorch checkpoint"
        )
    if len(pkls) > 1:
        raise CheckpointError(
            f"{path}: zip archive has several data.pkl entries ({', '.join(sorted(pkls))}); "
            "not a single PyTorch checkpoint"
        )
    archive = pkls[0].split("/", 1)[0]
    if f"{archive}/constants.pkl" in names or any(n.startswith(f"{archive}/code/") for n in names):
        raise CheckpointError(
            f"{path}: a TorchScript archive (torch.jit.save), not a state dict; "
            "save model.state_dict() with torch.save instead"
        )
    return archive


def _byteorder(zf: zipfile.ZipFile, archive: str, path: Path) -> str:
    name = f"{archive}/byteorder"
    try:
        raw = zf.read(name)
    except KeyError:
        return "<"  # torch's default for files written before the record existed
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
        raise CheckpointError(f"{path}: cannot read {name}: {e}") from e
    if raw == b"little":
        return "<"
    if raw == b"big":
        return ">"
    raise CheckpointError(f"{path}: {name} says {raw[:20]!r}; expected 'little' or 'big'")


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles ``data.pkl`` allowing only what rebuilds tensors and dicts."""

    def __init__(self, file, zf: zipfile.ZipFile, archive: str, byteorder: str, path: Path):
        super().__init__(file)
        self._zf = zf
        self._archive = archive
        self._byteorder = byteorder
        self._path = path
        self._raw: dict[str, np.ndarray] = {}  # storage key -> bytes (shared views)

    # -- globals ---------------------------------------------------------

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils":
            rebuild = {
                "_rebuild_tensor_v2": self._rebuild_tensor_v2,
                "_rebuild_tensor_v3": self._rebuild_tensor_v3,
                "_rebuild_parameter": _rebuild_parameter,
                "_rebuild_parameter_with_state": _rebuild_parameter_with_state,
            }.get(name)
            if rebuild is not None:
                return _Rebuild(fn=rebuild)
        if module == "torch" and name in _STORAGE_CLASSES:
            return _StorageKind(dtype=_DTYPES[_STORAGE_CLASSES[name]], untyped=False)
        if (module, name) in (("torch", "UntypedStorage"), ("torch.storage", "UntypedStorage")):
            return _StorageKind(dtype=_DTYPES["uint8"], untyped=True)
        if module == "torch":
            dtype_name = _DTYPE_ALIASES.get(name, name)
            if dtype_name in _DTYPES:
                return _DTYPES[dtype_name]
        raise CheckpointError(
            f"{self._path}: refusing to load global '{module}.{name}' from data.pkl; "
            "only plain tensors and (ordered) dicts of them are allowed, so no code "
            "from the file is ever run"
        )

    # -- storages --------------------------------------------------------

    def persistent_load(self, pid: Any) -> _Storage:
        path = self._path
        if not (isinstance(pid, tuple) and len(pid) == 5):
            raise CheckpointError(f"{path}: unexpected persistent id {pid!r:.80} in data.pkl")
        tag, kind, key, _location, numel = pid
        if isinstance(tag, bytes):
            tag = tag.decode("ascii", "replace")
        if isinstance(key, bytes):
            key = key.decode("ascii", "replace")
        if tag != "storage" or not isinstance(kind, _StorageKind):
            raise CheckpointError(f"{path}: unexpected persistent id {pid!r:.80} in data.pkl")
        if not (isinstance(key, str) and _STORAGE_KEY.fullmatch(key)):
            raise CheckpointError(f"{path}: bad storage key {key!r:.40} in data.pkl")
        if not (type(numel) is int and numel >= 0):
            raise CheckpointError(f"{path}: bad element count {numel!r:.40} for storage {key}")
        raw = self._read_record(key, numel * kind.dtype.itemsize)
        return _Storage(key=key, raw=raw, dtype=kind.dtype, numel=numel)

    def _read_record(self, key: str, nbytes: int) -> np.ndarray:
        name = f"{self._archive}/data/{key}"
        raw = self._raw.get(key)
        if raw is None:
            try:
                info = self._zf.getinfo(name)
            except KeyError:
                raise CheckpointError(
                    f"{self._path}: storage record '{name}' is missing from the archive"
                ) from None
            if info.file_size < nbytes:
                raise CheckpointError(
                    f"{self._path}: storage record '{name}' has {info.file_size} bytes, "
                    f"data.pkl needs {nbytes}"
                )
            try:
                data = self._zf.read(info)
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error, ValueError) as e:
                raise CheckpointError(f"{self._path}: cannot read '{name}': {e}") from e
            raw = np.frombuffer(data, dtype=np.uint8)
            self._raw[key] = raw
        if raw.size < nbytes:
            raise CheckpointError(
                f"{self._path}: storage record '{name}' has {raw.size} bytes, "
                f"data.pkl needs {nbytes}"
            )
        return raw

    # -- tensors ---------------------------------------------------------

    def _rebuild_tensor_v2(
        self, storage, storage_offset, size, stride, requires_grad=False, hooks=None, metadata=None
    ) -> _Tensor:
        if not isinstance(storage, _Storage):
            raise CheckpointError(f"{self._path}: tensor in data.pkl has no storage")
        return self._rebuild(storage, storage.dtype, storage.numel, storage_offset, size, stride)

    def _rebuild_tensor_v3(
        self, storage, storage_offset, size, stride, requires_grad, hooks, dtype, metadata=None
    ) -> _Tensor:
        if not isinstance(storage, _Storage):
            raise CheckpointError(f"{self._path}: tensor in data.pkl has no storage")
        if not isinstance(dtype, _DType):
            raise CheckpointError(f"{self._path}: tensor in data.pkl has no dtype")
        nbytes = storage.numel * storage.dtype.itemsize
        return self._rebuild(storage, dtype, nbytes // dtype.itemsize, storage_offset, size, stride)

    def _rebuild(self, storage: _Storage, dtype: _DType, numel: int, offset, size, stride) -> _Tensor:
        path, key = self._path, f"'{self._archive}/data/{storage.key}'"
        if not _is_int_tuple(size) or not _is_int_tuple(stride) or len(size) != len(stride):
            raise CheckpointError(
                f"{path}: tensor on storage {key} has malformed size {size!r:.60} / "
                f"stride {stride!r:.60}"
            )
        if type(offset) is not int or offset < 0:
            raise CheckpointError(f"{path}: tensor on storage {key} has bad offset {offset!r:.40}")
        shape = tuple(size)
        if dtype.read_as is None:
            return _Tensor(array=None, dtype=dtype, shape=shape)
        elements = 1
        for n in shape:
            elements *= n
        if elements == 0:
            return _Tensor(array=_finish(np.empty(shape, dtype.read_as), dtype), dtype=dtype, shape=shape)
        last = offset + sum((n - 1) * s for n, s in zip(shape, stride))
        if last >= numel:
            raise CheckpointError(
                f"{path}: tensor of shape {list(shape)}, stride {list(stride)}, offset {offset} "
                f"reaches element {last} of storage {key}, which has only {numel} elements"
            )
        native = np.dtype(dtype.read_as)
        item = native.newbyteorder(self._byteorder)
        if item == native:
            item = native  # same layout; keep numpy's plain spelling ('float32', not '<f4')
        flat = storage.raw[: numel * dtype.itemsize].view(item)
        view = np.lib.stride_tricks.as_strided(
            flat[offset:],
            shape=shape,
            strides=tuple(s * dtype.itemsize for s in stride),
            writeable=False,
        )
        # A contiguous view spanning the whole record in native order can keep
        # the record's bytes (nothing else pins them); anything else is copied
        # so a small view never keeps a large storage alive.
        if view.flags.c_contiguous and view.nbytes == storage.raw.size and item is native:
            array = view
        else:
            array = np.array(view, dtype=native, order="C")  # always a copy
        return _Tensor(array=_finish(array, dtype), dtype=dtype, shape=shape)


def _finish(array: np.ndarray, dtype: _DType) -> np.ndarray:
    return bf16_bits_to_float32(array) if dtype.widened else array


def _is_int_tuple(value: Any) -> bool:
    return isinstance(value, tuple) and all(type(v) is int and v >= 0 for v in value)


def _rebuild_parameter(data, requires_grad=False, hooks=None) -> _Tensor:
    if not isinstance(data, _Tensor):
        raise CheckpointError("nn.Parameter in data.pkl does not wrap a tensor")
    return data


def _rebuild_parameter_with_state(data, requires_grad, hooks, state) -> _Tensor:
    return _rebuild_parameter(data)


def _to_numpy_tree(obj: Any, where: tuple, widened: set[tuple], path: Path) -> Any:
    """Replace rebuilt tensors with their arrays, failing with the key path of
    any tensor numpy cannot hold and of any leftover internal object."""
    if isinstance(obj, _Tensor):
        if obj.array is None:
            raise CheckpointError(
                f"{path}: tensor '{_dotted(where)}' has dtype torch.{obj.dtype.name}, "
                "which numpy cannot represent; convert it to a standard dtype before saving"
            )
        if obj.dtype.widened:
            widened.add(where)
        return obj.array
    if isinstance(obj, dict):  # includes OrderedDict; attributes like _metadata are dropped
        return {k: _to_numpy_tree(v, where + (k,), widened, path) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [_to_numpy_tree(v, where + (i,), widened, path) for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    if isinstance(obj, _PLAIN):
        return obj
    if isinstance(obj, (set, frozenset)) and all(isinstance(v, _PLAIN) for v in obj):
        return obj
    what = {_Storage: "a bare torch storage", _StorageKind: "a torch storage type",
            _DType: "a torch dtype", _Rebuild: "a torch function"}.get(type(obj), f"an object of type {type(obj).__name__}")
    raise CheckpointError(
        f"{path}: '{_dotted(where) or '<top level>'}' is {what}; only tensors, "
        "dicts, lists and plain values are supported"
    )


_PLAIN = (type(None), bool, int, float, complex, str, bytes, bytearray)


def _dotted(where: tuple) -> str:
    return ".".join(str(k) for k in where)
