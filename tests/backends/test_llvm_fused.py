"""Every fused kernel kind on the llvm backend equals the reference interpreter.

The graphs are the numba backend's (`tests.backends.test_numba_fused`), so
both backends are held to the same cases: elementwise groups with broadcast,
transposed and sliced operands and two outputs; GEMM epilogues (bias, GELU,
scale, residual through a reshape, a transposed residual); norms in both
layouts with prologue and epilogue; blocked attention with blocks that do and
do not divide the query count, with and without rel-pos; the decomposed
attention path. Plus what is specific to the generated code: batched and
broadcast GEMMs with every transpose combination, GEMM row blocks smaller
than a thread's share (epilogue applied block by block), the native GEMM
(with tails in both dims), every device level, and equal kernels compiled once.
"""

from __future__ import annotations

import numpy as np
import pytest

from rlx.errors import InputError
from rlx.ir import GraphBuilder
from rlx.runtime import compile_graph
from tests.backends.test_llvm_ops import LLVM, _kinds
from tests.backends.test_numba_fused import (GEMM_ATOL, attention_graph, elementwise_group,
                                             mlp_with_residual, norms)
from tests.backends.test_numba_ops import check


def test_elementwise_group_with_views_and_two_outputs():
    compiled = check(elementwise_group, LLVM)
    assert _kinds(compiled) == ["llvm.elementwise"]
    assert len(compiled.graph.nodes) == 1


def test_gemm_epilogue_with_residual_through_reshape():
    compiled = check(mlp_with_residual, LLVM, atol=GEMM_ATOL)
    assert _kinds(compiled) == ["llvm.gemm", "llvm.gemm"]


def test_norm_kernels_row_and_column_layouts():
    compiled = check(norms, LLVM)
    assert _kinds(compiled) == ["llvm.norm"] * 4


def test_norms_with_a_large_mean_and_wide_rows():
    # float64 statistics: a mean 300x the spread must not cost float32 precision
    def build(b):
        x = b.input("x", (5, 3000))
        c = b.input("c", (2, 40, 3, 300))
        b.output(b.layer_norm(b.add(x, 300.0), eps=1e-6), b.layer_norm(b.add(c, 300.0), axis=1),
                 b.softmax(b.mul(x, 20.0)), b.softmax(b.mul(c, 20.0), axis=1))
        return {}
    check(build, LLVM, rtol=1e-4, atol=2e-5)


def test_decomposed_attention_fuses_rel_pos_into_the_gemm_and_softmax():
    prof = LLVM.replace(attention="decomposed", name="llvm-decomposed")
    compiled = check(attention_graph(), prof)
    assert "llvm.attention" not in _kinds(compiled)
    assert "llvm.norm" in _kinds(compiled) and "llvm.gemm" in _kinds(compiled)


@pytest.mark.parametrize("block", [1, 5, 23, 256])
def test_blocked_attention(block):
    prof = LLVM.replace(attention_block=block, name=f"llvm-block{block}")
    compiled = check(attention_graph(), prof)
    assert _kinds(compiled) == ["llvm.attention", "llvm.attention"]


def test_blocked_attention_with_long_key_rows():
    # 64 x 70 keys (4480, not a multiple of any vector width) and 3 blocks per head
    prof = LLVM.replace(attention_block=32, name="llvm-block32")
    check(attention_graph(nq=70, nk=64 * 70, kh=64, kw=70), prof, atol=5e-6)


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize("native", [False, True], ids=["blas", "native"])
def test_batched_broadcast_gemm_every_transpose(ta, tb, native):
    def build(b):
        a = b.input("a", (2, 1, 37, 19) if not ta else (2, 1, 19, 37))
        w = b.input("w", (3, 19, 45) if not tb else (3, 45, 19))
        w2 = b.input("w2", (19, 45) if not tb else (45, 19))  # shared by the batch
        bias = b.input("bias", (45,))
        b.output(b.gelu(b.add(b.matmul(a, w, transpose_a=ta, transpose_b=tb), bias)),
                 b.matmul(a, w2, transpose_a=ta, transpose_b=tb))
        return {}
    prof = LLVM.replace(gemm="native" if native else "blas", name="llvm-g")
    compiled = check(build, prof, rtol=1e-4, atol=1e-5)
    assert _kinds(compiled) == ["llvm.gemm", "llvm.matmul"]


@pytest.mark.parametrize("native", [False, True], ids=["blas", "native"])
def test_gemm_epilogue_over_several_row_blocks_per_thread(native, monkeypatch):
    from rlx.backends.llvm import gemm

    monkeypatch.setattr(gemm, "BLOCK_ROWS", 64)  # 1100 rows on 2 threads: 16 blocks of 69

    def build(b):
        x = b.input("x", (1100, 24))
        r = b.input("r", (1100, 70))
        y = b.gelu(b.linear(x, b.weight("w", (70, 24)), b.weight("b", (70,))))
        b.output(b.add(r, y))
        return {}
    prof = LLVM.replace(gemm="native" if native else "blas", name="llvm-rows")
    compiled = check(build, prof, rtol=1e-4, atol=GEMM_ATOL)
    (kernel,) = [k for k in compiled.plan.kernels if k is not None]
    assert kernel.n_tasks == 16  # the last block is partial (1100 = 15 * 69 + 65)


@pytest.mark.parametrize("m, n, k, transpose_w", [
    (7, 2048, 256, True), (7, 256, 2048, True), (5, 300, 4096, False), (63, 200, 96, True),
    (1, 1200, 1024, False)])
def test_few_row_gemms_split_by_columns_with_their_epilogue(m, n, k, transpose_w):
    """Few rows, much B: the threads take blocks of columns (each packs only its part of
    B); the epilogue runs per row on each block, incl. a narrower last block."""
    from rlx.backends.common.spec import describe
    from rlx.backends.llvm import gemm

    def build(b):
        x = b.input("x", (1, m, k))
        r = b.input("r", (1, m, n))
        if transpose_w:
            y = b.linear(x, b.weight("w", (n, k)), b.weight("b", (n,)))
        else:
            y = b.add(b.matmul(x, b.weight("w", (k, n))), b.weight("b", (n,)))
        b.output(b.add(r, b.gelu(y)), b.mul(y, 0.5))
        return {}
    compiled = check(build, LLVM, rtol=1e-4, atol=GEMM_ATOL * 4)
    node, kernel = next((nd, kn) for nd, kn in zip(compiled.graph.nodes, compiled.plan.kernels)
                        if kn is not None and kn.info.kind == "llvm.gemm")
    p = gemm.plan(describe(node), threads=2)
    assert p.col_blocks == 2 and p.row_blocks == 1 and p.col_block % gemm.COL_ALIGN == 0
    assert kernel.n_tasks == 2  # one column block per thread


@pytest.mark.parametrize("m, n, k, device", [
    (7, 2048, 256, "cpu"), (7, 256, 2048, "cpu"), (1, 33, 100, "cpu"), (8, 257, 1000, "cpu"),
    (5, 3, 17, "cpu"), (7, 300, 250, "cpu-avx2"), (3, 130, 64, "cpu-generic")])
def test_skinny_products_run_on_the_dot_product_kernel(m, n, k, device):
    """Few rows times a linear layer's [N, K] weight: no BLAS call; K tails masked, odd N,
    an A read at a row stride larger than K, a fused epilogue, every vector width."""
    from rlx.backends.common.spec import describe
    from rlx.backends.llvm import gemm, gemm_loops
    from rlx.backends.llvm.target import target_for
    from rlx.backends.llvm.vecir import vector_config

    def build(b):
        wide = b.input("wide", (1, m, k + 8))
        x = b.slice(wide, starts=(0, 0, 3), ends=(1, m, 3 + k))  # rows of stride k + 8
        y = b.linear(x, b.weight("w", (n, k)), b.weight("b", (n,)))
        b.output(b.gelu(y, approximate="none"))
        return {}
    prof = LLVM.replace(device=device, name=f"llvm-{device}")
    compiled = check(build, prof, rtol=1e-4, atol=GEMM_ATOL * 4)
    node, kernel = next((nd, kn) for nd, kn in zip(compiled.graph.nodes, compiled.plan.kernels)
                        if kn is not None and kn.info.kind == "llvm.gemm")
    vc = vector_config(target_for(device))
    assert gemm_loops.skinny_columns(gemm.plan(describe(node), threads=2), vc) > 0
    assert not kernel.calls_blas


def test_gemm_epilogue_whose_nest_is_one_flat_row():
    # a scale-only epilogue merges into a 1-D nest; it is re-split into rows of N
    def build(b):
        a = b.input("a", (300, 16))
        w = b.input("w", (16, 40))
        b.output(b.mul(b.matmul(a, w), 0.5))
        return {}
    compiled = check(build, LLVM, atol=GEMM_ATOL)
    assert _kinds(compiled) == ["llvm.gemm"]


def test_gemm_epilogue_with_a_reshaped_and_transposed_residual():
    def build(b):
        img = b.input("img", (1, 16, 4, 5))
        x = b.input("x", (20, 8))
        t = b.transpose(b.reshape(img, shape=(1, 16, 20)), perm=(0, 2, 1))
        y = b.linear(x, b.weight("w", (16, 8)), b.weight("b", (16,)))
        b.output(b.add(t, b.reshape(y, shape=(1, 20, 16))))
        return {}
    compiled = check(build, LLVM)
    assert _kinds(compiled) == ["llvm.gemm"]


def test_native_gemm_tails_in_both_dims():
    # N = 45 (one 32-wide panel + 13 columns), M = 7 (one 4-row tile + 3 rows)
    def build(b):
        a = b.input("a", (7, 300))
        w = b.input("w", (300, 45))
        b.output(b.matmul(a, w))
        return {}
    check(build, LLVM.replace(gemm="native", name="llvm-native"), rtol=1e-4, atol=1e-4)


def test_native_gemm_and_native_attention():
    prof = LLVM.replace(gemm="native", name="llvm-native")
    check(mlp_with_residual, prof, rtol=1e-4, atol=1e-5)
    compiled = check(attention_graph(), prof)
    assert _kinds(compiled) == ["llvm.attention", "llvm.attention"]


def test_single_thread_profile():
    check(norms, LLVM.replace(threads=1, name="llvm-1t"))
    check(mlp_with_residual, LLVM.replace(threads=1, name="llvm-1t"), atol=GEMM_ATOL)
    check(attention_graph(), LLVM.replace(threads=1, name="llvm-1t"))


@pytest.mark.parametrize("device", ["cpu-generic", "cpu-avx2", "cpu-avx512"])
def test_every_device_level_compiles_and_matches(device):
    from rlx.backends.llvm.target import target_for

    missing = target_for(device).missing_host_features()
    if missing:  # the only allowed skip (the code is cross-checked in test_llvm_vector_width)
        pytest.skip(f"code for {device} needs {', '.join(missing)}, which this CPU lacks")
    prof = LLVM.replace(device=device, name=f"llvm-{device}")
    check(norms, prof)
    compiled = check(elementwise_group, prof)
    (kernel,) = [k for k in compiled.plan.kernels if k is not None]
    assert kernel.info.extra["device"] == device


def test_large_elementwise_runs_split_over_threads():
    def build(b):
        x = b.input("x", (256, 1024))
        b.output(b.gelu(b.mul(x, 1.5)))
        return {}
    check(build, LLVM)


def test_compiled_llvm_plan_rejects_bad_inputs():
    b = GraphBuilder("g")
    x = b.input("x", (2, 3))
    b.output(b.exp(x))
    compiled = compile_graph(b.build(), LLVM, weights={})
    with pytest.raises(InputError, match=r"%x: expected f32\[2,3\], got .*\[3,2\]"):
        compiled(np.zeros((3, 2), np.float32))
    with pytest.raises(InputError, match=r"%x: expected f32\[2,3\], got float64"):
        compiled(np.zeros((2, 3), np.float64))
    np.testing.assert_allclose(compiled(np.zeros((2, 3), np.float32))[0], 1.0)


def test_non_contiguous_caller_inputs_are_copied_not_misread():
    b = GraphBuilder("g")
    x = b.input("x", (4, 6))
    b.output(b.mul(x, 2.0))
    compiled = compile_graph(b.build(), LLVM, weights={})
    base = np.arange(48, dtype=np.float32).reshape(8, 6)
    np.testing.assert_array_equal(compiled(base[::2])[0], base[::2] * 2)


def test_equal_kernels_share_one_compiled_function():
    def build(b):
        for i in range(3):  # three equal blocks on different data
            x = b.input(f"x{i}", (6, 32))
            b.output(b.layer_norm(b.add(x, b.weight(f"b{i}", (32,))), eps=1e-5))
        return {}
    compiled = check(build, LLVM)
    kernels = [k for k in compiled.plan.kernels if k is not None]
    assert len(kernels) == 3 and len({k.info.extra["key"] for k in kernels}) == 1
    assert len({k.fn_address for k in kernels}) == 1
    assert kernels[1].info.from_cache and kernels[2].info.from_cache  # nothing compiled again


def test_weights_bound_as_strided_views_are_accepted():
    b = GraphBuilder("g")
    x = b.input("x", (4, 6))
    b.output(b.add(x, b.weight("w", (4, 6))))
    w = np.arange(48, dtype=np.float32).reshape(6, 8)[:, :4].T  # non-contiguous
    compiled = compile_graph(b.build(), LLVM, weights={"w": w})
    xs = np.ones((4, 6), np.float32)
    np.testing.assert_array_equal(compiled(xs)[0], xs + w)


@pytest.mark.parametrize("native", [False, True], ids=["blas", "native"])
def test_attention_on_packed_qkv_views(native):
    from tests.passes.test_fuse import _mha

    def build(b):
        q, k, v = _mha(b, tokens=37, heads=3, dim=8)
        rh = b.input("rh", (3, 37, 1))
        rw = b.input("rw", (3, 37, 37))
        b.output(b.attention(q, k, v, rh, rw, scale=0.3), b.attention(q, k, v, scale=0.3))
        return {}
    prof = LLVM.replace(attention_block=16, gemm="native" if native else "blas", name="llvm-b16")
    compiled = check(build, prof)
    assert compiled.graph.op_counts() == {"fused.attention": 2}
    # the kernels read the packed projection in place, whatever the GEMM setting
    for node, k in zip(compiled.graph.nodes, compiled.plan.kernels):
        assert k.n_operand_ptrs == len(node.inputs)


def test_attention_with_split_batch_operands():
    def build(b):
        x = b.input("x", (4, 9, 3, 8))  # [windows, tokens, heads, dim]
        q = b.reshape(b.transpose(x, perm=(0, 2, 1, 3)), shape=(12, 9, 8))
        k = b.reshape(b.transpose(b.input("k", (4, 9, 3, 8)), perm=(0, 2, 1, 3)), shape=(12, 9, 8))
        rh = b.input("rh", (12, 9, 3))
        rw = b.input("rw", (12, 9, 3))
        b.output(b.attention(q, k, q, rh, rw, scale=0.4))
        return {}
    compiled = check(build, LLVM)
    assert compiled.graph.op_counts() == {"fused.attention": 1}


def test_attention_operands_transposed_in_their_last_two_dims():
    # k and v stored [B, D, N] (unit stride along tokens), q read through a transpose, and
    # q sliced with steps in both dims (no unit stride at all): every operand is read in
    # place through its index map, nothing is packed.
    def build(b):
        kt = b.input("kt", (2, 8, 11))
        vt = b.input("vt", (2, 5, 11))
        qt = b.transpose(b.input("qt", (2, 8, 11)), perm=(0, 2, 1))
        qs = b.slice(b.input("qx", (2, 22, 16)), starts=(0, 0, 0), ends=(2, 22, 16),
                     steps=(1, 2, 2))
        k = b.transpose(kt, perm=(0, 2, 1))
        v = b.transpose(vt, perm=(0, 2, 1))
        b.output(b.attention(qt, k, v, scale=0.5), b.attention(qs, k, v, scale=0.5))
        return {}
    compiled = check(build, LLVM)
    assert compiled.graph.op_counts() == {"fused.attention": 2}
    for node, k in zip(compiled.graph.nodes, compiled.plan.kernels):
        assert k.n_operand_ptrs == len(node.inputs)


def test_fastmath_profile_within_looser_bounds():
    prof = LLVM.replace(fastmath=True, name="llvm-fast")
    check(norms, prof, rtol=1e-4, atol=1e-5)
    check(mlp_with_residual, prof, rtol=1e-4, atol=1e-5)
    compiled = check(elementwise_group, prof, rtol=1e-4, atol=1e-5)
    (kernel,) = [k for k in compiled.plan.kernels if k is not None]
    assert "fmul contract reassoc nsz arcp float" in kernel.info.source


@pytest.mark.parametrize("m, threads, want", [
    (4096, 2, [2048] * 2), (4900, 2, [2450] * 2), (4096, 1, [2048] * 2), (9000, 2, [2250] * 4),
    (7, 2, [4, 3]), (1100, 2, [550, 550])])
def test_gemm_row_blocks_split_evenly_over_threads(m, threads, want):
    from rlx.backends.llvm.gemm import block_rows

    block = block_rows(m, threads)
    blocks = [min(block, m - r) for r in range(0, m, block)]
    assert blocks == want
    assert len(blocks) % threads == 0


def test_code_for_a_cpu_without_the_needed_features_refuses_to_run(monkeypatch):
    from rlx.backends.llvm import target
    from rlx.errors import RlxError

    monkeypatch.setattr(target, "host_features", lambda: {"sse2", "avx"})
    b = GraphBuilder("g")
    b.output(b.exp(b.input("x", (2, 3))))
    compiled = compile_graph(b.build(), LLVM.replace(device="cpu-avx512", name="llvm-512"),
                             weights={})
    with pytest.raises(RlxError, match=r"compiled for cpu-avx512 \(x86-64-v4\); this CPU lacks "
                                       r"avx512f"):
        compiled(np.zeros((2, 3), np.float32))


def gemm_views(b):
    """Matmuls whose operands are strided views: head slices of a packed projection with
    split batch dims and a broadcast table (rel-pos style, both orientations), a transposed
    left operand (BLAS transposes it), and q k^T of one projection (A and B share a buffer)."""
    qkv = b.input("qkv", (2, 12, 3, 2, 4))
    t = b.transpose(qkv, perm=(2, 0, 3, 1, 4))
    q = b.reshape(b.slice_axis(t, 0, 0, 1), shape=(2, 2, 3, 4, 4))
    k = b.reshape(b.slice_axis(t, 0, 1, 2), shape=(4, 12, 4))
    th = b.input("th", (3, 5, 4))
    tw = b.input("tw", (4, 6, 4))
    xt = b.input("xt", (7, 9))
    b.output(b.matmul(q, th, transpose_b=True),
             b.add(b.matmul(b.transpose(q, perm=(0, 1, 3, 2, 4)), tw, transpose_b=True), 1.0),
             b.matmul(b.transpose(xt, perm=(1, 0)), b.input("w", (7, 5))),
             b.matmul(b.reshape(q, shape=(4, 12, 4)), k, transpose_b=True))
    return {}


@pytest.mark.parametrize("native", [False, True], ids=["blas", "native"])
def test_gemm_operands_read_through_index_maps(native):
    prof = LLVM.replace(gemm="native" if native else "blas", name="llvm-gv")
    compiled = check(gemm_views, prof, rtol=1e-5, atol=1e-5)
    assert _kinds(compiled) == ["llvm.gemm"] * 4


@pytest.mark.parametrize("m, n, k, device", [
    (14, 14, 64, "cpu"), (7, 40, 5, "cpu"), (64, 64, 64, "cpu"), (13, 33, 3, "cpu"),
    (13, 15, 3, "cpu-avx2"), (13, 15, 3, "cpu-generic")])
def test_batches_of_small_products_on_the_register_tile_loop(m, n, k, device):
    # per-entry work <= gemm_loops.SMALL_WORK: no BLAS call; row tiles with a remainder, the last
    # vector of each row masked (n not a multiple of the vector width), a transposed left
    # operand read in place, a right operand broadcast over one batch dim, an epilogue;
    # a left operand broadcast over the batch
    def build(b):
        a = b.transpose(b.input("at", (3, 4, k, m)), perm=(0, 1, 3, 2))
        w = b.input("w", (4, k, n))
        b.output(b.add(b.matmul(a, w), b.input("bias", (n,))),
                 b.matmul(b.input("a2", (m, k)), b.input("w2", (12, k, n))))
        return {}
    compiled = check(build, LLVM.replace(device=device, name=f"llvm-{device}"), rtol=1e-5,
                     atol=1e-5)
    kernels = [k_ for k_ in compiled.plan.kernels if k_ is not None]
    assert [k_.calls_blas for k_ in kernels] == [False, False]


def big_pads(b):
    """Pads large enough to be split over the threads (fill + copy per range of rows), with
    rows of pure fill at both ends of the split axis, and a negative fill value."""
    x = b.input("x", (1, 300, 230))
    b.output(b.pad(x, pads=(0, 0, 7, 5, 3, 2), value=-1.5), b.pad(x, pads=(2, 1, 0, 0, 0, 4)))
    return {}


def test_pad_split_over_threads():
    compiled = check(big_pads, LLVM)
    assert _kinds(compiled) == ["llvm.host.pad"] * 2
