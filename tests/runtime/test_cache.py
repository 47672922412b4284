"""The persistent kernel cache: reuse across processes, damage detection, concurrency.

Cross-process behaviour is measured in real subprocesses that compile
example-convnet with the numba (or llvm) backend into one cache directory and
report `CompileReport.from_cache` / `cached_kernels` (numba: counted from
numba's own cache hit statistics) plus the max difference to the reference
interpreter. A child can be told to kill itself (SIGKILL) halfway through
writing its Nth kernel file, the way a crash or a killed job would stop it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlx.errors import CacheError
from rlx.backends.common.kernel_store import MANIFEST, KernelCache

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import json, os, signal, sys
from pathlib import Path
import numpy as np
import rlx.utils.fs as fs

KILL_AT = int(os.environ.get("RLX_TEST_KILL_AT", "0"))
writes = []
_write_bytes, _write_text = fs.atomic_write_bytes, fs.atomic_write_text

def killing(real):
    def write(path, data):
        if Path(path).name in ("kernel.o", "kernel.py"):
            writes.append(path)
            if len(writes) == KILL_AT:  # half the file is in the temp file, then we die
                with fs.atomic_write(path, "wb" if isinstance(data, bytes) else "w") as f:
                    f.write(data[:len(data) // 2])
                    f.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
        return real(path, data)
    return write

fs.atomic_write_bytes, fs.atomic_write_text = killing(_write_bytes), killing(_write_text)
from rlx.zoo import get_model
from rlx.runtime import compile_graph
from rlx.runtime.profile import PRESETS
from rlx.backends.reference import run_graph
spec = get_model("example-convnet")
g = spec.build()
w = spec.synthetic_weights(0)
x = spec.inputs_for("classifier", 0)
cg = compile_graph(g, PRESETS[sys.argv[1]].replace(threads=1), weights=w)
got = cg(*x)[0]
ref = run_graph(g, x, w)[0]
r = cg.report
print(json.dumps({"from_cache": r.from_cache, "cached": r.cached_kernels,
                  "generated": r.kernels - r.fallback_kernels - r.codeless_kernels,
                  "max_diff": float(np.abs(got - ref).max())}))
"""


def compile_in_subprocess(cache_dir: Path, wait=True, backend="numba", **env_extra):
    env = dict(os.environ, RLX_CACHE_DIR=str(cache_dir), **env_extra)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, backend], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return proc
    return _result(proc)


def _result(proc):
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def entries(cache_dir: Path, backend="numba") -> list[Path]:
    return sorted(p.parent for p in (cache_dir / backend).rglob(MANIFEST))


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory):
    """A cache dir filled by one process; returns (dir, first report)."""
    d = tmp_path_factory.mktemp("kcache")
    first = compile_in_subprocess(d)
    return d, first


def test_second_process_hits_the_cache(warm_cache):
    d, first = warm_cache
    assert first["from_cache"] is False and first["cached"] == 0 and first["generated"] > 0
    assert first["max_diff"] < 1e-5
    second = compile_in_subprocess(d)
    assert second["from_cache"] is True and second["cached"] == second["generated"]
    assert second["max_diff"] < 1e-5


def test_corrupted_entries_are_rebuilt_not_trusted(warm_cache, tmp_path):
    d, _ = warm_cache
    # Work on a copy so the other tests keep a clean cache.
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(d, copy)
    damaged = entries(copy)
    assert len(damaged) >= 2
    # 1) garbage in numba's compiled-code file, 2) an edited kernel source, 3) no manifest
    nbc = next(damaged[0].rglob("*.nbc"))
    nbc.write_bytes(b"\x00garbage" * 10)
    src = damaged[1] / "kernel.py"
    src.write_text(src.read_text().replace("for task in range", "for task in  range"))
    if len(damaged) > 2:
        (damaged[2] / MANIFEST).unlink()
    third = compile_in_subprocess(copy)
    assert third["max_diff"] < 1e-5  # correct results, never the damaged code
    assert third["from_cache"] is False
    assert third["cached"] == third["generated"] - min(3, len(damaged))
    for e in entries(copy):
        assert KernelCache(copy).entry("numba", e.name).valid(), e
    fourth = compile_in_subprocess(copy)
    assert fourth["from_cache"] is True and fourth["max_diff"] < 1e-5


@pytest.mark.parametrize("backend", ["numba", "llvm"])
def test_concurrent_processes_share_one_cache(tmp_path, backend):
    d = tmp_path / "shared"
    procs = [compile_in_subprocess(d, wait=False, backend=backend) for _ in range(2)]
    results = [_result(p) for p in procs]
    for r in results:
        assert r["max_diff"] < 1e-5
    # The entries are complete and consistent afterwards, and a third process reuses them.
    found = entries(d, backend)
    assert len(found) == results[0]["generated"]
    for e in found:
        assert KernelCache(d).entry(backend, e.name).valid()
    third = compile_in_subprocess(d, backend=backend)
    assert third["from_cache"] is True and third["max_diff"] < 1e-5


@pytest.mark.parametrize("backend", ["numba", "llvm"])
def test_a_process_killed_while_writing_a_kernel(tmp_path, backend):
    d = tmp_path / "killed"
    proc = compile_in_subprocess(d, wait=False, backend=backend, RLX_TEST_KILL_AT="3")
    proc.communicate(timeout=600)
    assert proc.returncode == -9
    # two entries were complete, the third has half a file in a temp file and no manifest
    assert len(entries(d, backend)) == 2
    leftovers = list(d.rglob(".kernel.*.tmp"))
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0
    after = compile_in_subprocess(d, backend=backend)
    assert after["max_diff"] < 1e-5  # the damaged entry was rebuilt, never loaded
    assert after["cached"] == 2 and after["generated"] > 2
    assert not list(d.rglob("*.tmp"))  # the leftover went with the rebuilt entry
    found = entries(d, backend)
    assert len(found) == after["generated"]
    assert all(KernelCache(d).entry(backend, e.name).valid() for e in found)


def test_the_size_cap_evicts_old_entries_across_processes(tmp_path):
    """A 1 MB cap (RLX_CACHE_MAX_MB) over a store that holds 2 MB of old entries: the
    compiling process deletes the old ones and keeps its own kernels."""
    d = tmp_path / "capped"
    store = KernelCache(d, max_mb=0)
    old = []
    for i in range(4):
        entry, _ = store.get_or_build("llvm", store.key(f"old {i}"),
                                      lambda p: (p / "kernel.o").write_bytes(b"o" * 500_000))
        os.utime(entry.path / MANIFEST, (1e9 + i, 1e9 + i))
        old.append(entry.path)
    first = compile_in_subprocess(d, backend="llvm", RLX_CACHE_MAX_MB="1")
    assert first["max_diff"] < 1e-5 and first["cached"] == 0
    assert not any(p.exists() for p in old[:3])  # the least recently used went first
    assert KernelCache(d, max_mb=1).usage() <= 1 << 20
    second = compile_in_subprocess(d, backend="llvm", RLX_CACHE_MAX_MB="1")
    assert second["from_cache"] is True and second["cached"] == second["generated"]


def test_get_or_build_seals_and_detects_damage(tmp_path):
    cache = KernelCache(tmp_path / "c", device="cpu")
    key = cache.key("some kernel text")
    calls = []

    def build(path):
        calls.append(path)
        (path / "obj.bin").write_bytes(b"code")

    entry, hit = cache.get_or_build("test", key, build)
    assert not hit and entry.valid() and len(calls) == 1
    entry, hit = cache.get_or_build("test", key, build)
    assert hit and len(calls) == 1
    (entry.path / "obj.bin").write_bytes(b"CODE")  # same size, different bytes
    assert not entry.valid()
    entry, hit = cache.get_or_build("test", key, build)
    assert not hit and len(calls) == 2 and (entry.path / "obj.bin").read_bytes() == b"code"


def test_keys_depend_on_text_device_and_versions(tmp_path):
    a = KernelCache(tmp_path / "a", device="cpu")
    b = KernelCache(tmp_path / "a", device="cpu-avx2")
    assert a.key("x") != a.key("y")
    assert a.key("x") != b.key("x")
    assert a.key("x", numba="0.1") != a.key("x", numba="0.2")
    assert a.key("x") == KernelCache(tmp_path / "a", device="cpu").key("x")


def test_unusable_cache_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(CacheError, match="cannot create kernel cache directory"):
        KernelCache(blocker / "sub")
