"""Convert any supported checkpoint to ``.safetensors``.

safetensors loads faster than a ``.pth`` (no unpickling, no per-tensor zip
reads) and cannot carry code, so it is the format rlx recommends keeping
weights in. This module is the body of ``rlx convert IN OUT``; the CLI
prints what `convert_command` returns.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rlx.errors import CheckpointError
from rlx.weights.dtypes import human_bytes
from rlx.weights.store import WeightStore


@dataclass(frozen=True)
class ConvertSummary:
    """What `convert` wrote."""

    in_path: Path
    out_path: Path
    tensors: int
    nbytes: int
    widened: int  # bf16 tensors written as float32

    def line(self) -> str:
        plural = "s" if self.widened != 1 else ""
        note = f" ({self.widened} bf16 tensor{plural} widened to float32)" if self.widened else ""
        return (
            f"converted {self.in_path} -> {self.out_path}: {self.tensors} tensors, "
            f"{human_bytes(self.nbytes)}{note}"
        )


def convert(in_path: str | os.PathLike, out_path: str | os.PathLike) -> ConvertSummary:
    """Load `in_path` (any supported format) and write `out_path` as safetensors.

    The output is written atomically. Refuses to overwrite the input and to
    write a file whose name does not end in ``.safetensors``.
    """
    in_path, out_path = Path(in_path), Path(out_path)
    if out_path.suffix != ".safetensors":
        raise CheckpointError(f"{out_path}: output file name must end in .safetensors")
    if _same_file(in_path, out_path):
        raise CheckpointError(f"{out_path}: refusing to overwrite the input checkpoint {in_path}")
    if out_path.is_dir():
        raise CheckpointError(f"{out_path}: is a directory")
    store = WeightStore.load(in_path)
    try:
        store.save_safetensors(out_path)
    except OSError as e:
        raise CheckpointError(f"{out_path}: cannot write: {e}") from e
    return ConvertSummary(in_path, out_path, len(store), store.nbytes, len(store.widened))


def convert_command(in_path: str | os.PathLike, out_path: str | os.PathLike) -> str:
    """Run `convert` and return the one-line summary ``rlx convert`` prints."""
    return convert(in_path, out_path).line()


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()
