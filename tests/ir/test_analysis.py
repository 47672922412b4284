"""Graph analyses: FLOP counts against torch's FlopCounterMode, liveness, dependence
order and DOT export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from models.example import build_classifier
from rlx.ir import GraphBuilder
from rlx.ir.analysis import (dependence_graph, graph_flops, liveness, node_flops, to_dot,
                             topological_sort)
from tests.support.opcheck import sample_graph


def _torch_flops(fn) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def _one(op, *specs, **attrs):
    b = GraphBuilder("f")
    vals = [b.input(f"x{i}", s) for i, s in enumerate(specs)]
    b.output(b.op(op, *vals, **attrs))
    return b.build().nodes[-1]


@pytest.mark.parametrize("xs,ws,attrs", [
    ((2, 4, 9, 7), (6, 2, 3, 3), dict(stride=2, padding=1, groups=2)),
    ((1, 3, 16, 16), (8, 3, 4, 4), dict(stride=4)),
])
def test_conv2d_flops_match_torch(xs, ws, attrs):
    node = _one("conv2d", xs, ws, **attrs)
    want = _torch_flops(lambda: F.conv2d(torch.zeros(xs), torch.zeros(ws), **attrs))
    assert node_flops(node) == want


def test_conv_transpose2d_flops_match_torch():
    attrs = dict(stride=(2, 3), padding=1, groups=2)
    node = _one("conv_transpose2d", (1, 4, 3, 5), (4, 3, 3, 2), **attrs)
    want = _torch_flops(lambda: F.conv_transpose2d(torch.zeros(1, 4, 3, 5),
                                                   torch.zeros(4, 3, 3, 2), **attrs))
    assert node_flops(node) == want


@pytest.mark.parametrize("sa,sb,ta,tb", [((2, 4, 5), (2, 5, 3), False, False),
                                         ((5, 4), (3, 5), True, True)])
def test_matmul_and_linear_flops_match_torch(sa, sb, ta, tb):
    node = _one("matmul", sa, sb, transpose_a=ta, transpose_b=tb)
    a, b = torch.zeros(sa), torch.zeros(sb)
    want = _torch_flops(lambda: torch.matmul(a.transpose(-1, -2) if ta else a,
                                             b.transpose(-1, -2) if tb else b))
    assert node_flops(node) == want
    lin = _one("linear", (3, 7, 5), (6, 5))
    assert node_flops(lin) == _torch_flops(lambda: F.linear(torch.zeros(3, 7, 5),
                                                            torch.zeros(6, 5)))


def test_attention_flops_are_the_two_products_plus_softmax():
    node = _one("attention", (2, 5, 8), (2, 7, 8), (2, 7, 4), scale=0.5)
    q, k, v = torch.zeros(2, 1, 5, 8), torch.zeros(2, 1, 7, 8), torch.zeros(2, 1, 7, 4)
    products = _torch_flops(lambda: F.scaled_dot_product_attention(q, k, v))
    assert node_flops(node) == products + 5 * 2 * 5 * 7


def test_graph_flops_sums_nodes_and_fused_bodies():
    g = build_classifier()
    assert graph_flops(g) == sum(node_flops(n) for n in g.nodes)
    fused = sample_graph("fused")
    assert graph_flops(fused) == graph_flops(fused.nodes[0].body) > 0


def test_liveness_intervals():
    b = GraphBuilder("live")
    x = b.input("x", (2,))
    a = b.neg(x)          # 0, read by 1 and 3
    c = b.exp(a)          # 1, read by 2
    d = b.abs(c)          # 2, output
    e = b.add(a, d)       # 3, dead
    b.output(d)
    g = b.build()
    spans = {iv.value.name: (iv.start, iv.end) for iv in liveness(g)}
    assert spans == {"neg": (0, 3), "exp": (1, 2), "abs": (2, 4), "add": (3, 3)}
    assert e.producer is g.nodes[3]


def test_dependence_graph_and_stable_topological_sort():
    g = build_classifier()
    dep = dependence_graph(g)
    assert dep.number_of_nodes() == len(g.nodes)
    assert all(i < j for i, j in dep.edges)
    order = [n.op for n in g.nodes]
    g.nodes.reverse()
    topological_sort(g)
    assert [n.op for n in g.nodes] == order


def test_dot_export_shows_every_node_and_edge():
    g = build_classifier()
    dot = to_dot(g)
    assert dot.startswith('digraph "classifier" {') and dot.rstrip().endswith("}")
    for i, node in enumerate(g.nodes):
        assert f"n{i} [shape=box" in dot
    n_edges = sum(len(n.present_inputs()) for n in g.nodes) + len(g.outputs)
    assert dot.count(" -> ") == n_edges
    fused = to_dot(sample_graph("fused"))
    assert "fused.elementwise [add, gelu, reduce_sum]" in fused
    assert np.char.count(np.array([fused]), '"')[0] % 2 == 0  # quotes balanced
