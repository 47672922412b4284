"""Compile generated kernel modules through the persistent cache.

A kernel module is written as ``kernel.py`` into its cache entry and imported
from there; its ``@njit(signature, cache=True)`` makes numba compile it at
import time and store the machine code in ``__pycache__`` next to the source
(numba writes those files atomically). The entry is then sealed with checksums
(`rlx.backends.common.kernel_store`). A later process that finds a valid entry imports the
same file and numba loads the code instead of compiling; numba's own hit
counter tells us which happened, so `from_cache` is measured, not assumed.

If an entry is damaged (checksum mismatch) or loading it fails for any reason,
it is wiped and rebuilt under the entry's lock.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_lock = threading.RLock()
_loaded: dict[str, "Loaded"] = {}
_scratch: Path | None = None


@dataclass
class Loaded:
    fn: object
    #: True when nothing was compiled: loaded from disk, or already loaded in this process
    from_cache: bool
    seconds: float
    path: Path


def _import(path: Path, modname: str):
    spec = importlib.util.spec_from_file_location(modname, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module  # numba's cache loader re-imports the module by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(modname, None)
        raise
    return module.kernel


def _hits(fn) -> int:
    return sum(fn.stats.cache_hits.values())


def load(source: str, cache, key_extra: dict) -> Loaded:
    """The compiled `kernel` of `source` (a module text), from the cache if possible."""
    global _scratch
    with _lock:
        if cache is None:
            from rlx.backends.common.kernel_store import KernelCache

            if _scratch is None:
                _scratch = Path(tempfile.mkdtemp(prefix="rlx-numba-"))
            cache = KernelCache(_scratch)
        key = cache.key(source, **key_extra)
        if key in _loaded:  # compiled or loaded earlier in this process: nothing to do
            first = _loaded[key]
            return Loaded(first.fn, True, 0.0, first.path)
        t0 = time.perf_counter()
        modname = f"rlx_numba_{key[:24]}"
        entry = cache.entry("numba", key)
        fn = None
        from_cache = False
        if entry.valid():
            try:
                fn = _import(entry.path / "kernel.py", modname)
                from_cache = _hits(fn) > 0
                if not from_cache:  # numba rebuilt its files: record the new checksums
                    with entry.locked():
                        entry.seal()
            except Exception:
                fn = None
        if fn is None:
            with entry.locked():
                if entry.valid():
                    try:
                        fn = _import(entry.path / "kernel.py", modname)
                        from_cache = _hits(fn) > 0
                    except Exception:
                        fn = None
                if fn is None:
                    entry.wipe()
                    entry.path.mkdir(parents=True, exist_ok=True)
                    from rlx.utils.fs import atomic_write_text

                    atomic_write_text(entry.path / "kernel.py", source)
                    fn = _import(entry.path / "kernel.py", modname)
                    from_cache = False
                    entry.seal()
        loaded = Loaded(fn, from_cache, time.perf_counter() - t0, entry.path)
        _loaded[key] = loaded
        return loaded
