"""Read and write ``.safetensors`` files as numpy arrays.

safetensors is the format rlx writes (``rlx convert``) and prefers to read:
a JSON header plus raw little-endian bytes, so loading it can never run
code. Tensor names are kept exactly as in the file; candle's SAM
conversions (``lmz/candle-sam``) use Meta's state-dict names, so one loader
serves both them and Meta's ``.pth``.

Reading goes through the ``safetensors`` package, which validates the
header (offsets in bounds, no overlaps, file fully covered) before anything
is read. The one thing its numpy API cannot return is bfloat16: for those
tensors we take the byte range from the already-validated header and widen
the values to float32 (see ``rlx.weights.dtypes``).

Writing serialises with ``safetensors.numpy.save`` and stores the bytes with
``rlx.utils.fs.atomic_write_bytes``, so a crash mid-write leaves any older
file untouched.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Mapping

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save as _serialize

from rlx.errors import CheckpointError
from rlx.utils.fs import atomic_write_bytes
from rlx.weights.dtypes import bf16_bits_to_float32, c_contiguous

# safetensors dtype tag -> numpy dtype (the package's numpy API handles these).
_NUMPY_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U64": np.uint64,
    "U32": np.uint32,
    "U16": np.uint16,
    "U8": np.uint8,
    "BOOL": np.bool_,
}

# Headers larger than this are not weight files (the spec caps them at 100 MB).
_MAX_HEADER = 100_000_000


def looks_like_safetensors(head: bytes) -> bool:
    """True if `head` (the first bytes of a file) starts a safetensors file:
    an 8-byte little-endian header length followed by a JSON object."""
    if len(head) < 9 or head[8:9] != b"{":
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= _MAX_HEADER


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], frozenset[str]]:
    """Load every tensor of a safetensors file.

    Returns the tensors by name (in file order) and the names of those that
    were bfloat16 in the file and are float32 now.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="np") as f:
            names = list(f.keys())
            dtypes = {name: f.get_slice(name).get_dtype() for name in names}
            tensors: dict[str, np.ndarray] = {}
            widened: set[str] = set()
            bf16 = [n for n in names if dtypes[n] == "BF16"]
            for name, tag in dtypes.items():
                if tag == "BF16":
                    continue
                if tag not in _NUMPY_DTYPES:
                    raise CheckpointError(
                        f"{path}: tensor '{name}' has dtype {tag}, which numpy cannot "
                        "represent; convert it to a standard dtype before saving"
                    )
                tensors[name] = f.get_tensor(name)
    except SafetensorError as e:
        raise CheckpointError(
            f"{path}: not a valid safetensors file (truncated or corrupt?): {e}"
        ) from e
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e}") from e
    if bf16:
        tensors.update(_read_bf16(path, bf16))
        widened.update(bf16)
    return {name: tensors[name] for name in names}, frozenset(widened)


def _read_bf16(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    """Read bf16 tensors by the (already validated) header's byte ranges."""
    out: dict[str, np.ndarray] = {}
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
            base = 8 + n
            for name in names:
                entry = header[name]
                begin, end = entry["data_offsets"]
                shape = tuple(entry["shape"])
                f.seek(base + begin)
                data = f.read(end - begin)
                count = int(np.prod(shape, dtype=np.int64))
                if len(data) != end - begin or end - begin != 2 * count:
                    raise CheckpointError(
                        f"{path}: bf16 tensor '{name}' has {len(data)} bytes for shape {list(shape)}"
                    )
                bits = np.frombuffer(data, dtype="<u2").astype(np.uint16).reshape(shape)
                out[name] = bf16_bits_to_float32(bits)
    except (OSError, ValueError, KeyError, TypeError, struct.error) as e:
        raise CheckpointError(f"{path}: cannot read bf16 tensors: {e}") from e
    return out


def write_safetensors(
    path: str | os.PathLike,
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write `tensors` to `path` atomically (complete new file or old file)."""
    # safetensors reads raw memory from the data pointer, so every array must
    # be C-contiguous or the bytes come out in the wrong order.
    arrays = {name: c_contiguous(a) for name, a in tensors.items()}
    data = _serialize(arrays, metadata=dict(metadata) if metadata else None)
    atomic_write_bytes(path, data)
