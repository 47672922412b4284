"""The persistent kernel cache: compiled kernels reused across processes.

Layout under the cache root (``profile.resolved_cache_dir()``, default
``~/.cache/rlx``, ``RLX_CACHE_DIR`` overrides)::

    <root>/<namespace>/<key[:2]>/<key>/     one entry (a backend's files)
                                  MANIFEST.json   sha256 of every file, written last
    <root>/<namespace>/<key[:2]>/<key>.lock       serializes builders of one entry

The key is a sha256 over the kernel's text (source or IR) and a
*fingerprint*: device, host CPU name and features, Python and numpy versions,
plus whatever the backend adds (its library versions, its code generator
version). A compiled kernel is therefore only reused where it is valid.

Robustness rules:

* An entry counts only if its manifest exists and every listed file has the
  recorded checksum. A crash mid-build leaves no manifest; a truncated or
  edited file fails the checksum; either way the entry is wiped and rebuilt.
* Builders of the same entry take an exclusive file lock, so two processes
  compiling the same model at once build each entry once; the second waits
  and then loads. Files are written atomically (temp file + rename).
* Nothing here raises on a bad cache: the worst case is a rebuild. Only an
  unusable cache *directory* (not creatable, not writable) is a `CacheError`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from rlx.errors import CacheError
from rlx.utils.fs import atomic_write_text

MANIFEST = "MANIFEST.json"
FORMAT = 1


def host_cpu() -> tuple[str, str]:
    """(CPU name, feature string) as LLVM sees this host."""
    try:
        import llvmlite.binding as llvm

        return llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()
    except Exception:  # pragma: no cover - llvmlite is a dependency; keep the cache usable
        return platform.processor() or platform.machine(), ""


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class CacheEntry:
    """One cached kernel: a directory of files plus a manifest of their checksums."""

    cache: "KernelCache"
    namespace: str
    key: str

    @property
    def path(self) -> Path:
        return self.cache.root / self.namespace / self.key[:2] / self.key

    @property
    def lock_path(self) -> Path:
        return self.cache.root / self.namespace / self.key[:2] / f"{self.key}.lock"

    def valid(self) -> bool:
        """True when the manifest exists and every file matches its checksum."""
        manifest = self.path / MANIFEST
        try:
            data = json.loads(manifest.read_text("utf-8"))
            files = data["files"]
            if data.get("format") != FORMAT or data.get("key") != self.key or not files:
                return False
            for rel, digest in files.items():
                if _sha256_file(self.path / rel) != digest:
                    return False
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return False
        return True

    def wipe(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def seal(self, extra: dict | None = None) -> None:
        """Record checksums of every file now in the entry (the manifest is written last)."""
        files = {}
        for p in sorted(self.path.rglob("*")):
            if p.is_file() and p.name != MANIFEST and not p.name.startswith("."):
                files[str(p.relative_to(self.path))] = _sha256_file(p)
        data = {"format": FORMAT, "key": self.key, "files": files,
                "fingerprint": self.cache.fingerprint, **(extra or {})}
        atomic_write_text(self.path / MANIFEST, json.dumps(data, indent=1, sort_keys=True))

    def unseal(self) -> None:
        with contextlib.suppress(OSError):
            (self.path / MANIFEST).unlink()

    @contextlib.contextmanager
    def locked(self) -> Iterator["CacheEntry"]:
        """Exclusive lock for building this entry (released on exit, or if the process dies)."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield self
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


class KernelCache:
    """A cache root plus the fingerprint every key includes."""

    def __init__(self, root, device: str = "cpu", extra: dict | None = None):
        self.root = Path(root).expanduser()
        self.device = device
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CacheError(f"cannot create kernel cache directory {self.root}: "
                             f"{e.strerror}") from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise CacheError(f"kernel cache directory {self.root} is not writable "
                             f"(set RLX_CACHE_DIR or the profile's cache_dir)")
        import numpy

        cpu, features = host_cpu()
        self.fingerprint = {
            "device": device, "cpu": cpu, "features": features,
            "python": sys.version.split()[0], "numpy": numpy.__version__,
            "machine": platform.machine(), **(extra or {}),
        }

    def key(self, text: str, **extra) -> str:
        """sha256 over the kernel text, this cache's fingerprint and `extra` facts."""
        h = hashlib.sha256()
        h.update(json.dumps({**self.fingerprint, **extra}, sort_keys=True).encode())
        h.update(b"\0")
        h.update(text.encode("utf-8"))
        return h.hexdigest()

    def entry(self, namespace: str, key: str) -> CacheEntry:
        return CacheEntry(self, namespace, key)

    def get_or_build(self, namespace: str, key: str,
                     build: Callable[[Path], None]) -> tuple[CacheEntry, bool]:
        """The entry for `key`, built by `build(dir)` unless a valid one exists.

        Returns (entry, hit). `build` writes its files into the (emptied) entry
        directory; the manifest is sealed afterwards.
        """
        entry = self.entry(namespace, key)
        if entry.valid():
            return entry, True
        with entry.locked():
            if entry.valid():  # built by another process while we waited
                return entry, True
            entry.wipe()
            entry.path.mkdir(parents=True, exist_ok=True)
            build(entry.path)
            entry.seal()
        return entry, False

    def clear(self, namespace: str | None = None) -> None:
        shutil.rmtree(self.root / namespace if namespace else self.root, ignore_errors=True)
