"""The `fused` op: its semantics are its body's, with operands bound in order."""

from __future__ import annotations

import numpy as np

from rlx.backends.reference import run_graph
from rlx.ir import GraphBuilder
from tests.support.opcheck import assert_close, covers, rand, run_op

RNG = np.random.default_rng(9)


def _body():
    b = GraphBuilder("body")
    x = b.input("x", (3, 4))
    w = b.input("w", (4, 5))
    y = b.matmul(x, w)
    z = b.gelu(y)
    b.output(z, b.reduce_max(z, axes=(1,)))
    return b.build()


@covers("fused")
def test_fused_computes_its_body_with_operands_in_order():
    x, w = rand(RNG, (3, 4)), rand(RNG, (4, 5))
    got_z, got_m = run_op("fused", x, w, kind="gemm", body=_body())
    want_z, want_m = run_graph(_body(), [x, w], {})
    np.testing.assert_array_equal(got_z, want_z)
    np.testing.assert_array_equal(got_m, want_m)
    # independent: numpy + math.erf GELU
    from math import erf, sqrt
    y = (x.astype(np.float64) @ w.astype(np.float64))
    gelu = np.vectorize(lambda v: 0.5 * v * (1 + erf(v / sqrt(2))))(y)
    assert_close(got_z, gelu, rtol=1e-5, atol=1e-6)
    assert_close(got_m, gelu.max(axis=1), rtol=1e-5, atol=1e-6)


@covers("fused")
def test_nested_fused_bodies_and_weights_as_operands():
    inner = GraphBuilder("inner")
    a = inner.input("a", (2, 3))
    inner.output(inner.mul(a, a))
    inner = inner.build()
    outer = GraphBuilder("outer")
    p = outer.input("p", (2, 3))
    q = outer.input("q", (3,))
    outer.output(outer.add(outer.fused(p, kind="elementwise", body=inner), q))
    outer = outer.build()

    b = GraphBuilder("g")
    x = b.input("x", (2, 3))
    bias = b.weight("bias", (3,))
    b.output(b.fused(x, bias, kind="other", body=outer))
    g = b.build()
    xv, bv = rand(RNG, (2, 3)), rand(RNG, (3,))
    (got,) = run_graph(g, [xv], {"bias": bv})
    assert_close(got, xv.astype(np.float64) ** 2 + bv, rtol=1e-6, atol=1e-6)
