"""The on-disk kernel store: compiled kernels reused across processes.

Why it lives here: the backends write and read their compiled artifacts
through it (numba's generated module and machine code, llvm's object file),
the runtime opens it with the profile's settings, and ``rlx cache`` inspects
it. It needs only the standard library, `rlx.errors` and `rlx.utils.fs` (plus
llvmlite for the host CPU name in the fingerprint), so it sits at the bottom
of the backend layer: every backend may use it, and it knows nothing of
graphs, passes or profiles (the runtime hands it a directory and a size cap).

Layout under the cache root (``profile.resolved_cache_dir()``, default
``~/.cache/rlx``, ``RLX_CACHE_DIR`` overrides)::

    <root>/<namespace>/<key[:2]>/<key>/     one entry (a backend's files)
                                  MANIFEST.json   sha256 of every file, written last;
                                                  its mtime is the entry's last use
    <root>/<namespace>/<key[:2]>/<key>.lock       serializes builders of one entry

The namespace is the backend (``numba``, ``llvm``). The key is a sha256 over
the kernel's text (source or IR) and a *fingerprint*: device, host CPU name and
feature string, Python and numpy versions, plus whatever the backend adds (its
library versions, its code generator version). A compiled kernel is therefore
only reused where it is valid.

Integrity. An entry counts only if its manifest exists and every listed file
has the recorded checksum. Every file is written to a temp file and renamed
(`rlx.utils.fs`), so a reader sees a whole file or none; the manifest is
written last. A process killed while building leaves no manifest (and maybe a
``.*.tmp`` file): the entry is ignored, and rebuilt by the next process that
needs it. A truncated or edited file fails its checksum: the entry is wiped
and rebuilt. Nothing here raises on a bad cache, the worst case is a rebuild;
only an unusable cache *directory* or a malformed size cap is a `CacheError`.

Concurrency. Builders of one entry hold an exclusive ``flock`` on its lock
file, so two processes compiling the same model build each entry once: the
second waits, then finds the entry valid and loads it. The lock dies with its
process. Eviction may delete a lock file (while holding it), so a locker checks
after ``flock`` that the path still names the file it locked, and retries if not.

Size cap. The store keeps at most ``max_mb`` megabytes (the profile's
``cache_max_mb``; None: ``$RLX_CACHE_MAX_MB``, else 2048; 0: no cap). Each use
of an entry (`CacheEntry.valid` returning True) touches its manifest; each
store adds the entry's size to a per-process tally, and when the tally passes
the cap the store is scanned and the least recently used entries are deleted
until it is below 90 % of the cap (the entry just stored and entries whose lock
is held are never deleted). Other processes' stores are seen at the next scan,
so several processes compiling at once may overshoot the cap by what they add
in between. The first scan of a process also sweeps: entries without a
manifest whose lock is free (a builder was killed) and temp files older than
an hour are deleted.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from rlx.errors import CacheError
from rlx.utils.fs import atomic_write_text

MANIFEST = "MANIFEST.json"
FORMAT = 1
#: the size cap when neither the profile nor the environment sets one
DEFAULT_MAX_MB = 2048
MAX_MB_ENV = "RLX_CACHE_MAX_MB"
#: after an eviction the store holds at most this fraction of the cap, so that the
#: stores right after it do not each evict again
LOW_WATER = 0.9
#: a temp file this old is a killed writer's leftover (a live one renames its file
#: moments after creating it)
STALE_TEMP_SECONDS = 3600.0

_KEY = re.compile(r"[0-9a-f]{64}\Z")
_PREFIX = re.compile(r"[0-9a-f]{2}\Z")


def host_cpu() -> tuple[str, str]:
    """(CPU name, feature string) as LLVM sees this host."""
    try:
        import llvmlite.binding as llvm

        return llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()
    except Exception:  # pragma: no cover - llvmlite is a dependency; keep the cache usable
        return platform.processor() or platform.machine(), ""


def resolve_max_mb(value: int | None) -> int:
    """The size cap in MB: `value`, else ``$RLX_CACHE_MAX_MB``, else the default (0: no cap)."""
    source = "the kernel cache cap"
    if value is None:
        env = os.environ.get(MAX_MB_ENV, "").strip()
        if not env:
            return DEFAULT_MAX_MB
        source = f"{MAX_MB_ENV}={env!r}"
        try:
            value = int(env)
        except ValueError:
            raise CacheError(f"{source}: expected a whole number of megabytes "
                             f"(0: no cap)") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CacheError(f"{source}: expected a whole number of megabytes >= 0 "
                         f"(0: no cap), got {value!r}")
    return value


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _tree_bytes(path: str) -> tuple[int, float | None]:
    """(bytes of every file under `path`, mtime of its top-level manifest or None)."""
    total, manifest = 0, None
    with contextlib.suppress(OSError):
        with os.scandir(path) as it:
            for f in it:
                with contextlib.suppress(OSError):
                    if f.is_dir(follow_symlinks=False):
                        total += _tree_bytes(f.path)[0]
                        continue
                    st = f.stat(follow_symlinks=False)
                    total += st.st_size
                    if f.name == MANIFEST:
                        manifest = st.st_mtime
    return total, manifest


def _subdirs(path, pattern) -> list:
    """The directories directly in `path` whose names match `pattern`, sorted by name."""
    try:
        with os.scandir(path) as it:
            found = [d for d in it if pattern.match(d.name) and d.is_dir(follow_symlinks=False)]
    except OSError:
        return []
    return sorted(found, key=lambda d: d.name)


@contextlib.contextmanager
def _flock(lock_path: Path, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on `lock_path`; yields False if not blocking and it is taken.

    The lock file may be deleted by whoever holds it (eviction): after locking,
    the path must still name the file we locked, else we retry on the new file.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fh = open(lock_path, "a+b")
        try:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
                got = True
            except BlockingIOError:
                got = False
            if not got:
                yield False
                return
            try:
                same = os.stat(lock_path).st_ino == os.fstat(fh.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                try:
                    yield True
                finally:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
                return
        finally:
            fh.close()


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
        """True when the manifest exists and every file matches its checksum.

        Callers ask right before they use an entry, so a valid entry counts as
        used now: its manifest is touched (least-recently-used eviction reads it).
        """
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
        with contextlib.suppress(OSError):
            os.utime(manifest)
        return True

    def wipe(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def seal(self, extra: dict | None = None) -> None:
        """Record checksums of every file now in the entry (the manifest is written last),
        then count the entry against the size cap."""
        files, size = {}, 0
        for p in sorted(self.path.rglob("*")):
            if p.is_file() and p.name != MANIFEST and not p.name.startswith("."):
                files[str(p.relative_to(self.path))] = _sha256_file(p)
                size += p.stat().st_size
        data = {"format": FORMAT, "key": self.key, "files": files,
                "fingerprint": self.cache.fingerprint, **(extra or {})}
        atomic_write_text(self.path / MANIFEST, json.dumps(data, indent=1, sort_keys=True))
        self.cache.stored(self, size)

    def unseal(self) -> None:
        with contextlib.suppress(OSError):
            (self.path / MANIFEST).unlink()

    @contextlib.contextmanager
    def locked(self) -> Iterator["CacheEntry"]:
        """Exclusive lock for building this entry (released on exit, or if the process dies)."""
        with _flock(self.lock_path):
            yield self


@dataclass
class EntryInfo:
    """What a scan of the store sees of one entry directory."""

    namespace: str
    key: str
    path: Path
    bytes: int
    #: mtime of the manifest (the last use); None when there is no manifest (incomplete)
    last_used: float | None

    @property
    def complete(self) -> bool:
        return self.last_used is not None

    def manifest(self) -> dict:
        try:
            data = json.loads((self.path / MANIFEST).read_text("utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}


@dataclass
class SweepReport:
    incomplete_entries: int = 0
    temp_files: int = 0
    #: bytes deleted
    bytes: int = 0
    #: bytes left in the store's entries afterwards
    remaining: int = 0
    removed: list = field(default_factory=list)


#: bytes in the store as this process last knew them, per root (see `KernelCache.stored`)
_tally: dict[str, int] = {}
_tally_lock = threading.Lock()


class KernelCache:
    """A cache root, its size cap and the fingerprint every key includes."""

    def __init__(self, root, device: str = "cpu", extra: dict | None = None,
                 max_mb: int | None = None):
        self.root = Path(root).expanduser()
        self.device = device
        self.max_mb = resolve_max_mb(max_mb)
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

    @property
    def max_bytes(self) -> int:
        """The cap in bytes (0: no cap)."""
        return self.max_mb << 20

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

    # ---- size, eviction, sweeping --------------------------------------------------------

    def entries(self, namespace: str | None = None) -> Iterator[EntryInfo]:
        """Every entry directory of the layout (complete or not); other files are not ours."""
        if namespace:
            if not namespace.isidentifier():  # one folder name below the root, never a path
                raise CacheError(f"kernel cache: {namespace!r} is not a backend name "
                                 "(e.g. llvm, numba, plan)")
            spaces = [self.root / namespace]
        elif self.root.is_dir():
            spaces = sorted(p for p in self.root.iterdir() if p.is_dir())
        else:
            spaces = []
        for space in spaces:
            for prefix in _subdirs(space, _PREFIX):
                for d in _subdirs(prefix.path, _KEY):
                    if d.name[:2] != prefix.name:
                        continue
                    size, last = _tree_bytes(d.path)
                    yield EntryInfo(space.name, d.name, Path(d.path), size, last)

    def usage(self) -> int:
        """Bytes in all entries now."""
        return sum(e.bytes for e in self.entries())

    def temp_files(self) -> Iterator[Path]:
        for e in self.entries():
            for p in e.path.rglob(".*.tmp"):
                yield p

    def sweep(self, min_age: float = STALE_TEMP_SECONDS) -> SweepReport:
        """Delete what killed processes left behind: entries with no manifest and a free
        lock (nobody is building them) and temp files older than `min_age` seconds."""
        report = SweepReport()
        now = time.time()
        for e in list(self.entries()):
            report.remaining += e.bytes
            if not e.complete:
                if self._remove(e, require_stale=False):
                    report.incomplete_entries += 1
                    report.bytes += e.bytes
                    report.remaining -= e.bytes
                    report.removed.append(e.path)
                continue
            for p in e.path.rglob(".*.tmp"):
                with contextlib.suppress(OSError):
                    st = p.stat()
                    if now - st.st_mtime >= min_age:
                        p.unlink()
                        report.temp_files += 1
                        report.bytes += st.st_size
                        report.remaining -= st.st_size
                        report.removed.append(p)
        return report

    def evict(self, keep: CacheEntry | None = None, target_bytes: int | None = None) -> int:
        """Delete least recently used entries until at most `target_bytes` remain
        (default: 90 % of the cap); returns the bytes left. `keep` and entries being
        built by someone (lock held) stay."""
        if target_bytes is None:
            target_bytes = int(self.max_bytes * LOW_WATER)
        found = list(self.entries())
        total = sum(e.bytes for e in found)
        done = [e for e in found if e.complete]
        done.sort(key=lambda e: e.last_used)
        for e in done:
            if total <= target_bytes:
                break
            if keep is not None and (e.namespace, e.key) == (keep.namespace, keep.key):
                continue
            if self._remove(e, require_stale=True):
                total -= e.bytes
        return total

    def _remove(self, e: EntryInfo, require_stale: bool) -> bool:
        """Delete one entry and its lock file, unless its lock is held (or, with
        `require_stale`, it was used since the scan that found it)."""
        lock = e.path.parent / f"{e.key}.lock"
        with _flock(lock, blocking=False) as got:
            if not got:
                return False
            if require_stale:
                try:
                    if (e.path / MANIFEST).stat().st_mtime != e.last_used:
                        return False
                except OSError:
                    pass  # gone or unsealed meanwhile: delete what is left
            shutil.rmtree(e.path, ignore_errors=True)
            with contextlib.suppress(OSError):
                lock.unlink()
        return True

    def stored(self, entry: CacheEntry, nbytes: int) -> None:
        """Count a newly sealed entry; evict when the store passes the cap.

        The first store of a process scans the whole store (and sweeps it); later
        ones add to the tally, so a scan happens only when the cap may be passed.
        """
        root = str(self.root.resolve())
        with _tally_lock:
            used = _tally.get(root)
            if used is None:
                used = self.sweep().remaining  # one scan: sweep and measure
            else:
                used += nbytes
            if self.max_bytes and used > self.max_bytes:
                used = self.evict(keep=entry)
            _tally[root] = used

    def clear(self, namespace: str | None = None) -> tuple[int, int]:
        """Delete every entry (of one namespace); returns (entries, bytes) deleted.
        Only the store's own layout is touched, never other files under the root."""
        n = size = 0
        for e in list(self.entries(namespace)):
            shutil.rmtree(e.path, ignore_errors=True)
            n += 1
            size += e.bytes
        for space in ([self.root / namespace] if namespace else list(self.root.iterdir())):
            if not space.is_dir():
                continue
            for prefix in list(space.iterdir()):
                if _PREFIX.match(prefix.name) and prefix.is_dir():
                    for lock in prefix.glob("*.lock"):
                        if _KEY.match(lock.stem):
                            with contextlib.suppress(OSError):
                                lock.unlink()
                    with contextlib.suppress(OSError):
                        prefix.rmdir()  # only when empty
            with contextlib.suppress(OSError):
                space.rmdir()
        with _tally_lock:
            _tally.pop(str(self.root.resolve()), None)
        return n, size
