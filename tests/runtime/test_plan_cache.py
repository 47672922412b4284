"""The compiled-plan cache (rlx.runtime.plan_cache): a warm start skips passes and codegen.

Each test compiles the example convnet (conv, GELU, max-pool, LayerNorm,
linear, softmax) into its own cache directory, then compiles it again as a
fresh process would (new backend instance, nothing linked in this process is
reused by the plan cache itself) and checks whether the plan came from the
cache, whether the pass pipeline ran, and that the outputs equal the numpy
reference interpreter.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import rlx.runtime.compiler as compiler
from rlx.backends.reference import run_graph
from rlx.backends.common.kernel_store import KernelCache
from rlx.runtime import compile_graph, plan_cache
from rlx.runtime.profile import PRESETS
from rlx.zoo import get_model

BACKENDS = ("llvm", "numba")


@pytest.fixture
def model():
    spec = get_model("example-convnet")
    return spec.build(), spec.synthetic_weights(0), spec.inputs_for("classifier", 0)


def profile_for(backend: str, tmp_path, **changes):
    settings = {"threads": 1, "cache_dir": str(tmp_path / "cache"), **changes}
    return PRESETS[backend].replace(**settings)


def check(cg, graph, weights, inputs):
    got = cg(*inputs)[0]
    ref = run_graph(graph, inputs, weights)[0]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def passes_forbidden(monkeypatch):
    def no_passes(*a, **k):
        raise AssertionError("the pass pipeline ran on a plan-cache hit")
    monkeypatch.setattr(compiler, "lower", no_passes)


def entries(tmp_path):
    root = tmp_path / "cache" / plan_cache.NAMESPACE
    return sorted(p for p in root.glob("*/*") if p.is_dir()) if root.exists() else []


def fresh_backend(monkeypatch, backend: str):
    """A new backend instance per compile, as in a new process (no in-memory codegen memo)."""
    from rlx.backends import base

    real = base.get_backend

    def new_instance(name):
        return type(real(name))()

    monkeypatch.setattr(compiler, "get_backend", new_instance)


@pytest.mark.parametrize("backend", BACKENDS)
def test_second_compile_is_a_plan_hit_without_passes(model, tmp_path, monkeypatch, backend):
    graph, weights, inputs = model
    fresh_backend(monkeypatch, backend)
    profile = profile_for(backend, tmp_path)
    first = compile_graph(graph, profile, weights)
    assert not first.report.plan_from_cache
    check(first, graph, weights, inputs)
    assert len(entries(tmp_path)) == 1
    passes_forbidden(monkeypatch)
    second = compile_graph(graph, profile, weights)
    assert second.report.plan_from_cache
    assert str(second.graph) == str(first.graph)  # the same lowered graph
    assert second.report.kernels == first.report.kernels
    assert second.report.fallback_kernels == first.report.fallback_kernels
    check(second, graph, weights, inputs)


def test_llvm_hit_generates_no_code(model, tmp_path, monkeypatch):
    graph, weights, inputs = model
    fresh_backend(monkeypatch, "llvm")
    profile = profile_for("llvm", tmp_path)
    compile_graph(graph, profile, weights)
    from rlx.backends.llvm.backend import LLVMBackend

    def no_codegen(self, *a, **k):
        raise AssertionError("kernel code was generated on a plan-cache hit")
    monkeypatch.setattr(LLVMBackend, "_generate", no_codegen)
    monkeypatch.setattr(LLVMBackend, "generate", no_codegen)
    cg = compile_graph(graph, profile, weights)
    assert cg.report.plan_from_cache and cg.report.from_cache
    check(cg, graph, weights, inputs)


def test_changed_graph_is_a_miss(model, tmp_path, monkeypatch):
    graph, weights, inputs = model
    profile = profile_for("llvm", tmp_path)
    compile_graph(graph, profile, weights)
    from models.example import build_classifier

    other = build_classifier(batch=2)  # same ops, other shapes
    cg = compile_graph(other, profile, weights)
    assert not cg.report.plan_from_cache
    x = [np.concatenate([inputs[0], inputs[0]])]
    check(cg, other, weights, x)
    assert len(entries(tmp_path)) == 2


@pytest.mark.parametrize("change", [{"fusion": False}, {"fastmath": True},
                                    {"attention_block": 64}, {"threads": 2},
                                    {"vector_bits": 128}])
def test_changed_profile_is_a_miss(model, tmp_path, change):
    graph, weights, inputs = model
    compile_graph(graph, profile_for("llvm", tmp_path), weights)
    cg = compile_graph(graph, profile_for("llvm", tmp_path, **change), weights)
    assert not cg.report.plan_from_cache
    check(cg, graph, weights, inputs)


def test_profile_name_and_source_do_not_matter(model, tmp_path):
    graph, weights, _ = model
    compile_graph(graph, profile_for("llvm", tmp_path), weights)
    renamed = profile_for("llvm", tmp_path).replace(name="tuned", source="/some/profile.toml")
    assert compile_graph(graph, renamed, weights).report.plan_from_cache


def test_changed_compiler_source_is_a_miss(model, tmp_path, monkeypatch):
    graph, weights, _ = model
    profile = profile_for("llvm", tmp_path)
    compile_graph(graph, profile, weights)
    monkeypatch.setattr(plan_cache, "code_version", lambda: "another version of rlx")
    assert not compile_graph(graph, profile, weights).report.plan_from_cache


def test_upgraded_code_generator_is_a_miss(model, tmp_path, monkeypatch):
    graph, weights, _ = model
    profile = profile_for("llvm", tmp_path)
    compile_graph(graph, profile, weights)
    monkeypatch.setattr(plan_cache, "tool_versions",
                        lambda: {"llvmlite": "99.0", "numba": "99.0", "numpy": "9.0"})
    assert not compile_graph(graph, profile, weights).report.plan_from_cache


def test_graph_without_a_text_form_compiles_uncached(model, tmp_path):
    """The printer refuses some graph names; such a graph still compiles (no plan entry)."""
    graph, weights, inputs = model
    graph.name = "my model/v2"
    cg = compile_graph(graph, profile_for("llvm", tmp_path), weights)
    assert not cg.report.plan_from_cache and entries(tmp_path) == []
    check(cg, graph, weights, inputs)


@pytest.mark.parametrize("damage", ["truncated", "garbage-resealed", "manifest-gone"])
def test_damaged_entry_is_recompiled(model, tmp_path, monkeypatch, damage):
    graph, weights, inputs = model
    profile = profile_for("llvm", tmp_path)
    compile_graph(graph, profile, weights)
    (entry_dir,) = entries(tmp_path)
    data = entry_dir / plan_cache.FILE
    if damage == "truncated":  # fails the manifest's checksum
        data.write_bytes(data.read_bytes()[:100])
    elif damage == "garbage-resealed":  # checksum fine, content not a plan record
        data.write_bytes(pickle.dumps({"not": "a plan"}))
        cache = KernelCache(tmp_path / "cache")
        cache.entry(plan_cache.NAMESPACE, entry_dir.name).seal()
    else:
        (entry_dir / "MANIFEST.json").unlink()
    cg = compile_graph(graph, profile, weights)
    assert not cg.report.plan_from_cache
    check(cg, graph, weights, inputs)
    # ... and the rebuilt entry serves the next compile
    passes_forbidden(monkeypatch)
    again = compile_graph(graph, profile, weights)
    assert again.report.plan_from_cache
    check(again, graph, weights, inputs)


def test_no_cache_no_plan_cache(model, tmp_path):
    graph, weights, inputs = model
    profile = profile_for("llvm", tmp_path, cache=False)
    compile_graph(graph, profile, weights)
    cg = compile_graph(graph, profile, weights)
    assert not cg.report.plan_from_cache and entries(tmp_path) == []
    check(cg, graph, weights, inputs)


def test_sources_edited_under_a_running_process_neither_store_nor_load(model, tmp_path,
                                                                         monkeypatch):
    """The source hash is taken once, modules are imported later: after an edit, this
    process's code may be neither the old source nor the new one, so its plans must not be
    filed under the old hash (a process of the old source would take them) and it must not
    take plans of the old source either. Simulated with a stand-in source tree."""
    import os

    graph, weights, inputs = model
    src = tmp_path / "src"
    src.mkdir()
    mod = src / "module.py"
    mod.write_text("X = 1\n")
    monkeypatch.setattr(plan_cache, "SOURCE_ROOT", src)
    plan_cache._snapshot.cache_clear()
    try:
        profile = profile_for("llvm", tmp_path)
        compile_graph(graph, profile, weights)  # stores the plan under the hash of X = 1
        assert len(entries(tmp_path)) == 1
        assert compile_graph(graph, profile, weights).report.plan_from_cache
        # An edit (same size, later mtime) while this process runs ...
        mod.write_text("X = 2\n")
        st = mod.stat()
        os.utime(mod, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        assert not plan_cache.code_unchanged()
        cg = compile_graph(graph, profile, weights)
        assert not cg.report.plan_from_cache  # ... the old plan is not taken
        check(cg, graph, weights, inputs)
        other = profile.replace(fusion=False)  # ... and a new one is not stored
        compile_graph(graph, other, weights)
        assert len(entries(tmp_path)) == 1
        # A new process (a fresh hash) uses and stores plans again.
        plan_cache._snapshot.cache_clear()
        compile_graph(graph, other, weights)
        assert len(entries(tmp_path)) == 2
    finally:
        plan_cache._snapshot.cache_clear()
