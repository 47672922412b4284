"""Fixtures for the weight-loading tests.

torch is used here only to WRITE checkpoints; the code under test never
imports it. The crafted-archive helpers build PyTorch-style zips by hand so
tests can feed the loader exactly the pickle they want.
"""

from __future__ import annotations

import importlib.util
import struct
import sys
import zipfile
from pathlib import Path

import pytest

# The repository root must be importable (`import rlx`) however pytest is
# started; the project has no installed package or top-level conftest yet.
_REPO = Path(__file__).resolve().parents[2]
if importlib.util.find_spec("rlx") is None:
    sys.path.insert(0, str(_REPO))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return _REPO


def _write_zip(path: Path, entries: dict[str, bytes], archive: str = "archive") -> Path:
    """A zip laid out like torch.save's: every entry under `archive/`."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in entries.items():
            zf.writestr(f"{archive}/{name}", data)
    return path


@pytest.fixture
def write_zip():
    """write_zip(path, {"data.pkl": ..., "data/0": ...}) -> path"""
    return _write_zip


def _unicode(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _call_global(module: str, name: str, arg: str) -> bytes:
    """Protocol-2 pickle that calls module.name(arg) when unpickled."""
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + _unicode(arg) + b"\x85R."


@pytest.fixture
def call_global():
    """call_global(module, name, arg) -> pickle bytes that call module.name(arg)."""
    return _call_global


@pytest.fixture
def unicode_op():
    """unicode_op(s) -> the BINUNICODE opcode pushing s."""
    return _unicode
