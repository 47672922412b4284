"""Fusion passes: the expected groups form, and the graph computes the same thing.

Each case builds a small graph, runs the lowering + cleanup pipeline with and
without fusion, checks which fused groups exist (kind and body ops), and
compares both graphs on random inputs with the reference interpreter (fused
nodes evaluate their bodies op by op, so equality means the grouping and the
body construction are right).
"""

from __future__ import annotations

import numpy as np
import pytest

from rlx.backends.reference import run_graph
from rlx.ir import GraphBuilder
from rlx.ir.verifier import verify
from rlx.passes import PassOptions, default_pipeline, run_passes
from rlx.ir.views import StridedView


def _data(graph, seed=0):
    rng = np.random.default_rng(seed)
    inputs = [rng.standard_normal(v.shape).astype(np.float32) for v in graph.inputs]
    weights = {n: rng.standard_normal(v.shape).astype(np.float32)
               for n, v in graph.source_weights().items()}
    return inputs, weights


def fused_and_plain(graph, **opts):
    plain = run_passes(graph, default_pipeline(PassOptions(fuse=False)),
                       PassOptions(fuse=False, verify=True))
    fused = run_passes(graph, default_pipeline(PassOptions(**opts)), PassOptions(verify=True, **opts))
    verify(fused)
    inputs, weights = _data(graph)
    for a, b in zip(run_graph(plain, inputs, weights), run_graph(fused, inputs, weights)):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)
    return fused


def groups(graph):
    """[(kind, [body op names])] of the fused nodes, in order."""
    return [(n.attrs["kind"], [m.op for m in n.body.nodes])
            for n in graph.nodes if n.op == "fused"]


def test_elementwise_chain_becomes_one_group_with_broadcast_operands():
    b = GraphBuilder("ew")
    x = b.input("x", (4, 8, 16))
    bias = b.weight("bias", (16,))
    y = b.gelu(b.mul(b.add(x, bias), 0.5))
    b.output(b.sigmoid(y))
    g = fused_and_plain(b.build())
    assert groups(g) == [("elementwise", ["add", "const", "mul", "gelu", "sigmoid"])]
    assert len(g.nodes) == 1


def test_transposed_input_is_read_through_strides_not_copied():
    b = GraphBuilder("tr")
    x = b.input("x", (4, 6, 8))
    y = b.input("y", (4, 8, 6))
    b.output(b.add(b.transpose(x, perm=(0, 2, 1)), b.exp(y)))
    g = fused_and_plain(b.build())
    assert [n.op for n in g.nodes] == ["fused"]
    (kind, ops), = groups(g)
    assert kind == "elementwise" and ops == ["transpose", "exp", "add"]


def test_multi_output_group_keeps_values_used_outside():
    b = GraphBuilder("mo")
    x = b.input("x", (5, 7))
    t = b.tanh(x)
    u = b.mul(t, t)
    b.output(u, b.matmul(t, b.input("w", (7, 3))))
    g = fused_and_plain(b.build())
    fused = [n for n in g.nodes if n.op == "fused"]
    assert len(fused) == 1 and len(fused[0].outputs) == 2


def test_gemm_epilogue_bias_gelu_and_residual_through_reshape():
    b = GraphBuilder("mlp")
    x = b.input("x", (1, 4, 4, 32))
    w1, b1 = b.weight("fc1.weight", (64, 32)), b.weight("fc1.bias", (64,))
    w2, b2 = b.weight("fc2.weight", (32, 64)), b.weight("fc2.bias", (32,))
    h = b.gelu(b.linear(x, w1, b1))
    b.output(b.add(x, b.linear(h, w2, b2)))
    g = fused_and_plain(b.build())
    kinds = groups(g)
    assert kinds[0] == ("gemm", ["matmul", "add", "reshape", "gelu"])
    assert kinds[1][0] == "gemm" and kinds[1][1][:2] == ["matmul", "add"] and \
        kinds[1][1][-1] == "add", kinds  # the residual add joined the second GEMM
    assert not any(n.op == "matmul" for n in g.nodes)


def test_epilogue_fusion_can_be_switched_off():
    b = GraphBuilder("lin")
    x = b.input("x", (6, 8))
    b.output(b.relu(b.linear(x, b.weight("w", (5, 8)), b.weight("b", (5,)))))
    g = fused_and_plain(b.build(), fuse_epilogues=False)
    assert "matmul" in [n.op for n in g.nodes]
    assert groups(g) == [("elementwise", ["add", "relu"])]


def test_layer_norm_absorbs_residual_prologue_and_gelu_epilogue():
    b = GraphBuilder("ln")
    x = b.input("x", (2, 5, 24))
    r = b.input("r", (2, 5, 24))
    w, bias = b.weight("w", (24,)), b.weight("b", (24,))
    y = b.layer_norm(b.add(x, r), w, bias, eps=1e-6)
    b.output(b.gelu(y))
    g = fused_and_plain(b.build())
    assert groups(g) == [("norm", ["add", "layer_norm", "gelu"])]


def test_channel_layer_norm_and_softmax_are_norm_kernels():
    b = GraphBuilder("cn")
    x = b.input("x", (1, 8, 3, 5))
    y = b.layer_norm(x, b.weight("w", (8,)), b.weight("b", (8,)), axis=1)
    s = b.softmax(b.mul(b.input("s", (2, 3, 9)), 0.125), axis=-1)
    b.output(y, s)
    g = fused_and_plain(b.build())
    assert sorted(groups(g)) == [("norm", ["const", "mul", "softmax"]), ("norm", ["layer_norm"])]


def test_residual_used_twice_is_not_folded_into_the_norm():
    b = GraphBuilder("res")
    x = b.input("x", (3, 16))
    r = b.add(x, b.input("y", (3, 16)))
    n = b.layer_norm(r)
    b.output(b.add(r, n))
    g = fused_and_plain(b.build())
    norm = [ops for kind, ops in groups(g) if kind == "norm"]
    # r is read by the final add too, so its add stays outside; the final add (reading r
    # as an operand) is a legal epilogue of the norm.
    assert norm == [["layer_norm", "add"]]
    assert "add" in [n.op for n in g.nodes]


def test_no_cycle_through_an_outside_node():
    # add -> matmul -> add: the two adds must not form one group (matmul sits between).
    b = GraphBuilder("cyc")
    x = b.input("x", (4, 4))
    a = b.exp(x)
    m = b.matmul(a, b.input("w", (4, 4)))
    b.output(b.add(a, b.relu(m)))
    g = fused_and_plain(b.build(), fuse_epilogues=False)
    # the graph stays a DAG in topological order (verify ran) and computes the same
    assert sum(n.op == "fused" for n in g.nodes) >= 1


def test_example_convnet_fuses_into_gemm_norm_and_pool_groups():
    from rlx.zoo import get_model

    spec = get_model("example-convnet")
    g = fused_and_plain(spec.build())
    kinds = sorted(kind for kind, _ in groups(g))
    # convs and the classifier become GEMMs with fused epilogues; the 2x2 max-pool is
    # lowered to the maximum of its strided slices, one elementwise group
    assert kinds == ["elementwise", "gemm", "gemm", "gemm", "norm", "norm"]


@pytest.mark.parametrize("fuse", [True, False])
def test_pipeline_lists_fuse_only_when_enabled(fuse):
    assert ("fuse" in default_pipeline(PassOptions(fuse=fuse))) == fuse


def test_strided_view_algebra():
    v = StridedView.contiguous((2, 3, 4))
    assert v.strides == (12, 4, 1) and v.is_contiguous
    t = v.transpose((0, 2, 1))
    assert t.shape == (2, 4, 3) and t.strides == (12, 1, 4)
    split = t.reshape((2, 2, 2, 3))  # splitting a dim is always a view
    assert split is not None and split.strides == (12, 2, 1, 4)
    assert t.reshape((8, 3)) is None and t.reshape((2, 12)) is None  # would need a copy
    assert v.reshape((6, 4)).strides == (4, 1)
    s = v.slice((0, 1, 0), (2, 3, 4), (1, 1, 2))
    assert s.offset == 4 and s.shape == (2, 2, 2) and s.strides == (12, 4, 2)
    bc = StridedView.contiguous((3, 1)).broadcast_to((5, 3, 7))
    assert bc.strides == (0, 1, 0)
    assert StridedView.contiguous((3, 2)).broadcast_to((3, 4)) is None


@pytest.mark.parametrize("stage, kind", [("fuse-gemm", "gemm"), ("fuse-norm", "norm"),
                                         ("fuse-elementwise", "elementwise")])
def test_each_stage_alone_makes_only_its_kind(stage, kind):
    b = GraphBuilder("stages")
    x = b.input("x", (6, 8))
    h = b.relu(b.linear(x, b.weight("w", (8, 8)), b.weight("b", (8,))))
    y = b.softmax(b.add(b.layer_norm(h), 1.0))
    b.output(b.tanh(b.sub(y, b.exp(x))))
    g = b.build()
    lowered = run_passes(g, default_pipeline(PassOptions(fuse=False)), PassOptions(fuse=False))
    staged = run_passes(lowered, [stage], PassOptions(verify=True))
    assert {k for k, _ in groups(staged)} == {kind}
    inputs, weights = _data(g)
    for a, c in zip(run_graph(lowered, inputs, weights), run_graph(staged, inputs, weights)):
        np.testing.assert_allclose(c, a, rtol=1e-6, atol=1e-6)


def _mha(b, tokens=40, heads=2, dim=8):
    """q/k/v as head-transposed slices of one packed projection (ViT style)."""
    qkv = b.input("qkv", (tokens, 3 * heads * dim))
    t = b.transpose(b.reshape(qkv, shape=(1, tokens, 3, heads, dim)), perm=(2, 0, 3, 1, 4))
    t = b.reshape(t, shape=(3, heads, tokens, dim))
    q, k, v = (b.reshape(b.slice_axis(t, 0, i, i + 1), shape=(heads, tokens, dim))
               for i in range(3))
    return q, k, v


def test_attention_reads_packed_qkv_through_strides():
    b = GraphBuilder("mha")
    q, k, v = _mha(b)
    b.output(b.attention(q, k, v, scale=0.3))
    g = fused_and_plain(b.build())
    assert [n.op for n in g.nodes] == ["fused"]
    (kind, ops), = groups(g)
    assert kind == "attention" and ops.count("transpose") == 1 and ops[-1] == "attention"
    staged = run_passes(b.build(), ["fuse-attention"], PassOptions(verify=True))
    assert [kind for kind, _ in groups(staged)] == ["attention"]


def test_attention_operand_that_is_not_a_view_stays_a_kernel():
    b = GraphBuilder("nv")
    q = b.input("q", (2, 6, 4))
    k = b.transpose(b.input("kt", (2, 4, 6)), perm=(0, 2, 1))  # a view: absorbed
    v = b.exp(b.input("v", (2, 6, 4)))  # computed: stays outside
    b.output(b.attention(q, k, v, scale=0.5))
    g = fused_and_plain(b.build())
    ops = [n.op for n in g.nodes]
    assert ops == ["exp", "fused"] and groups(g)[0] == ("attention", ["transpose", "attention"])


def test_attention_operand_with_split_batch_dims():
    # windows x heads: the final reshape merges dims that are not adjacent in memory
    b = GraphBuilder("win")
    x = b.input("x", (2, 5, 3, 4))  # [windows, tokens, heads, dim]
    q = b.reshape(b.transpose(x, perm=(0, 2, 1, 3)), shape=(6, 5, 4))
    b.output(b.attention(q, q, q, scale=0.5))
    g = fused_and_plain(b.build())
    assert groups(g) == [("attention", ["transpose", "reshape", "attention"])]


def test_matmul_reads_head_slices_of_a_packed_projection_through_strides():
    # rel-pos style: q of every (image, head) as a [y, x, c] view of the projection, times a
    # per-row table; and the same with x and y swapped (rows at a stride of whole lines)
    b = GraphBuilder("relpos")
    qkv = b.input("qkv", (2, 12, 3, 2, 4))  # [windows, tokens = 3 x 4, q|k|v, heads, dim]
    t = b.transpose(qkv, perm=(2, 0, 3, 1, 4))
    q = b.reshape(b.slice_axis(t, 0, 0, 1), shape=(2, 2, 3, 4, 4))  # [win, head, y, x, c]
    th = b.input("th", (3, 5, 4))
    tw = b.input("tw", (4, 6, 4))
    b.output(b.matmul(q, th, transpose_b=True),
             b.matmul(b.transpose(q, perm=(0, 1, 3, 2, 4)), tw, transpose_b=True))
    g = fused_and_plain(b.build())
    assert [n.op for n in g.nodes] == ["fused", "fused"]
    for kind, ops in groups(g):
        assert kind == "gemm" and ops[-1] == "matmul" and "slice" in ops


def test_matmul_operand_without_a_unit_stride_is_copied():
    b = GraphBuilder("nounit")
    a = b.slice(b.input("a", (6, 10)), starts=(0, 0), ends=(6, 10), steps=(2, 2))  # [3, 5]
    b.output(b.matmul(a, b.input("w", (5, 4))))
    g = fused_and_plain(b.build())
    assert [n.op for n in g.nodes] == ["slice", "matmul"]


def test_reshaped_contiguous_operand_is_not_absorbed():
    # a reshape of a contiguous buffer is already a free alias: nothing to fuse
    b = GraphBuilder("alias")
    x = b.input("x", (2, 3, 8))
    b.output(b.matmul(b.reshape(x, shape=(6, 8)), b.input("w", (8, 5))))
    g = fused_and_plain(b.build())
    assert [n.op for n in g.nodes] == ["reshape", "matmul"]
