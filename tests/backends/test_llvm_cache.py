"""The llvm backend's object cache: reuse across processes, damaged entries rebuilt.

Each measurement is a fresh subprocess that compiles the same graphs (the
example convnet plus a block with LayerNorm, a GEMM epilogue and blocked
attention) with the llvm preset into one cache directory and reports
`CompileReport.from_cache` / `cached_kernels`, how often LLVM's optimizer
ran (counted by wrapping `target.optimize`), and the max difference to the
reference interpreter.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rlx.backends.common.kernel_store import MANIFEST, KernelCache

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import json
import numpy as np
from rlx.backends.llvm import target
from rlx.backends.reference import run_graph
from rlx.ir import GraphBuilder
from rlx.runtime import compile_graph
from rlx.runtime.profile import PRESETS
from rlx.zoo import get_model

runs = {"optimize": 0}
_optimize = target.optimize
def counting(*a, **k):
    runs["optimize"] += 1
    return _optimize(*a, **k)
target.optimize = counting

def block():
    b = GraphBuilder("block")
    x = b.input("x", (2, 24, 32))
    h = b.layer_norm(x, b.weight("ln.w", (32,)), b.weight("ln.b", (32,)), eps=1e-6)
    q = b.linear(h, b.weight("q.w", (32, 32)), b.weight("q.b", (32,)))
    a = b.attention(q, h, h, scale=0.2)
    b.output(b.add(x, b.gelu(b.linear(a, b.weight("p.w", (32, 32)), b.weight("p.b", (32,))))))
    return b.build()

rng = np.random.default_rng(0)
spec = get_model("example-convnet")
cases = [(spec.build(), spec.synthetic_weights(0), spec.inputs_for("classifier", 0))]
g = block()
cases.append((g, {n: rng.standard_normal(v.shape).astype(np.float32)
                  for n, v in g.source_weights().items()},
              [rng.standard_normal((2, 24, 32)).astype(np.float32)]))
out = {"from_cache": [], "cached": 0, "generated": 0, "max_diff": 0.0}
for graph, w, x in cases:
    cg = compile_graph(graph, PRESETS["llvm"].replace(threads=1), weights=w)
    got = cg(*x)[0]
    ref = run_graph(graph, x, w)[0]
    r = cg.report
    out["from_cache"].append(r.from_cache)
    out["cached"] += r.cached_kernels
    out["generated"] += r.kernels - r.fallback_kernels - r.codeless_kernels
    out["max_diff"] = max(out["max_diff"], float(np.abs(got - ref).max()))
out["optimize_runs"] = runs["optimize"]
print(json.dumps(out))
"""


def compile_in_subprocess(cache_dir: Path, wait: bool = True):
    env = dict(os.environ, RLX_CACHE_DIR=str(cache_dir))
    proc = subprocess.Popen([sys.executable, "-c", CHILD], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return _result(proc) if wait else proc


def _result(proc) -> dict:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def entries(cache_dir: Path) -> list[Path]:
    return sorted(p.parent for p in (cache_dir / "llvm").rglob(MANIFEST))


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory):
    d = tmp_path_factory.mktemp("llvm-cache")
    return d, compile_in_subprocess(d)


def test_second_process_links_cached_objects_without_running_llvm(warm_cache):
    d, first = warm_cache
    assert first["from_cache"] == [False, False] and first["cached"] == 0
    assert first["generated"] >= 6 and first["optimize_runs"] == len(entries(d))
    assert first["max_diff"] < 1e-4
    for e in entries(d):
        assert {p.name for p in e.iterdir()} >= {"kernel.o", "kernel.ll", MANIFEST}
    second = compile_in_subprocess(d)
    assert second["from_cache"] == [True, True]
    assert second["cached"] == second["generated"] == first["generated"]
    assert second["optimize_runs"] == 0
    assert second["max_diff"] == first["max_diff"]


def test_damaged_entries_are_rebuilt_not_trusted(warm_cache, tmp_path):
    d, first = warm_cache
    copy = tmp_path / "copy"
    shutil.copytree(d, copy)
    damaged = entries(copy)
    assert len(damaged) >= 3
    # 1) garbage object code, 2) a truncated object, 3) no manifest (a crash mid-build)
    (damaged[0] / "kernel.o").write_bytes(b"\x7fELF garbage" * 8)
    obj = damaged[1] / "kernel.o"
    obj.write_bytes(obj.read_bytes()[: obj.stat().st_size // 2])
    (damaged[2] / MANIFEST).unlink()
    third = compile_in_subprocess(copy)
    assert third["max_diff"] == first["max_diff"]  # correct results, never the damaged code
    assert third["optimize_runs"] == 3
    assert third["from_cache"] != [True, True]
    for e in entries(copy):
        assert KernelCache(copy).entry("llvm", e.name).valid(), e
    fourth = compile_in_subprocess(copy)
    assert fourth["from_cache"] == [True, True] and fourth["optimize_runs"] == 0
    assert fourth["max_diff"] == first["max_diff"]


def test_concurrent_processes_share_one_cache(tmp_path):
    d = tmp_path / "shared"
    procs = [compile_in_subprocess(d, wait=False) for _ in range(2)]
    results = [_result(p) for p in procs]
    assert results[0]["max_diff"] == results[1]["max_diff"] < 1e-4
    for e in entries(d):
        assert KernelCache(d).entry("llvm", e.name).valid()
    third = compile_in_subprocess(d)
    assert third["from_cache"] == [True, True] and third["optimize_runs"] == 0


def test_cache_keys_name_target_cpu_features_and_llvm_version(tmp_path):
    from rlx.backends.llvm.jit import cache_key
    from rlx.backends.llvm.target import target_for

    cache = KernelCache(tmp_path / "k")
    keys = {dev: cache_key("; same IR", target_for(dev), cache)
            for dev in ("cpu", "cpu-generic", "cpu-avx2", "cpu-avx512")}
    assert len(set(keys.values())) == 4
    fp = target_for("cpu").fingerprint()
    assert fp["llvm_cpu"] and "+" in fp["llvm_features"] and fp["llvmlite"] and fp["llvm"]
    assert cache_key("; same IR", target_for("cpu"), cache) == keys["cpu"]
    assert cache_key("; other IR", target_for("cpu"), cache) != keys["cpu"]
