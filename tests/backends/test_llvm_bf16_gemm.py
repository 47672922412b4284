"""The llvm backend's bf16 GEMM (issue 14) against the reference interpreter.

Three kinds of test, by what the CPU running them has:

* everywhere: the kernel with its dot-pair emulated in plain IR (reached only
  through `gemm_bf16.emulation_for_tests`) against the reference interpreter on
  the same graph, whose products round their operands to bf16 and accumulate in
  f32 -- packing, blocking, ragged M / N / K, batches, views and every fused
  epilogue; plus the AMX tile intrinsics emulated the same way (`amx-emulated`);
* everywhere: code cross-compiled for CPUs with the units (Sapphire/Emerald
  Rapids, Zen 4/5) read as assembly: `vdpbf16ps` on the AVX512-BF16 path,
  `ldtilecfg` / `tdpbf16ps` / `tilerelease` on the AMX path;
* only where the CPU has the unit: the real instructions executed, the same
  comparisons (skipped elsewhere, with the missing feature named).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from rlx.backends.llvm.bf16pack import AMX_LAYOUT, DOT_LAYOUT, bf16_bits, pack_b, unpack_b
from rlx.backends.llvm.gemm_bf16 import emulation_for_tests
from rlx.backends.llvm.target import assembly, host_features, target_for
from rlx.backends.reference import run_graph
from rlx.errors import ProfileError, RlxError
from rlx.ir import GraphBuilder
from rlx.ir.ops.linalg import round_bf16
from rlx.runtime import compile_graph
from rlx.runtime.profile import PRESETS
from tests.backends.test_numba_ops import data

LLVM = PRESETS["llvm"].replace(threads=2, name="llvm-bf16-test")
#: normwise and elementwise (relative to max |y|) bounds: the kernel and numpy sum the same
#: exact products in different orders, so results differ by f32 rounding only
NORM_RTOL, ELEM_RTOL = 1e-6, 2e-6


def _bf16(b, x, w, **kw):
    return b.matmul(x, w, precision="bf16", **kw)


# ---- graphs: one bf16 product each, with every epilogue the fusion passes fold ---------


def linear_gelu(b):  # a linear layer: batch folded into one tall product, odd K
    x = b.input("x", (2, 37, 71))
    y = _bf16(b, x, b.weight("w", (45, 71)), transpose_b=True)
    b.output(b.gelu(b.add(y, b.weight("bias", (45,))), approximate="none"))


def linear_scale_residual(b):  # bias, scale and a residual input; several row tasks
    x = b.input("x", (600, 130))
    r = b.input("r", (600, 100))
    y = _bf16(b, x, b.weight("w", (130, 100)))
    b.output(b.add(b.mul(b.add(y, b.weight("bias", (100,))), 0.125), r))


def relu_tanh(b):  # two activations, N a multiple of 32, K a multiple of 32
    x = b.input("x", (33, 64))
    y = _bf16(b, x, b.weight("w", (64, 96)))
    b.output(b.tanh(b.relu(y)))


def batched_activations(b):  # both operands computed (B packed per call), A transposed
    a = b.input("a", (3, 29, 20))
    w = b.input("w", (3, 29, 50))
    b.output(_bf16(b, a, w, transpose_a=True))


def broadcast_batch(b):  # B shared by the outer batch dim, per-entry along the inner one
    a = b.input("a", (2, 3, 17, 33))
    w = b.input("w", (3, 33, 19))
    b.output(b.exp(b.mul(_bf16(b, a, w), 0.01)))


def shared_a(b):  # A shared by the outer batch dim (packed by the runtime, not the tasks)
    a = b.input("a", (3, 17, 33))
    w = b.input("w", (2, 3, 33, 40))
    b.output(_bf16(b, a, w))


def strided_view(b):  # A read through a transpose view folded into the gemm group
    xt = b.transpose(b.input("x", (24, 80)), perm=(1, 0))
    b.output(b.add(_bf16(b, xt, b.weight("w", (24, 70))), b.weight("bias", (70,))))


def single_row(b):  # M = 1, N < one vector
    b.output(_bf16(b, b.input("x", (1, 5)), b.weight("w", (5, 7))))


GRAPHS = [linear_gelu, linear_scale_residual, relu_tanh, batched_activations,
          broadcast_batch, shared_a, strided_view, single_row]


def _run(build, unit, seed=0, expect_ops=True, lanes=None):
    b = GraphBuilder(build.__name__)
    build(b)
    graph = b.build()
    inputs = [data(v.shape, seed=seed + i) for i, v in enumerate(graph.inputs)]
    weights = {n: data(v.shape, seed=100 + i)
               for i, (n, v) in enumerate(graph.source_weights().items())}
    expected = run_graph(graph, inputs, weights)
    with emulation_for_tests(unit, lanes):
        compiled = compile_graph(graph, LLVM, weights=weights)
        got = compiled(*inputs)
    kernels = [k for k in compiled.plan.kernels if k is not None]
    bf16 = [k for k in kernels if k.info.extra.get("bf16_unit")]
    if expect_ops:
        assert compiled.report.fallback_kernels == 0, compiled.graph.op_counts()
        assert [k.info.extra["bf16_unit"] for k in bf16] == [unit]
    return graph, inputs, weights, got, expected, compiled


def _close(got, expected):
    for g, e in zip(got, expected):
        assert g.shape == e.shape and g.dtype == e.dtype
        scale = float(np.abs(e).max())
        assert np.linalg.norm(g - e) <= NORM_RTOL * np.linalg.norm(e) + 1e-30, (
            np.linalg.norm(g - e) / np.linalg.norm(e))
        np.testing.assert_allclose(g, e, rtol=0, atol=ELEM_RTOL * scale)


def _units_here():
    have = host_features()
    return {"avx512bf16": "avx512bf16" in have and "avx512f" in have,
            "amx": {"amx-bf16", "amx-tile"} <= have}


# ---- run here: emulated dot pairs and emulated tiles --------------------------------------


@pytest.mark.parametrize("unit,lanes", [("emulated", 16), ("emulated", 8), ("emulated", 4),
                                        ("amx-emulated", None)],
                         ids=["dot16", "dot8", "dot4", "amx"])
@pytest.mark.parametrize("build", GRAPHS, ids=lambda f: f.__name__)
def test_emulated_kernel_matches_the_reference(build, unit, lanes):
    """Dot pairs 16 lanes wide (zmm), 8 and 4 (the ymm / xmm forms a narrower profile
    gets), and AMX blocks."""
    *_, got, expected, compiled = _run(build, unit, lanes=lanes)
    _close(got, expected)
    if lanes:
        assert {k.info.extra["bf16_lanes"] for k in compiled.plan.kernels
                if k is not None and k.info.extra.get("bf16_unit")} == {lanes}


def test_the_kernel_computes_bf16_not_f32():
    """The comparison above can tell: an f32 product differs from the bf16 reference by
    far more than the bound (so a kernel skipping the rounding would fail)."""
    _, (x,), weights, got, expected, _ = _run(linear_gelu, "emulated")
    f32 = x @ weights["w"].T
    bf16 = round_bf16(x) @ round_bf16(weights["w"]).T
    assert np.linalg.norm(f32 - bf16) > 1e3 * NORM_RTOL * np.linalg.norm(bf16)
    _close(got, expected)


def test_weights_are_packed_once_at_bind_time_at_half_the_bytes():
    b = GraphBuilder("g")
    linear_scale_residual(b)
    graph = b.build()
    weights = {n: data(v.shape, seed=7) for n, v in graph.source_weights().items()}
    with emulation_for_tests("emulated"):
        compiled = compile_graph(graph, LLVM)
    (k,) = [k for k in compiled.plan.kernels if k is not None and k.info.extra.get("bf16_unit")]
    assert k.packed_bytes == 0
    compiled.bind(weights)  # packs, before any call
    assert k.packed_bytes > 0
    packed = k.packed_weight(compiled.plan.weights["w"])
    assert packed is k.packed_weight(compiled.plan.weights["w"])  # cached, not re-packed
    # [K=130 -> 130, N=100 -> 128] bf16 against 130 x 100 f32: about half (N padding aside)
    assert packed.nbytes == 130 * 128 * 2 and k.packed_bytes == packed.nbytes
    np.testing.assert_array_equal(packed.reshape(1, 65, 128, 2), pack_b(weights["w"], DOT_LAYOUT))
    assert packed.nbytes < 0.65 * weights["w"].nbytes


def test_activations_are_packed_on_every_call():
    graph, inputs, weights, got, expected, compiled = _run(batched_activations, "emulated")
    other = [data(v.shape, seed=50 + i) for i, v in enumerate(graph.inputs)]
    with emulation_for_tests("emulated"):
        again = compiled(*other)
    _close(again, run_graph(graph, other, weights))


def test_vnni_packing_is_pairs_along_k():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((2, 67, 45)).astype(np.float32)
    for layout in (DOT_LAYOUT, AMX_LAYOUT):
        packed = pack_b(w, layout)
        kp, np_ = layout.kp(67), layout.np_(45)
        assert packed.shape == (2, kp // 2, np_, 2) and packed.dtype == np.uint16
        bits = bf16_bits(w)
        assert packed[1, 5, 7, 0] == bits[1, 10, 7] and packed[1, 5, 7, 1] == bits[1, 11, 7]
        # zero padding: k = 67 (the odd half of pair 33) and beyond, columns 45 and beyond
        assert not packed[:, 33, :, 1].any() and not packed[:, 34:].any()
        assert not packed[:, :, 45:].any()
        np.testing.assert_array_equal(unpack_b(packed, 67, 45), round_bf16(w))


# ---- nothing changes for users on CPUs without bf16 units ----------------------------------


def test_without_the_hook_bf16_products_need_the_cpus_units():
    """Here (no units): the product runs on the reference kernel and a bf16 profile is
    refused, as before this kernel existed. On a CPU with units: the real unit's kernel."""
    b = GraphBuilder("g")
    linear_gelu(b)
    graph = b.build()
    weights = {n: data(v.shape, seed=1) for n, v in graph.source_weights().items()}
    x = data(graph.inputs[0].shape)
    compiled = compile_graph(graph, LLVM, weights=weights)
    (k,) = [k for k in compiled.plan.kernels if k is not None]
    units = _units_here()
    if any(units.values()):
        unit = "amx" if units["amx"] else "avx512bf16"
        assert k.info.kind == f"llvm.gemm.{unit}"
        _close(compiled(x), run_graph(graph, [x], weights))
        return
    assert k.info.kind == "reference.gemm" and "no bf16 matrix unit" in k.info.extra["reason"]
    np.testing.assert_array_equal(compiled(x)[0], run_graph(graph, [x], weights)[0])
    with pytest.raises(ProfileError, match="precision bf16 needs a CPU with AVX512-BF16"):
        compile_graph(graph, LLVM.replace(precision="bf16"), weights=weights)


def test_a_kernel_for_a_unit_this_cpu_lacks_refuses_to_run(monkeypatch):
    import rlx.backends.llvm.target as target

    have = target.host_features() - {"amx-bf16", "amx-tile"}  # as if this CPU had no AMX
    monkeypatch.setattr(target, "host_features", lambda: set(have))
    b = GraphBuilder("g")
    relu_tanh(b)
    graph = b.build()
    weights = {n: data(v.shape, seed=1) for n, v in graph.source_weights().items()}
    compiled = compile_graph(graph, LLVM.replace(device="cpu-amx"), weights=weights)
    assert [k.info.extra.get("bf16_unit") for k in compiled.plan.kernels if k] == ["amx"]
    with pytest.raises(RlxError, match="this CPU lacks"):  # not SIGILL
        compiled(data((33, 64)))


# ---- cross-compiled: the instructions the real units execute -------------------------------


def _asm(device, cpu, bits=None):
    b = GraphBuilder("g")
    linear_gelu(b)
    graph = b.build()
    weights = {n: np.ones(v.shape, np.float32) for n, v in graph.source_weights().items()}
    compiled = compile_graph(graph, LLVM.replace(device=device, vector_bits=bits),
                             weights=weights)  # compiled for that CPU, never run
    (k,) = [k for k in compiled.plan.kernels if k is not None and k.info.extra.get("bf16_unit")]
    return assembly(k.info.source, target_for(device, bits, cpu=cpu)), k.info.extra["bf16_unit"]


@pytest.mark.parametrize("cpu", ["sapphirerapids", "emeraldrapids", "znver4", "znver5"])
@pytest.mark.parametrize("bits", [None, 256], ids=["default", "256"])
def test_avx512_bf16_path_emits_vdpbf16ps(cpu, bits):
    """zmm dot products at the default width; the ymm form (AVX512-VL) and no zmm when
    the profile asks for 256-bit vectors."""
    asm, unit = _asm("cpu-avx512-bf16", cpu, bits)
    assert unit == "avx512bf16"
    reg = "ymm" if bits == 256 else "zmm"
    assert re.search(rf"\tvdpbf16ps\s[^\n]*%{reg}", asm), f"no vdpbf16ps on {reg}"
    if bits == 256:
        assert "%zmm" not in asm
    assert "tdpbf16ps" not in asm and "ldtilecfg" not in asm


@pytest.mark.parametrize("cpu", ["sapphirerapids", "emeraldrapids"])
def test_amx_path_emits_tile_instructions(cpu):
    asm, unit = _asm("cpu-amx", cpu)
    assert unit == "amx"
    for insn in ("ldtilecfg", "tilezero", "tileloadd", "tdpbf16ps", "tilestored",
                 "tilerelease"):
        assert re.search(rf"\t{insn}\s", asm), f"no {insn}"
    assert len(re.findall(r"\ttdpbf16ps\s", asm)) >= 4  # 2 x 2 accumulator tiles


# ---- the real instructions, where the CPU has them -----------------------------------------


@pytest.mark.parametrize("unit,flag", [("avx512bf16", "avx512_bf16"), ("amx", "amx_bf16")])
@pytest.mark.parametrize("build", GRAPHS, ids=lambda f: f.__name__)
def test_real_unit_matches_the_reference(build, unit, flag):
    if not _units_here()[unit]:
        pytest.skip(f"CPU lacks {flag}")
    *_, got, expected, _ = _run(build, unit)
    _close(got, expected)


# ---- end to end: the profile's passes mark the products, the kernels compute them ---------


def vit_block(b):
    """Patch embedding (a convolution lowered to a GEMM) and one pre-norm transformer block:
    linear layers with bias / GELU / residual epilogues, attention between them."""
    img = b.input("img", (1, 3, 32, 32))
    x = b.conv2d(img, b.weight("patch.w", (48, 3, 4, 4)), b.weight("patch.b", (48,)), stride=4)
    x = b.reshape(b.transpose(b.reshape(x, shape=(1, 48, 64)), perm=(0, 2, 1)), shape=(64, 48))
    h = b.layer_norm(x, b.weight("ln1.w", (48,)), b.weight("ln1.b", (48,)), eps=1e-6)
    q, k, v = (b.reshape(b.linear(h, b.weight(f"{n}.w", (48, 48)), b.weight(f"{n}.b", (48,))),
                         shape=(1, 64, 48)) for n in "qkv")
    a = b.reshape(b.attention(q, k, v, scale=48 ** -0.5), shape=(64, 48))
    x = b.add(x, b.linear(a, b.weight("proj.w", (48, 48)), b.weight("proj.b", (48,))))
    h = b.layer_norm(x, b.weight("ln2.w", (48,)), b.weight("ln2.b", (48,)), eps=1e-6)
    h = b.gelu(b.linear(h, b.weight("fc1.w", (96, 48)), b.weight("fc1.b", (96,))))
    b.output(b.add(x, b.linear(h, b.weight("fc2.w", (48, 96)), b.weight("fc2.b", (48,)))))


def test_bf16_profile_end_to_end_matches_the_reference(monkeypatch):
    """The bf16 profile's passes (lowering, the precision pass with its size floor at 0,
    fusion) on the llvm backend with emulated dot pairs, against the same profile on the
    reference interpreter: every GEMM group compiles to a bf16 kernel (linear layers and
    the lowered convolution), attention falls back to the reference kernel (no bf16
    attention kernel yet)."""
    import dataclasses

    import rlx.runtime.compiler as compiler

    base = compiler.pass_options
    monkeypatch.setattr(compiler, "pass_options", lambda profile, backend: dataclasses.replace(
        base(profile, backend), bf16_min_macs=0))
    monkeypatch.setattr(compiler, "check_device", lambda profile: None)  # no units here
    b = GraphBuilder("vit")
    vit_block(b)
    graph = b.build()
    weights = {n: data(v.shape, seed=200 + i)
               for i, (n, v) in enumerate(graph.source_weights().items())}
    img = data((1, 3, 32, 32), seed=9)
    ref = compile_graph(graph, PRESETS["reference"].replace(precision="bf16", name="ref-bf16"),
                        weights=weights)
    f32 = compile_graph(graph, PRESETS["reference"], weights=weights)
    with emulation_for_tests("emulated"):
        compiled = compile_graph(graph, LLVM.replace(precision="bf16", name="llvm-bf16-e2e"),
                                 weights=weights)
        got = compiled(img)
    kinds = [(k.info.kind, k.info.extra.get("bf16_unit")) for k in compiled.plan.kernels if k]
    # patch embedding, q, k, v, proj, fc1, fc2
    assert kinds.count(("llvm.gemm.emulated", "emulated")) == 7, kinds
    assert ("reference.attention", None) in kinds
    # the linear layers' B is a weight: packed once and kept (the lowered convolution is
    # W @ im2col(x): its B is an activation, packed per call)
    bf16 = [k for k in compiled.plan.kernels if k is not None and k.info.extra.get("bf16_unit")]
    assert [k.b_is_weight for k in bf16] == [False] + [True] * 6
    bf16 = bf16[1:]
    assert all(k.packed_bytes for k in bf16)
    with emulation_for_tests("emulated"):
        packed = [k._packed_b[2] for k in bf16]
        compiled(img)
        assert all(k._packed_b[2] is p for k, p in zip(bf16, packed))
    expected = ref(img)
    _close(got, expected)
    # and the bf16 semantics are really in play: f32 differs by far more than the bound
    diff = np.linalg.norm(f32(img)[0] - expected[0]) / np.linalg.norm(expected[0])
    assert diff > 1e2 * NORM_RTOL, diff


def test_a_cached_plan_restores_the_bf16_kernel_and_its_packing(tmp_path):
    b = GraphBuilder("g")
    linear_gelu(b)
    graph = b.build()
    weights = {n: data(v.shape, seed=3) for n, v in graph.source_weights().items()}
    x = data(graph.inputs[0].shape, seed=4)
    prof = LLVM.replace(cache_dir=str(tmp_path / "cache"), name="llvm-bf16-cached")
    with emulation_for_tests("emulated"):
        first = compile_graph(graph, prof, weights=weights)
        again = compile_graph(graph, prof, weights=weights)
        outs = first(x), again(x)
    assert again.report.plan_from_cache and not first.report.plan_from_cache
    (k,) = [k for k in again.plan.kernels if k is not None]
    assert k.info.extra["bf16_unit"] == "emulated" and k.packed_bytes > 0
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    _close(outs[1], run_graph(graph, [x], weights))
    # the same cache without the hook: the CPU's own unit, or here the reference kernel
    plain = compile_graph(graph, prof, weights=weights)
    (k,) = [k for k in plain.plan.kernels if k is not None]
    assert k.info.extra.get("bf16_unit") != "emulated"
    _close(plain(x), run_graph(graph, [x], weights))



@pytest.mark.parametrize("unit", ["emulated", "amx-emulated"])
@pytest.mark.parametrize("k_dim", [29, 64, 75])
def test_generated_packing_of_an_activation_equals_numpy_packing(unit, k_dim):
    """A B the graph computes is packed per call by a generated parallel kernel: the same
    words as `bf16pack.pack_b` (odd K, K padded to 32 for AMX, N padded, NaN kept)."""
    def build(b):
        b.output(_bf16(b, b.input("a", (3, 20, k_dim)), b.input("w", (3, k_dim, 50))))
    *_, compiled = _run(build, unit)
    (k,) = [k for k in compiled.plan.kernels if k is not None]
    assert not k.b_is_weight and k.packer is not None
    w = data((3, k_dim, 50), seed=5)
    w[1, 3, 7] = np.nan
    got = k.packed_weight(w).reshape(3, k.plan.kp // 2, k.plan.np_, 2)
    want = pack_b(w, k.plan.layout)
    np.testing.assert_array_equal(got, want)
    assert np.isnan(unpack_b(got, k_dim, 50)[1, 3, 7])
