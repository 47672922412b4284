"""Precision in the compile profile: the field, the bf16 preset, the matrix-unit device
levels, and the error a user gets when the device lacks bf16 units."""

from __future__ import annotations

import numpy as np
import pytest

from rlx.backends.common.kernel_store import KernelCache
from rlx.backends.llvm.jit import cache_key
from rlx.backends.llvm.target import host_features, matrix_units, target_for
from rlx.backends.reference import run_graph
from rlx.errors import ProfileError
from rlx.ir import GraphBuilder
from rlx.passes import PassOptions
from rlx.passes.registry import get_pass
from rlx.runtime import compile_graph
from rlx.runtime.profile import PRESETS, CompileProfile, load_profile_file


def _graph():
    """Two products just large enough for bf16 (2^29 multiply-adds each)."""
    b = GraphBuilder("mlp")
    x = b.input("x", (1024, 1024))
    h = b.gelu(b.linear(x, b.weight("w1", (512, 1024)), b.weight("b1", (512,))))
    b.output(b.add(x, b.linear(h, b.weight("w2", (1024, 512)))))
    return b.build()


def _data(g):
    rng = np.random.default_rng(1)
    return ([rng.standard_normal(v.shape).astype(np.float32) for v in g.inputs],
            {n: rng.standard_normal(v.shape).astype(np.float32) for n, v in g.weights.items()})


def test_presets_and_field():
    assert PRESETS["default"].precision == "f32" and PRESETS["fast"].precision == "f32"
    assert PRESETS["bf16"].precision == "bf16" and PRESETS["bf16"].backend == "llvm"
    with pytest.raises(ProfileError, match="unknown precision 'fp8'"):
        CompileProfile(precision="fp8")
    assert "precision" in CompileProfile().to_dict()


def test_profile_file_sets_precision(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('base = "reference"\nprecision = "bf16"\n')
    assert load_profile_file(path).precision == "bf16"


def test_matrix_unit_device_levels(tmp_path):
    assert matrix_units("cpu-avx512") == ()
    assert matrix_units("cpu-avx512-bf16") == ("avx512bf16",)
    assert matrix_units("cpu-amx") == ("avx512bf16", "amx-bf16")
    feats = target_for("cpu-amx").features.split(",")
    assert {"+avx512bf16", "+amx-tile", "+amx-bf16"} <= set(feats)
    assert "+avx512bf16" in target_for("cpu-avx512-bf16").features.split(",")
    have = host_features()
    want = (("avx512bf16",) if {"avx512bf16", "avx512f"} <= have else ()) + \
        (("amx-bf16",) if {"amx-bf16", "amx-tile"} <= have else ())
    assert matrix_units("cpu") == want  # detected on the host
    cache = KernelCache(tmp_path / "k")
    keys = {d: cache_key("; ir", target_for(d), cache)
            for d in ("cpu-avx512", "cpu-avx512-bf16", "cpu-amx")}
    assert len(set(keys.values())) == 3


def test_reference_backend_runs_bf16_anywhere():
    g = _graph()
    ins, ws = _data(g)
    prof = PRESETS["reference"].replace(precision="bf16", name="ref-bf16")
    got = compile_graph(g, prof, weights=ws)(*ins)
    lowered = get_pass("lower-linear")(g, PassOptions())
    want = run_graph(get_pass("precision")(lowered, PassOptions(precision="bf16")), ins, ws)
    np.testing.assert_array_equal(got[0], want[0])
    f32 = run_graph(g, ins, ws)[0]
    assert 0 < np.abs(got[0] - f32).max() < 0.1 * np.abs(f32).max()
    precisions = [n.attrs["precision"] for n in lowered.nodes if n.op == "matmul"]
    assert precisions == ["f32", "f32"]  # before the pass
    marked = get_pass("precision")(lowered, PassOptions(precision="bf16"))
    assert [n.attrs["precision"] for n in marked.nodes if n.op == "matmul"] == ["bf16", "bf16"]


def test_compiled_bf16_needs_the_units_on_the_device():
    g = _graph()
    ins, ws = _data(g)
    if not matrix_units("cpu"):  # this machine: the error is what users get
        with pytest.raises(ProfileError, match=r"precision bf16 needs a CPU with AVX512-BF16 "
                                               r"or AMX-BF16, and this CPU"):
            compile_graph(g, PRESETS["bf16"], weights=ws)
    else:
        compiled = compile_graph(g, PRESETS["bf16"].replace(threads=2), weights=ws)
        want = run_graph(compiled.graph, ins, ws)
        np.testing.assert_allclose(compiled(*ins)[0], want[0], rtol=1e-5, atol=1e-4)
    with pytest.raises(ProfileError, match="device cpu-avx512 has neither"):
        compile_graph(g, PRESETS["bf16"].replace(device="cpu-avx512"), weights=ws)
    # compiling for a device level with the units works on any host (running needs them)
    compile_graph(g, PRESETS["bf16"].replace(device="cpu-avx512-bf16"), weights=ws)
