"""Every fused kernel kind on the numba backend equals the reference interpreter.

Covers the loop-nest shapes the code generator distinguishes: elementwise
groups with broadcast, transposed and sliced operands and several outputs;
GEMM epilogues (bias, GELU, scale, residual through a reshape, rel-pos bias of
decomposed attention); norms in both layouts (reduced axis innermost = "row",
channel axis of NCHW = "column") with prologue and epilogue; blocked attention
with a block that does not divide the query count; the native GEMM; one thread
and fastmath profiles. Plus: a compiled numba plan rejects bad inputs with a
clear error, and equal kernels are compiled once.
"""

from __future__ import annotations

import numpy as np
import pytest

from rlx.errors import InputError
from rlx.ir import GraphBuilder
from rlx.runtime import compile_graph
from tests.backends.test_numba_ops import NUMBA, check


GEMM_ATOL = 3e-5


def _kinds(compiled):
    return sorted(k.info.kind for k in compiled.plan.kernels if k is not None)


def elementwise_group(b):
    x = b.input("x", (3, 20, 33))
    t = b.input("t", (3, 33, 20))
    bias = b.input("bias", (33,))
    s = b.input("s", (3, 24, 33))
    u = b.add(b.mul(x, b.transpose(t, perm=(0, 2, 1))), bias)
    v = b.sub(b.gelu(u), b.slice(s, starts=(0, 2, 0), ends=(3, 22, 33)))
    b.output(v, b.tanh(u))
    return {}


def mlp_with_residual(b):
    x = b.input("x", (1, 6, 6, 40))
    w1, b1 = b.weight("fc1.weight", (96, 40)), b.weight("fc1.bias", (96,))
    w2, b2 = b.weight("fc2.weight", (40, 96)), b.weight("fc2.bias", (40,))
    h = b.gelu(b.linear(x, w1, b1))
    y = b.mul(b.linear(h, w2, b2), 0.5)
    b.output(b.add(x, y))
    return {}


def norms(b):
    x = b.input("x", (2, 7, 64))
    r = b.input("r", (2, 7, 64))
    w, bias = b.weight("w", (64,)), b.weight("b", (64,))
    y1 = b.gelu(b.layer_norm(b.add(x, r), w, bias, eps=1e-6))
    c = b.input("c", (1, 16, 9, 11))
    w2, b2 = b.weight("w2", (16,)), b.weight("b2", (16,))
    y2 = b.gelu(b.layer_norm(c, w2, b2, axis=1, eps=1e-6))
    s = b.input("s", (2, 5, 30))
    y3 = b.softmax(b.mul(s, 0.3), axis=-1)
    y4 = b.softmax(b.add(s, 1.0), axis=1)
    b.output(y1, y2, y3, y4)
    return {}


def attention_graph(nq=23, nk=20, kh=4, kw=5):
    def build(b):
        q = b.input("q", (4, nq, 16))
        k = b.input("k", (4, nk, 16))
        v = b.input("v", (4, nk, 8))
        rh = b.input("rh", (4, nq, kh))
        rw = b.input("rw", (4, nq, kw))
        b.output(b.attention(q, k, v, rh, rw, scale=0.25), b.attention(q, k, v, scale=0.25))
        return {}
    return build


def test_elementwise_group_with_views_and_two_outputs():
    compiled = check(elementwise_group)
    assert _kinds(compiled) == ["numba.elementwise"]
    assert len(compiled.graph.nodes) == 1  # transpose and slice folded into the indexing


def test_gemm_epilogue_with_residual_through_reshape():
    # outputs reach |y| ~ 30 (N(0,1) weights, K = 96): BLAS blocking changes the summation
    # order, so the absolute bound scales with the magnitude (1e-6 relative to max |y|)
    compiled = check(mlp_with_residual, atol=GEMM_ATOL)
    assert _kinds(compiled) == ["numba.gemm", "numba.gemm"]


def test_norm_kernels_row_and_column_layouts():
    compiled = check(norms)
    assert _kinds(compiled) == ["numba.norm"] * 4


def test_decomposed_attention_fuses_rel_pos_into_the_gemm_and_softmax():
    prof = NUMBA.replace(attention="decomposed", name="numba-decomposed")
    compiled = check(attention_graph(), prof)
    assert "numba.attention" not in _kinds(compiled)
    assert "numba.norm" in _kinds(compiled) and "numba.gemm" in _kinds(compiled)


@pytest.mark.parametrize("block", [5, 256])
def test_blocked_attention(block):
    prof = NUMBA.replace(attention_block=block, name=f"numba-block{block}")
    compiled = check(attention_graph(), prof)
    assert _kinds(compiled) == ["numba.attention", "numba.attention"]
    blocks = {k.block for k in compiled.plan.kernels if k is not None}
    assert blocks == {min(block, 23)}  # the profile's block size (23 query rows here)


def test_native_gemm():
    prof = NUMBA.replace(gemm="native", name="numba-native")
    check(mlp_with_residual, prof, rtol=1e-4, atol=1e-5)  # different summation order than BLAS


def test_single_thread_profile():
    check(norms, NUMBA.replace(threads=1, name="numba-1t"))
    check(mlp_with_residual, NUMBA.replace(threads=1, name="numba-1t"), atol=GEMM_ATOL)


def test_fastmath_profile_within_looser_bounds():
    # fastmath lets LLVM reassociate reductions (LayerNorm sums): last-bit differences.
    prof = NUMBA.replace(fastmath=True, name="numba-fast")
    check(norms, prof, rtol=1e-4, atol=1e-5)
    check(mlp_with_residual, prof, rtol=1e-4, atol=1e-5)


def test_large_elementwise_runs_split_over_threads():
    def build(b):
        x = b.input("x", (256, 1024))
        b.output(b.gelu(b.mul(x, 1.5)))
        return {}
    check(build)


def test_compiled_numba_plan_rejects_bad_inputs():
    b = GraphBuilder("g")
    x = b.input("x", (2, 3))
    b.output(b.exp(x))
    compiled = compile_graph(b.build(), NUMBA, weights={})
    with pytest.raises(InputError, match=r"%x: expected f32\[2,3\], got .*\[3,2\]"):
        compiled(np.zeros((3, 2), np.float32))
    with pytest.raises(InputError, match=r"%x: expected f32\[2,3\], got float64"):
        compiled(np.zeros((2, 3), np.float64))
    with pytest.raises(InputError, match="takes 1 inputs"):
        compiled()
    np.testing.assert_allclose(compiled(np.zeros((2, 3), np.float32))[0], 1.0)


def test_equal_kernels_share_one_compiled_function():
    def build(b):
        for i in range(3):  # three equal blocks on different data and shapes
            x = b.input(f"x{i}", (4 + i, 32))
            b.output(b.layer_norm(b.add(x, b.weight(f"b{i}", (32,))), eps=1e-5))
        return {}
    compiled = check(build)
    fns = {id(k.fn) for k in compiled.plan.kernels if k is not None}
    assert len(fns) == 1 and len(compiled.plan.kernels) == 3


def test_dump_kernels_shows_generated_source():
    b = GraphBuilder("g")
    x = b.input("x", (8, 16))
    b.output(b.gelu(b.add(x, 1.0)))
    text = compile_graph(b.build(), NUMBA).dump("kernels")
    assert "@njit(" in text and "def kernel(task_lo, task_hi" in text and "erf32(" in text


def test_device_other_than_the_numba_process_cpu_is_a_clear_error():
    from rlx.errors import ProfileError

    b = GraphBuilder("g")
    b.output(b.exp(b.input("x", (2, 3))))
    with pytest.raises(ProfileError, match="NUMBA_CPU_NAME=haswell"):
        compile_graph(b.build(), NUMBA.replace(device="cpu-avx2"))


def test_row_blocked_gemm_epilogue_spans_several_blocks(monkeypatch):
    # 2200 rows on 2 threads: 1100 rows each, i.e. more than one GEMM_BLOCK_ROWS block.
    from rlx.backends.numba import kernels

    monkeypatch.setattr(kernels, "GEMM_BLOCK_ROWS", 256)

    def build(b):
        x = b.input("x", (2200, 24))
        r = b.input("r", (2200, 40))
        y = b.gelu(b.linear(x, b.weight("w", (40, 24)), b.weight("b", (40,))))
        b.output(b.add(r, y))
        return {}
    compiled = check(build, atol=GEMM_ATOL)
    (kernel,) = [k for k in compiled.plan.kernels if k is not None]
    assert kernel.tasks_per_row is not None  # the blocked path ran


def test_gemm_epilogue_with_a_reshaped_and_transposed_residual():
    # The SAM decoder's image-to-token update: tokens^T (from NCHW) + out_proj(x).
    def build(b):
        img = b.input("img", (1, 16, 4, 5))
        x = b.input("x", (20, 8))
        t = b.transpose(b.reshape(img, shape=(1, 16, 20)), perm=(0, 2, 1))
        y = b.linear(x, b.weight("w", (16, 8)), b.weight("b", (16,)))
        b.output(b.add(t, b.reshape(y, shape=(1, 20, 16))))
        return {}
    compiled = check(build)
    assert _kinds(compiled) == ["numba.gemm"]


def test_weights_bound_as_strided_views_are_accepted():
    b = GraphBuilder("g")
    x = b.input("x", (4, 6))
    b.output(b.add(x, b.weight("w", (4, 6))))
    w = np.arange(48, dtype=np.float32).reshape(6, 8)[:, :4].T  # non-contiguous
    compiled = compile_graph(b.build(), NUMBA, weights={"w": w})
    xs = np.ones((4, 6), np.float32)
    np.testing.assert_array_equal(compiled(xs)[0], xs + w)


def test_attention_on_packed_qkv_views():
    from tests.passes.test_fuse import _mha

    def build(b):
        q, k, v = _mha(b, tokens=37, heads=3, dim=8)
        rh = b.input("rh", (3, 37, 1))
        rw = b.input("rw", (3, 37, 37))
        b.output(b.attention(q, k, v, rh, rw, scale=0.3), b.attention(q, k, v, scale=0.3))
        return {}
    compiled = check(build, NUMBA.replace(attention_block=16, name="numba-b16"))
    assert compiled.graph.op_counts() == {"fused.attention": 2}


def test_attention_with_split_batch_operands():
    def build(b):
        x = b.input("x", (4, 9, 3, 8))  # [windows, tokens, heads, dim]
        q = b.reshape(b.transpose(x, perm=(0, 2, 1, 3)), shape=(12, 9, 8))
        k = b.reshape(b.transpose(b.input("k", (4, 9, 3, 8)), perm=(0, 2, 1, 3)), shape=(12, 9, 8))
        rh = b.input("rh", (12, 9, 3))
        rw = b.input("rw", (12, 9, 3))
        b.output(b.attention(q, k, q, rh, rw, scale=0.4))
        return {}
    compiled = check(build)
    assert compiled.graph.op_counts() == {"fused.attention": 1}


def test_nested_task_splitting_runs_inline_instead_of_deadlocking():
    from rlx.backends.common import threads

    threads.configure(2)
    seen = []

    def inner(lo, hi):
        seen.append((lo, hi))

    def outer(lo, hi):
        threads.run_tasks(inner, 4, (), work=1 << 30, nthreads=2)

    threads.run_tasks(outer, 2, (), work=1 << 30, nthreads=2)
    assert sorted(seen) == [(0, 2), (0, 4), (2, 4)]  # main thread split; the worker ran inline


def test_gemm_operands_read_through_index_maps():
    from tests.backends.test_llvm_fused import gemm_views

    compiled = check(gemm_views, rtol=1e-5, atol=1e-5)
    assert _kinds(compiled) == ["numba.gemm"] * 4


def test_pad_split_over_threads():
    from tests.backends.test_llvm_fused import big_pads

    compiled = check(big_pads)
    assert _kinds(compiled) == ["numba.host.pad"] * 2
