"""precision: under precision bf16 every f32 product (matmul, attention) takes bf16
operands with f32 accumulation, nothing else changes; the reference interpreter computes
exactly that, so it is the ground truth for any backend's bf16 kernel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlx.backends.reference import run_graph
from rlx.ir import GraphBuilder
from rlx.ir.ops.linalg import round_bf16
from rlx.ir.printer import print_graph
from rlx.passes import PassOptions
from rlx.passes.registry import default_pipeline, get_pass
from tests.support.opcheck import check_pass

#: every product, whatever its size (the default floor keeps small products f32)
BF16 = PassOptions(precision="bf16", bf16_min_macs=0)


def _block():
    """A transformer-ish block after lowering: LN -> linear -> GELU -> linear + residual,
    attention with rel-pos, a batched product (rel-pos style), softmax."""
    b = GraphBuilder("blk")
    x = b.input("x", (2, 10, 32))
    h = b.layer_norm(x, b.weight("ln.w", (32,)), b.weight("ln.b", (32,)), eps=1e-6)
    h = b.gelu(b.linear(h, b.weight("fc1.w", (48, 32)), b.weight("fc1.b", (48,))))
    y = b.add(x, b.linear(h, b.weight("fc2.w", (32, 48)), b.weight("fc2.b", (32,))))
    q, k, v = (b.input(n, (4, 6, 8)) for n in "qkv")
    rh, rw = b.input("rh", (4, 6, 2)), b.input("rw", (4, 6, 3))
    att = b.attention(q, k, v, rh, rw, scale=0.35)
    rel = b.matmul(q, b.input("tab", (4, 8, 5)))
    b.output(y, att, b.softmax(rel, axis=-1))
    return get_pass("lower-linear")(b.build(), PassOptions())


def test_products_get_bf16_and_nothing_else_changes():
    g = _block()
    new = check_pass("precision", g, BF16, rtol=3e-2, atol=0.5)  # |y| up to ~50
    assert [n.op for n in new.nodes] == [n.op for n in g.nodes]
    for old, n in zip(g.nodes, new.nodes):
        if n.op in ("matmul", "attention"):
            assert n.attrs == {**old.attrs, "precision": "bf16"}
        else:
            assert n.attrs == old.attrs
    assert sum(n.op in ("matmul", "attention") for n in new.nodes) == 4
    assert 'precision="bf16"' in print_graph(new)
    # f32: the graph is returned as is
    assert get_pass("precision")(g, PassOptions()) is g


def test_small_products_stay_f32():
    from rlx.passes.precision import MIN_MACS, macs

    b = GraphBuilder("sizes")
    x = b.input("x", (1024, 1024))
    big = b.matmul(x, b.input("w", (1024, 512)))             # 2^29 multiply-adds: bf16
    small = b.matmul(x, b.input("v", (1024, 256)))           # 2^28: f32
    q = b.input("q", (8, 1024, 32))
    att = b.attention(q, q, q, scale=0.2)                     # 8 * 1024^2 * 64 = 2^29
    b.output(big, small, att)
    new = get_pass("precision")(b.build(), PassOptions(precision="bf16"))
    got = {n.output.name: (macs(n), n.attrs["precision"]) for n in new.nodes}
    assert MIN_MACS == 1 << 29
    assert got == {"matmul": (1 << 29, "bf16"), "matmul_1": (1 << 28, "f32"),
                   "attention": (1 << 29, "bf16")}


def test_precision_runs_only_when_asked_and_before_fusion():
    assert "precision" not in default_pipeline(PassOptions())
    names = default_pipeline(BF16)
    assert names.index("precision") == names.index("fuse") - 1


def test_reference_semantics_are_rounded_operands_with_f32_sums():
    g = _block()
    new = get_pass("precision")(g, BF16)
    rng = np.random.default_rng(3)
    ins = [rng.standard_normal(v.shape).astype(np.float32) for v in g.inputs]
    ws = {n: rng.standard_normal(v.shape).astype(np.float32) for n, v in g.weights.items()}
    f32 = run_graph(g, ins, ws)
    bf = run_graph(new, ins, ws)
    # the batched product: exactly matmul of the rounded operands (same numpy call)
    q, tab = ins[1], ins[6]
    np.testing.assert_array_equal(
        bf[2], run_graph(_softmax_only(), [np.matmul(round_bf16(q), round_bf16(tab))], {})[0])
    for a, b_ in zip(bf, f32):  # close to f32, but not equal: the rounding happened
        rel = np.linalg.norm(a - b_) / np.linalg.norm(b_)
        assert 1e-5 < rel < 2e-2


def _softmax_only():
    b = GraphBuilder("sm")
    b.output(b.softmax(b.input("s", (4, 6, 5)), axis=-1))
    return b.build()


def test_attention_bf16_reference_in_float64():
    # Q K^T and P V on rounded operands (P normalized, then rounded), everything else f32
    b = GraphBuilder("att")
    q, k, v = b.input("q", (2, 7, 16)), b.input("k", (2, 9, 16)), b.input("v", (2, 9, 8))
    b.output(b.attention(q, k, v, scale=0.25, precision="bf16"))
    rng = np.random.default_rng(5)
    xs = [rng.standard_normal(s).astype(np.float32) * 2 for s in ((2, 7, 16), (2, 9, 16),
                                                                 (2, 9, 8))]
    (got,) = run_graph(b.build(), xs, {})
    qr, kr, vr = (round_bf16(x).astype(np.float64) for x in xs)
    s = qr @ kr.transpose(0, 2, 1) * 0.25
    p = np.exp(s - s.max(-1, keepdims=True))
    p = (p / p.sum(-1, keepdims=True)).astype(np.float32)
    want = round_bf16(p).astype(np.float64) @ vr
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


def test_round_bf16_matches_torch_bit_for_bit():
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2 ** 32, 200_000, dtype=np.uint64).astype(np.uint32)
    x = np.concatenate([bits.view(np.float32),
                        np.array([0.0, -0.0, np.inf, -np.inf, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8,
                                  3.3895e38, 1e-40, -1e-45], np.float32)])
    want = torch.from_numpy(x).to(torch.bfloat16).float().numpy()
    got = round_bf16(x)
    finite = ~np.isnan(want)
    np.testing.assert_array_equal(got[finite].view(np.uint32), want[finite].view(np.uint32))
    assert np.isnan(got[~finite]).all()


@pytest.mark.parametrize("bad", ["f16", "BF16"])
def test_precision_attribute_is_checked(bad):
    from rlx.errors import AttributeSchemaError

    b = GraphBuilder("g")
    with pytest.raises(AttributeSchemaError, match="precision"):
        b.matmul(b.input("a", (2, 3)), b.input("w", (3, 4)), precision=bad)
