"""The compiled-plan cache: a warm start skips the passes and the kernel code generator.

The kernel cache already keeps every kernel's machine code, but a fresh
process still re-runs the whole pass pipeline (a third of a second for SAM's
encoder) and regenerates each kernel's IR only to find that its object is on
disk. This cache keeps what compiling a graph *decided*: the lowered graph,
the pass records, which nodes fell back to the reference kernels, and each
backend kernel's description (for llvm: its spec and generated IR). A hit
hands those straight to the backend, which links the cached objects.

Key: sha256 over the HIR graph's text (`rlx.ir.printer`; weights by name, so
a new checkpoint is still a hit), the compile profile (every field, plus the
effective thread count), the backend, the kernel store's fingerprint (device,
host CPU and features, Python and numpy versions) and the source of the
compiler itself (every ``rlx/**/*.py``): a pass that changes is a miss, not a
stale plan.

One entry is one pickle in the kernel store (namespace ``plan``), under the
store's checksummed manifest: a truncated, edited or unreadable entry is wiped
and the graph compiled from scratch (nothing raises). Pickle is safe here for
the same reason linking the cached objects is: the store is this user's own
directory and holds native code already; nothing from a checkpoint or a
request ever reaches it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import pickle
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from rlx.ir.graph import Graph
from rlx.ir.printer import print_graph

__all__ = ["NAMESPACE", "PlanRecord", "code_unchanged", "code_version", "load", "plan_key",
           "store"]

NAMESPACE = "plan"
FILE = "plan.pkl"
#: bump when the record's layout changes
FORMAT = 1


@dataclass
class PlanRecord:
    """What compiling one graph decided, enough to rebuild its plan without passes."""

    lowered: Graph
    passes: list
    #: node index -> the backend's description of its kernel (None: reference fallback)
    kernels: dict = field(default_factory=dict)
    format: int = FORMAT


#: the package whose source is hashed (a test points it elsewhere)
SOURCE_ROOT = Path(__file__).resolve().parents[1]


def _stamps(files) -> tuple:
    """(mtime, size) of every file (an edit, or a replacement by rename, changes them).
    Not the folders: importing creates ``__pycache__`` folders in them."""
    out = []
    for p in files:
        try:
            st = p.stat()
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


@lru_cache(maxsize=1)
def _snapshot() -> tuple[str, tuple, tuple]:
    """(sha256 over the rlx sources, the files hashed, their stamps), read once per process."""
    root = SOURCE_ROOT
    files = sorted(root.rglob("*.py"))
    stamps = _stamps(files)
    h = hashlib.sha256()
    for path in files:
        h.update(str(path.relative_to(root)).encode())
        h.update(b"\0")
        try:
            h.update(path.read_bytes())
        except OSError:  # pragma: no cover - a file vanished while we read the tree
            continue
        h.update(b"\0")
    return h.hexdigest(), tuple(files), stamps


def code_version() -> str:
    """sha256 over the source of the rlx package (read once per process)."""
    return _snapshot()[0]


def code_unchanged() -> bool:
    """True while the sources on disk are still the ones `code_version` hashed.

    Why: the hash is taken once, but modules are imported lazily, later. A source
    edited (or upgraded) in between would make this process generate code with the
    new source and file the plan under the old source's hash -- where a process
    running the old source would then find a plan it did not make (seen: a cached
    attention kernel's IR from another version of the generator gave NaN). So a
    process whose sources changed under it neither stores nor loads plans; it
    compiles from scratch, which is always right. A stat of each source file, well
    under a millisecond. (A file added after the hash is not noticed.)
    """
    _, files, stamps = _snapshot()
    return _stamps(files) == stamps


#: profile fields that do not change a compiled plan (what it is called, where it came
#: from, where and how big the store is)
NOT_IN_KEY = frozenset({"name", "source", "cache_dir", "cache_max_mb"})


def _profile_facts(profile) -> dict:
    facts = {f.name: getattr(profile, f.name) for f in dataclasses.fields(profile)
             if f.name not in NOT_IN_KEY}
    facts["effective_threads"] = profile.effective_threads
    return {k: repr(v) for k, v in facts.items()}


@lru_cache(maxsize=1)
def tool_versions() -> dict:
    """Versions of the code generators and numpy: a plan holds IR text and kernel
    descriptions made by them, so an upgrade must miss."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("llvmlite", "numba", "numpy"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def plan_key(graph: Graph, profile, backend_name: str, cache) -> str | None:
    """The plan-cache key of compiling `graph` under `profile` into `cache`'s store (None: the
    graph has no text form -- e.g. a name the printer refuses -- so it is compiled uncached)."""
    from rlx.errors import RlxError

    try:
        text = print_graph(graph)
    except RlxError:
        return None
    h = hashlib.sha256()
    h.update(json.dumps({"format": FORMAT, "backend": backend_name,
                         "profile": _profile_facts(profile), "code": code_version(),
                         "tools": tool_versions(), "store": cache.fingerprint},
                        sort_keys=True).encode())
    h.update(b"\0")
    h.update(text.encode("utf-8"))
    return h.hexdigest()


def load(cache, key: str) -> PlanRecord | None:
    """The record stored under `key`, or None (missing, damaged: a damaged one is wiped;
    also None when this process's sources changed on disk: see `code_unchanged`)."""
    if not code_unchanged():
        return None
    entry = cache.entry(NAMESPACE, key)
    if not entry.valid():
        return None
    try:
        record = pickle.loads((entry.path / FILE).read_bytes())
        if not isinstance(record, PlanRecord) or record.format != FORMAT:
            raise ValueError("not a plan record of this format")
        return record
    except Exception:  # damaged despite the checksum, or from another code version
        with entry.locked():
            entry.wipe()
        return None


def store(cache, key: str, record: PlanRecord) -> bool:
    """Write `record` under `key` (temp file + rename, sealed last). False if not picklable
    or this process's sources changed on disk since they were hashed (`code_unchanged`)."""
    from rlx.utils.fs import atomic_write_bytes

    if not code_unchanged():
        return False
    buf = io.BytesIO()
    try:
        pickle.dump(record, buf, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # a kernel description that cannot be pickled: just no plan cache
        return False
    entry = cache.entry(NAMESPACE, key)
    with entry.locked():
        if entry.valid():  # another process stored it first
            return True
        entry.wipe()
        entry.path.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(entry.path / FILE, buf.getvalue())
        entry.seal()
    return True
