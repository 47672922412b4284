"""The vector width is the device profile's decision (issue 13), on Intel and AMD alike.

LLVM's tuning for Intel server CPUs (and the x86-64-v4 level) prefers 256-bit
vectors, for AMD Zen 4/5 512-bit; the target states the width the profile
chose in its feature string, so the same profile gives the same width on
both. AVX-512 code cannot run on every CI machine, so it is cross-compiled
for named CPUs (sapphirerapids, emeraldrapids, znver4, znver5) and its
assembly read: nothing here executes AVX-512. Narrower widths than the host's
widest do run here, against the reference interpreter.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from rlx.backends.common.kernel_store import KernelCache
from rlx.backends.llvm.jit import cache_key
from rlx.backends.llvm.target import (assembly, host_features, target_for, vector_bits_for,
                                      widest_vector)
from rlx.backends.llvm.vecir import vector_config
from rlx.errors import ProfileError
from rlx.ir import GraphBuilder
from rlx.runtime import compile_graph
from rlx.runtime.profile import CompileProfile, load_profile_file
from tests.backends.test_llvm_ops import LLVM
from tests.backends.test_numba_fused import attention_graph, norms
from tests.backends.test_numba_ops import check

REG = {512: "zmm", 256: "ymm", 128: "xmm"}


def kernels_graph(b):
    """One kernel of each loop family: elementwise with erf and exp, LayerNorm, softmax,
    blocked attention (explicit 16/8-lane vectors), a batch of small products."""
    x = b.input("x", (64, 768))
    b.output(b.gelu(b.add(x, b.weight("bias", (768,))), approximate="none"),
             b.exp(b.mul(x, 0.5)))
    b.output(b.layer_norm(x, b.weight("g", (768,)), b.weight("beta", (768,)), eps=1e-6))
    b.output(b.softmax(b.mul(x, 0.125), axis=-1))
    q, k, v = (b.input(n, (4, 64, 64)) for n in "qkv")
    b.output(b.attention(q, k, v, scale=0.125))
    b.output(b.matmul(b.input("a", (12, 14, 64)), b.input("w", (12, 64, 14))))
    return {}


def _compiled_kernels(bits):
    b = GraphBuilder("widths")
    kernels_graph(b)
    graph = b.build()
    weights = {n: np.ones(v.shape, np.float32) for n, v in graph.source_weights().items()}
    prof = LLVM.replace(device="cpu-avx512", vector_bits=bits, name=f"llvm-512-{bits}")
    compiled = compile_graph(graph, prof, weights=weights)  # compiled here, never run
    return [k for k in compiled.plan.kernels if k is not None and k.info.source]


def test_default_width_is_the_devices_widest():
    assert CompileProfile().vector_bits is None
    assert target_for("cpu").vector_bits == widest_vector(host_features())
    assert [target_for(d).vector_bits for d in ("cpu-generic", "cpu-avx2", "cpu-avx512")] == [
        128, 256, 512]
    vc = vector_config(target_for("cpu-avx512"))
    assert (vc.lanes, vc.regs) == (16, 32)
    vc = vector_config(target_for("cpu-avx512", 256))  # AVX512-VL: 32 ymm registers
    assert (vc.lanes, vc.regs) == (8, 32)
    assert vector_config(target_for("cpu-avx2")).lanes == 8


def test_width_is_in_the_feature_string_and_the_cache_key(tmp_path):
    wide, half = target_for("cpu-avx512"), target_for("cpu-avx512", 256)
    assert "-prefer-256-bit" in wide.features.split(",")
    assert "+prefer-256-bit" in half.features.split(",")
    host = target_for("cpu")
    assert host.features.endswith({512: "-prefer-256-bit", 256: "+prefer-256-bit",
                                   128: "+prefer-256-bit"}[host.vector_bits])
    cache = KernelCache(tmp_path / "k")
    assert cache_key("; ir", wide, cache) != cache_key("; ir", half, cache)


def test_a_width_the_device_lacks_is_a_profile_error(tmp_path):
    with pytest.raises(ProfileError, match="device cpu-avx2 has at most 256-bit"):
        vector_bits_for("cpu-avx2", 512)
    with pytest.raises(ProfileError, match="vector_bits must be 128, 256 or 512"):
        CompileProfile(vector_bits=384)
    b = GraphBuilder("g")
    b.output(b.exp(b.input("x", (4,))))
    with pytest.raises(ProfileError, match="at most 256-bit vectors"):
        compile_graph(b.build(), LLVM.replace(device="cpu-avx2", vector_bits=512), weights={})
    path = tmp_path / "narrow.toml"
    path.write_text('base = "llvm"\nvector_bits = 256\n')
    assert load_profile_file(path).vector_bits == 256


@pytest.mark.parametrize("cpu", ["sapphirerapids", "emeraldrapids", "znver4", "znver5"])
@pytest.mark.parametrize("bits", [None, 256], ids=["default", "256"])
def test_avx512_cpus_get_the_width_the_profile_asked_for(cpu, bits):
    """Cross-compiled for Intel and AMD AVX-512 CPUs: at the default width every loop
    family is zmm code; asked for 256 bits, ymm code and no zmm anywhere."""
    want = bits or 512
    target = target_for("cpu-avx512", bits, cpu=cpu)
    kernels = _compiled_kernels(bits)
    kinds = sorted({k.info.kind for k in kernels})
    assert {"llvm.elementwise", "llvm.norm", "llvm.attention", "llvm.matmul"} <= set(kinds)
    for kernel in kernels:
        asm = assembly(kernel.info.source, target)
        assert re.search(rf"\tv\w+ps\s[^\n]*%{REG[want]}", asm), (
            f"{kernel.info.kind} for {cpu} without packed {REG[want]} arithmetic")
        if want == 256:
            assert "%zmm" not in asm, f"{kernel.info.kind}: zmm although 256 bits were asked"


@pytest.mark.parametrize("bits", [128, 256])
def test_narrower_widths_run_and_match_the_reference(bits):
    # every explicit-SIMD kernel (attention, small products, skinny products) and the
    # vectorized loops at a width below the host's widest, executed here
    prof = LLVM.replace(vector_bits=bits, name=f"llvm-{bits}")
    check(norms, prof)
    check(attention_graph(), prof)

    def products(b):
        b.output(b.matmul(b.input("a", (12, 13, 20)), b.input("w", (12, 20, 40))),
                 b.linear(b.input("x", (5, 300)), b.weight("w2", (70, 300))))
        return {}
    compiled = check(products, prof, rtol=1e-4, atol=1e-4)
    assert not any(k.calls_blas for k in compiled.plan.kernels if k is not None)
    assert {k.info.extra["vector_bits"] for k in compiled.plan.kernels if k is not None} == {bits}
