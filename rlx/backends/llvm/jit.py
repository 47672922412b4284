"""IR text -> machine code in this process, through the persistent object cache.

A kernel module is compiled once per (IR text, target, LLVM version): the
optimized object file is stored in a `rlx.backends.common.kernel_store` entry (``kernel.o``
plus the IR as ``kernel.ll`` for inspection, both checksummed). Any later
process with the same key links the object directly into an ORC JIT library:
no parsing, no optimizer, no code generation. Equal IR within a process is
linked once and shared.

External symbols are resolved at link time, never baked into the code: the
BLAS entry points are imported under fixed names (``rlx_blas_*``) with this
process's addresses, libm and memset/memcpy come from the process itself. An
object that fails to link (damaged despite its checksum, or built by another
LLVM) is rebuilt.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass

import llvmlite.binding as llvm

from rlx.backends.llvm.irutil import ENTRY
from rlx.backends.llvm.target import Target, compile_ir, compile_lock

NAMESPACE = "llvm"
OBJECT, IR_FILE = "kernel.o", "kernel.ll"

_lock = threading.RLock()
_jit = None
_names = itertools.count()
_loaded: dict[str, "Loaded"] = {}


@dataclass
class Loaded:
    """A linked kernel library: the entry address stays valid while `tracker` lives."""

    address: int
    tracker: object
    #: True when nothing was compiled: read from disk, or already linked in this process
    from_cache: bool
    seconds: float
    key: str


def _lljit():
    global _jit
    if _jit is None:
        _jit = llvm.create_lljit_compiler()
    return _jit


def _link(obj: bytes, imports: dict[str, int]):
    builder = llvm.JITLibraryBuilder().add_object_img(obj).add_current_process()
    for name, address in imports.items():
        builder.import_symbol(name, address)
    builder.export_symbol(ENTRY)
    tracker = builder.link(_lljit(), f"rlx_kernel_lib{next(_names)}")
    address = tracker[ENTRY]
    if not address:
        raise RuntimeError("kernel entry symbol not found after linking")
    return tracker, address


def cache_key(ir_text: str, target: Target, cache) -> str:
    return cache.key(ir_text, **target.fingerprint())


def load(ir_text: str, target: Target, cache, imports: dict[str, int]) -> Loaded:
    """The linked kernel for `ir_text`, compiled or read from `cache` (None: no disk cache)."""
    with _lock:
        if cache is None:
            import hashlib

            key = "nocache-" + hashlib.sha256(
                (repr(sorted(target.fingerprint().items())) + ir_text).encode()).hexdigest()
        else:
            key = cache_key(ir_text, target, cache)
        hit = _loaded.get(key)
        if hit is not None:  # linked earlier in this process: nothing compiled now
            return Loaded(hit.address, hit.tracker, True, 0.0, key)
        t0 = time.perf_counter()
        loaded = None
        if cache is not None:
            loaded = _from_cache(cache, key, imports, t0)
        if loaded is None:
            _, obj = compile_ir(ir_text, target)
            if cache is not None:
                _store(cache, key, ir_text, obj)
            with compile_lock:
                tracker, address = _link(obj, imports)
            loaded = Loaded(address, tracker, False, time.perf_counter() - t0, key)
        _loaded[key] = loaded
        return loaded


def _from_cache(cache, key: str, imports, t0) -> Loaded | None:
    entry = cache.entry(NAMESPACE, key)
    if not entry.valid():
        return None
    try:
        obj = (entry.path / OBJECT).read_bytes()
        with compile_lock:
            tracker, address = _link(obj, imports)
    except Exception:  # damaged or foreign object: rebuild it
        with entry.locked():
            entry.wipe()
        return None
    return Loaded(address, tracker, True, time.perf_counter() - t0, key)


def _store(cache, key: str, ir_text: str, obj: bytes) -> None:
    from rlx.utils.fs import atomic_write_bytes, atomic_write_text

    entry = cache.entry(NAMESPACE, key)
    with entry.locked():
        if entry.valid():  # another process finished first; its object is as good as ours
            return
        entry.wipe()
        entry.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(entry.path / IR_FILE, ir_text)
        atomic_write_bytes(entry.path / OBJECT, obj)
        entry.seal()
