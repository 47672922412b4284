"""The kernel store's own rules: size cap with least-recently-used eviction, the sweep of
what killed builders leave, clear(), and two real processes on one entry.

Entries here are synthetic (a few hundred KB of bytes), so the cap is reached with a
handful of them; `tests/runtime/test_cache.py` does the same with compiled kernels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlx.backends.common import kernel_store
from rlx.backends.common.kernel_store import MANIFEST, KernelCache, resolve_max_mb
from rlx.errors import CacheError, ProfileError
from rlx.runtime.profile import CompileProfile, load_profile_file

ROOT = Path(__file__).resolve().parents[2]
KB = 1024


def put(cache: KernelCache, name: str, size: int, when: float | None = None):
    """Store an entry of `size` bytes; optionally date its last use to `when`."""
    key = cache.key(name)
    entry, hit = cache.get_or_build("t", key, lambda d: (d / "obj.bin").write_bytes(
        name.encode().ljust(size, b"x")))
    assert not hit
    if when is not None:
        os.utime(entry.path / MANIFEST, (when, when))
    return entry


def names_in(cache: KernelCache) -> set[str]:
    return {(e.path / "obj.bin").read_bytes().rstrip(b"x").decode()
            for e in cache.entries() if e.complete}


def test_lru_eviction_keeps_recent_entries_under_the_cap(tmp_path):
    cache = KernelCache(tmp_path / "c", max_mb=1)
    t = time.time() - 1000
    entries = {n: put(cache, n, 300 * KB, when=t + i) for i, n in enumerate("abc")}
    assert names_in(cache) == {"a", "b", "c"}  # 900 KB: under 1 MB
    assert entries["a"].valid()  # a hit: "a" becomes the most recently used
    put(cache, "d", 300 * KB)  # ~1205 KB > 1 MB: evict the least recently used, b, which
    assert names_in(cache) == {"a", "c", "d"}  # leaves ~904 KB, under 90 % of the cap
    assert cache.usage() <= 0.9 * cache.max_bytes
    # lock files of evicted entries go with them
    assert sorted(p.name for p in (tmp_path / "c" / "t").rglob("*.lock")) == sorted(
        f"{cache.key(n)}.lock" for n in "acd")


def test_the_entry_just_stored_stays_even_above_the_cap(tmp_path):
    cache = KernelCache(tmp_path / "c", max_mb=1)
    put(cache, "old", 100 * KB, when=time.time() - 100)
    big = put(cache, "big", 1500 * KB)
    assert names_in(cache) == {"big"} and big.valid()


def test_an_entry_whose_lock_is_held_is_not_evicted(tmp_path):
    cache = KernelCache(tmp_path / "c", max_mb=1)
    t = time.time() - 1000
    a = put(cache, "a", 400 * KB, when=t)
    put(cache, "b", 400 * KB, when=t + 1)
    with a.locked():  # someone is rebuilding "a" right now
        put(cache, "c", 400 * KB)
    assert names_in(cache) == {"a", "c"}


def test_zero_means_no_cap(tmp_path):
    cache = KernelCache(tmp_path / "c", max_mb=0)
    for n in "abcd":
        put(cache, n, 400 * KB, when=time.time() - 100)
    assert names_in(cache) == set("abcd")


def test_the_cap_comes_from_profile_then_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("RLX_CACHE_MAX_MB", raising=False)
    assert resolve_max_mb(None) == kernel_store.DEFAULT_MAX_MB == 2048
    monkeypatch.setenv("RLX_CACHE_MAX_MB", "64")
    assert resolve_max_mb(None) == 64 and resolve_max_mb(5) == 5
    assert KernelCache(tmp_path / "c").max_mb == 64
    monkeypatch.setenv("RLX_CACHE_MAX_MB", "lots")
    with pytest.raises(CacheError, match="RLX_CACHE_MAX_MB='lots'"):
        KernelCache(tmp_path / "c")
    with pytest.raises(ProfileError, match="cache_max_mb must be >= 0"):
        CompileProfile(cache_max_mb=-1)
    bad = tmp_path / "p.toml"
    bad.write_text('cache_max_mb = 1.5\n')
    with pytest.raises(ProfileError, match="cache_max_mb must be int"):
        load_profile_file(bad)
    good = tmp_path / "q.toml"
    good.write_text('cache_max_mb = 100\n')
    assert load_profile_file(good).cache_max_mb == 100


def test_sweep_removes_leftovers_of_killed_builders_only(tmp_path):
    cache = KernelCache(tmp_path / "c", max_mb=0)
    done = put(cache, "done", 10 * KB)
    # a builder killed before sealing: entry directory, no manifest, lock free
    dead = cache.entry("t", cache.key("dead"))
    dead.path.mkdir(parents=True)
    (dead.path / "obj.bin").write_bytes(b"half")
    # a builder at work: no manifest yet, but it holds the lock
    busy = cache.entry("t", cache.key("busy"))
    busy.path.mkdir(parents=True)
    # temp files of killed writers inside a valid entry: one old, one young (a live writer?)
    old_tmp = done.path / ".MANIFEST.json.abc123.tmp"
    old_tmp.write_text("{")
    os.utime(old_tmp, (time.time() - 7200,) * 2)
    young_tmp = done.path / ".obj.bin.def456.tmp"
    young_tmp.write_bytes(b"xx")
    unrelated = tmp_path / "c" / "t" / "notes.txt"
    unrelated.write_text("not ours")
    with busy.locked():
        report = cache.sweep()
    assert report.incomplete_entries == 1 and report.temp_files == 1
    assert report.remaining == cache.usage()
    assert not dead.path.exists() and busy.path.exists()
    assert not old_tmp.exists() and young_tmp.exists() and unrelated.exists()
    assert done.valid()  # temp files are not part of an entry


def test_clear_touches_only_the_store_layout(tmp_path):
    root = tmp_path / "c"
    cache = KernelCache(root, max_mb=0)
    put(cache, "a", KB)
    cache.get_or_build("other", cache.key("b"), lambda d: (d / "f").write_bytes(b"1"))
    (root / "README").write_text("keep me")
    (root / "t" / "zz").mkdir()
    assert cache.clear("other")[0] == 1
    assert names_in(cache) == {"a"}
    n, size = cache.clear()
    assert n == 1 and size >= KB
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == [
        "README", "t", "t/zz"]


HOLDER = r"""
import sys, time
from pathlib import Path
from rlx.backends.common.kernel_store import KernelCache
root, role = Path(sys.argv[1]), sys.argv[2]
cache = KernelCache(root, max_mb=0)
key = cache.key("shared kernel")
payload = b"".join(bytes([i]) * 100_000 for i in range(20))

def build(d):
    print("building", flush=True)
    (root / f"started-{role}").write_text("")
    with open(d / "obj.bin", "wb") as f:  # slowly, in pieces: a torn file would show
        for i in range(20):
            f.write(payload[i * 100_000:(i + 1) * 100_000])
            f.flush()
            time.sleep(0.05)

entry, hit = cache.get_or_build("t", key, build)
data = (entry.path / "obj.bin").read_bytes()
print("hit" if hit else "built", data == payload, flush=True)
"""


def test_two_processes_building_one_entry(tmp_path):
    root = tmp_path / "c"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    first = subprocess.Popen([sys.executable, "-c", HOLDER, str(root), "a"], cwd=ROOT,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (root / "started-a").exists():
        assert first.poll() is None, first.communicate()
        assert time.time() < deadline
        time.sleep(0.01)
    # the first one is writing the entry now: it is not valid to anyone else yet
    cache = KernelCache(root, max_mb=0)
    assert not cache.entry("t", cache.key("shared kernel")).valid()
    second = subprocess.Popen([sys.executable, "-c", HOLDER, str(root), "b"], cwd=ROOT,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outs = [p.communicate(timeout=120) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    assert outs[0][0].split() == ["building", "built", "True"]
    # the second waited for the lock, then read the complete file: it never built
    assert outs[1][0].split() == ["hit", "True"]
    assert not (root / "started-b").exists()


KILLED = r"""
import os, signal, sys
from pathlib import Path
from rlx.backends.common.kernel_store import KernelCache
from rlx.utils.fs import atomic_write
root, where = Path(sys.argv[1]), sys.argv[2]
cache = KernelCache(root, max_mb=0)

def build(d):
    (d / "small.txt").write_text("part one")
    with atomic_write(d / "obj.bin") as f:
        f.write(b"y" * 50_000)
        f.flush()
        if where == "mid-write":
            os.kill(os.getpid(), signal.SIGKILL)
        f.write(b"y" * 50_000)
    if where == "before-manifest":
        os.kill(os.getpid(), signal.SIGKILL)

cache.get_or_build("t", cache.key("k"), build)
"""


@pytest.mark.parametrize("where", ["mid-write", "before-manifest"])
def test_a_builder_killed_halfway_leaves_nothing_trusted(tmp_path, where):
    root = tmp_path / "c"
    proc = subprocess.run([sys.executable, "-c", KILLED, str(root), where], cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True)
    assert proc.returncode == -9, proc.stderr
    cache = KernelCache(root, max_mb=0)
    entry = cache.entry("t", cache.key("k"))
    leftovers = list(entry.path.glob(".obj.bin.*.tmp"))
    assert len(leftovers) == (where == "mid-write")
    assert not entry.valid()  # no manifest: not trusted
    calls = []
    entry, hit = cache.get_or_build(
        "t", cache.key("k"), lambda d: (calls.append(d), (d / "obj.bin").write_bytes(b"ok")))
    assert not hit and len(calls) == 1 and entry.valid()
    assert sorted(p.name for p in entry.path.iterdir()) == [MANIFEST, "obj.bin"]


def test_a_truncated_entry_is_rebuilt(tmp_path):
    cache = KernelCache(tmp_path / "c", max_mb=0)
    entry = put(cache, "t", 64 * KB)
    manifest = json.loads((entry.path / MANIFEST).read_text())
    assert list(manifest["files"]) == ["obj.bin"]
    with open(entry.path / "obj.bin", "r+b") as f:
        f.truncate(1000)
    assert not entry.valid()
    calls = []
    _, hit = cache.get_or_build("t", entry.key, lambda d: calls.append(
        (d / "obj.bin").write_bytes(b"fresh")))
    assert not hit and calls and (entry.path / "obj.bin").read_bytes() == b"fresh"


def test_keys_include_the_host_feature_string(tmp_path, monkeypatch):
    """A kernel built for one CPU's features is never reused on a CPU with others."""
    a = KernelCache(tmp_path / "c")
    assert a.fingerprint["features"] == kernel_store.host_cpu()[1]
    name, features = kernel_store.host_cpu()
    monkeypatch.setattr(kernel_store, "host_cpu", lambda: (name, features + ",+avx512f"))
    b = KernelCache(tmp_path / "c")
    assert a.key("kernel text") != b.key("kernel text")
