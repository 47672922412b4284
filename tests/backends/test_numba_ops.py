"""Every op of the registry on the numba backend equals the reference interpreter.

Each op gets a tiny graph (`CASES`); the graph is compiled with fusion off (so
the op reaches the backend on its own, after lowering) and with the default
fusion, and both results are compared with the numpy reference interpreter on
random inputs. `test_every_op_has_a_numba_case` fails when an op is added to
the registry without a case here.

Tolerances: float32 results within rtol 1e-5 / atol 2e-6 (the backend's
vectorized exp/erf/tanh are within about 1 ulp, resp. 5e-7 absolute, of the
float64 references); fastmath is off in these profiles.
"""

from __future__ import annotations

import numpy as np
import pytest

from rlx.backends.reference import run_graph
from rlx.ir import GraphBuilder
from rlx.ir.ops import OPS
from rlx.runtime import compile_graph
from rlx.runtime.profile import PRESETS

NUMBA = PRESETS["numba"].replace(threads=2)
NUMBA_UNFUSED = NUMBA.replace(fusion=False, name="numba-unfused")
RTOL, ATOL = 1e-5, 2e-6


def data(shape, dtype="f32", kind="normal", seed=0):
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if dtype in ("i32", "i64"):
        return rng.integers(-5, 6, size=shape).astype(np.int32 if dtype == "i32" else np.int64)
    x = rng.standard_normal(shape)
    if kind == "positive":
        x = np.abs(x) + 0.1
    return x.astype(np.float64 if dtype == "f64" else np.float32)


def check(build, profile=NUMBA, rtol=RTOL, atol=ATOL, expect_native=True, seed=0):
    """Build (b -> (inputs spec, weights spec)), compile, compare with the reference.

    Returns the compiled graph (for further assertions).
    """
    b = GraphBuilder("case")
    spec = build(b)
    graph = b.build()
    inputs = [data(v.shape, v.dtype, spec.get(v.name, "normal"), seed + i)
              for i, v in enumerate(graph.inputs)]
    weights = {name: data(v.shape, v.dtype, spec.get(name, "normal"), 100 + i)
               for i, (name, v) in enumerate(graph.source_weights().items())}
    expected = run_graph(graph, inputs, weights)
    compiled = compile_graph(graph, profile, weights=weights)
    got = compiled(*inputs)
    for g, e in zip(got, expected):
        assert g.shape == e.shape and g.dtype == e.dtype
        if g.dtype.kind in "biu":
            np.testing.assert_array_equal(g, e)
        else:
            np.testing.assert_allclose(g, e, rtol=rtol, atol=atol)
    if expect_native:
        assert compiled.report.fallback_kernels == 0, compiled.graph.op_counts()
    return compiled


def unary(op, kind="normal", **attrs):
    def build(b):
        x = b.input("x", (3, 5, 67))
        b.output(getattr(b, op)(x, **attrs))
        return {"x": kind}
    return build


def binary(op, kind="normal", out_bool=False):
    def build(b):
        x = b.input("x", (4, 33, 16))
        y = b.input("y", (33, 1))  # broadcast operand
        b.output(getattr(b, op)(x, y))
        return {"x": kind, "y": kind}
    return build


def _where(b):
    c = b.input("c", (6, 40), "bool")
    x = b.input("x", (6, 40))
    y = b.input("y", (40,))
    b.output(b.where(c, x, y))
    return {}


def _cast(b):
    x = b.input("x", (5, 9))
    y = b.cast(x, dtype="i32")
    z = b.cast(b.greater(x, 0.0), dtype="f32")
    b.output(y, z, b.cast(y, dtype="f64"))
    return {}


def _const(b):
    x = b.input("x", (2, 7))
    c = b.const(2.5, shape=(2, 7))
    b.output(b.mul(x, c), b.const(-1.0, shape=(3,)))
    return {}


def _matmul(b):
    a = b.input("a", (2, 17, 9))
    w = b.input("w", (23, 9))
    c = b.input("c", (1, 9, 5))
    b.output(b.matmul(a, w, transpose_b=True), b.matmul(a, c), b.matmul(c, a, transpose_a=True,
                                                                         transpose_b=True))
    return {}


def _linear(b):
    x = b.input("x", (2, 3, 12))
    w = b.weight("w", (7, 12))
    bias = b.weight("bias", (7,))
    b.output(b.linear(x, w, bias), b.linear(x, w))
    return {}


def _attention(b):
    q = b.input("q", (3, 12, 8))
    k = b.input("k", (3, 12, 8))
    v = b.input("v", (3, 12, 5))
    rh = b.input("rh", (3, 12, 3))
    rw = b.input("rw", (3, 12, 4))
    b.output(b.attention(q, k, v, rh, rw, scale=0.35), b.attention(q, k, v, scale=0.5))
    return {}


def _conv2d(b):
    x = b.input("x", (1, 4, 9, 10))
    w = b.weight("w", (6, 4, 3, 3))
    bias = b.weight("bias", (6,))
    w1 = b.weight("w1", (5, 6, 1, 1))
    y = b.conv2d(x, w, bias, stride=2, padding=1)
    b.output(b.conv2d(y, w1))
    return {}


def _conv2d_grouped(b):
    x = b.input("x", (1, 4, 8, 8))
    w = b.weight("w", (6, 2, 3, 3))
    b.output(b.conv2d(x, w, groups=2, padding=1))
    return {}


def _conv_transpose2d(b):
    x = b.input("x", (1, 6, 5, 4))
    w = b.weight("w", (6, 3, 2, 2))
    bias = b.weight("bias", (3,))
    b.output(b.conv_transpose2d(x, w, bias, stride=2))
    return {}


def _conv_transpose2d_general(b):
    x = b.input("x", (1, 3, 5, 4))
    w = b.weight("w", (3, 2, 3, 3))
    b.output(b.conv_transpose2d(x, w, stride=2, padding=1))
    return {}


def _im2col(b):
    x = b.input("x", (2, 3, 7, 6))
    b.output(b.im2col(x, kernel=3, stride=2, padding=1))
    return {}


def _max_pool2d(b):
    x = b.input("x", (1, 3, 8, 6))
    b.output(b.max_pool2d(x, kernel=2))
    return {}


def _max_pool2d_overlap(b):
    x = b.input("x", (1, 3, 8, 6))
    b.output(b.max_pool2d(x, kernel=3, stride=2, padding=1))
    return {}


def _resize(b):
    x = b.input("x", (1, 2, 5, 7))
    b.output(b.resize_bilinear(x, size=(9, 4)))
    return {}


def _resize_bicubic(b):
    x = b.input("x", (1, 2, 5, 7))
    b.output(b.resize_bicubic(x, size=(9, 4)))
    return {}


def _layer_norm(b):
    x = b.input("x", (2, 9, 48))
    w = b.weight("w", (48,))
    bias = b.weight("bias", (48,))
    y = b.input("y", (1, 16, 5, 7))
    w2 = b.weight("w2", (16,))
    b.output(b.layer_norm(x, w, bias, eps=1e-6), b.layer_norm(x),
             b.layer_norm(y, w2, None, axis=1))
    return {}


def _softmax(b):
    x = b.input("x", (3, 7, 40))
    b.output(b.softmax(x, axis=-1), b.softmax(x, axis=1))
    return {}


def _reduce(op):
    def build(b):
        x = b.input("x", (3, 4, 5, 6))
        b.output(getattr(b, op)(x, axes=(1, 3)), getattr(b, op)(x, axes=(2,), keepdims=True),
                 getattr(b, op)(x))
        return {}
    return build


def _reshape(b):
    x = b.input("x", (4, 6, 5))
    y = b.reshape(b.exp(x), shape=(24, 5))
    b.output(b.add(y, 1.0), y)
    return {}


def _transpose(b):
    x = b.input("x", (4, 6, 5))
    b.output(b.transpose(x, perm=(2, 0, 1)), b.transpose(x, perm=(0, 2, 1)))
    return {}


def _pad(b):
    x = b.input("x", (2, 5, 3))
    b.output(b.pad(x, pads=(0, 1, 2, 0, 1, 1), value=-2.0))
    return {}


def _slice(b):
    x = b.input("x", (6, 9, 4))
    b.output(b.slice(x, starts=(1, 0, 1), ends=(5, 9, 4), steps=(2, 3, 1)))
    return {}


def _concat(b):
    x = b.input("x", (2, 3, 4))
    y = b.input("y", (2, 5, 4))
    b.output(b.concat(x, y, axis=1))
    return {}


def _broadcast_to(b):
    x = b.input("x", (3, 1))
    b.output(b.broadcast_to(x, shape=(2, 3, 7)))
    return {}


def _window_partition(b):
    x = b.input("x", (1, 9, 11, 4))
    b.output(b.window_partition(x, window=4))
    return {}


def _window_unpartition(b):
    x = b.input("x", (9, 4, 4, 3))
    b.output(b.window_unpartition(x, window=4, height=10, width=9))
    return {}


def _gather(b):
    t = b.input("t", (7, 5))
    i = b.input("i", (3, 2), "i64")
    b.output(b.gather(t, i, axis=0), b.gather(t, b.add(i, b.const(1.0, dtype="i64")), axis=0))
    return {}


def _arange(b):
    x = b.input("x", (6,))
    b.output(b.add(x, b.arange(stop=6, dtype="f32")), b.arange(start=1, stop=9, step=3))
    return {}


def _fused(b):
    # A hand-made fused node (the op itself); fusion passes make more in test_numba_fused.
    from rlx.ir.graph import Graph

    x = b.input("x", (4, 10))
    body = Graph("elementwise")
    bb = GraphBuilder(graph=body)
    i = bb.input("i", (4, 10))
    bb.output(bb.tanh(bb.mul(i, 2.0)))
    b.output(b.op("fused", x, kind="elementwise", body=body))
    return {}


def _empty(b):
    x = b.input("x", (0, 5))
    b.output(b.exp(b.add(x, 1.0)))
    return {}


def _scalar(b):
    x = b.input("x", ())
    y = b.input("y", (3,))
    b.output(b.mul(b.exp(x), 2.0), b.add(x, y))
    return {}


def _ints(b):
    x = b.input("x", (4, 5), "i64")
    y = b.input("y", (5,), "i64")
    b.output(b.add(x, y), b.mul(x, y), b.maximum(x, y), b.less(x, y),
             b.div(b.cast(x, dtype="f32"), 2.0))
    return {}


def _f64(b):
    x = b.input("x", (4, 50), "f64")
    b.output(b.softmax(b.gelu(b.exp(x))), b.layer_norm(b.tanh(x)), b.erf(x))
    return {}


def _norm_of_one(b):
    x = b.input("x", (4, 1))
    b.output(b.layer_norm(x), b.softmax(x))
    return {}


CASES = {
    "neg": unary("neg"), "abs": unary("abs"), "exp": unary("exp"),
    "log": unary("log", "positive"), "sqrt": unary("sqrt", "positive"),
    "rsqrt": unary("rsqrt", "positive"), "reciprocal": unary("reciprocal", "positive"),
    "sin": unary("sin"), "cos": unary("cos"), "tanh": unary("tanh"), "erf": unary("erf"),
    "sigmoid": unary("sigmoid"), "relu": unary("relu"), "gelu": unary("gelu"),
    "add": binary("add"), "sub": binary("sub"), "mul": binary("mul"), "div": binary("div"),
    "maximum": binary("maximum"), "minimum": binary("minimum"), "pow": binary("pow", "positive"),
    "greater": binary("greater"), "less": binary("less"), "equal": binary("equal"),
    "where": _where, "cast": _cast, "const": _const, "matmul": _matmul, "linear": _linear,
    "attention": _attention, "conv2d": _conv2d, "conv_transpose2d": _conv_transpose2d,
    "im2col": _im2col, "max_pool2d": _max_pool2d, "resize_bilinear": _resize,
    "resize_bicubic": _resize_bicubic,
    "layer_norm": _layer_norm, "softmax": _softmax, "reduce_sum": _reduce("reduce_sum"),
    "reduce_mean": _reduce("reduce_mean"), "reduce_max": _reduce("reduce_max"),
    "reshape": _reshape, "transpose": _transpose, "pad": _pad, "slice": _slice,
    "concat": _concat, "broadcast_to": _broadcast_to, "window_partition": _window_partition,
    "window_unpartition": _window_unpartition, "gather": _gather, "arange": _arange,
    "fused": _fused,
}

#: cases whose op the numba backend declines on purpose (the reference kernel runs it)
DECLINED = {
    "resize_bilinear": "host-side op (SAM postprocess); no compiled kernel",
    "resize_bicubic": "weight-only in practice (folded at bind time); no compiled kernel",
    "conv2d_grouped": "grouped convolution is not lowered; runs on the reference kernel",
    "conv_transpose2d_general": "only kernel == stride is lowered to a GEMM",
    "max_pool2d_overlap": "overlapping pooling is not lowered",
}
EXTRA = {"conv2d_grouped": _conv2d_grouped, "conv_transpose2d_general": _conv_transpose2d_general,
         "max_pool2d_overlap": _max_pool2d_overlap, "gelu_tanh": unary("gelu", approximate="tanh"),
         # edge cases of the loop-nest code generator
         "empty": _empty, "scalar": _scalar, "ints": _ints, "f64": _f64,
         "norm_of_one": _norm_of_one}


def test_every_op_has_a_numba_case():
    missing = sorted(set(OPS) - set(CASES))
    assert not missing, f"ops without a numba backend test: {missing}"


@pytest.mark.parametrize("name", sorted(CASES) + sorted(EXTRA))
@pytest.mark.parametrize("profile", [NUMBA_UNFUSED, NUMBA], ids=["unfused", "fused"])
def test_op_matches_reference(name, profile):
    build = CASES.get(name) or EXTRA[name]
    check(build, profile, expect_native=name not in DECLINED)


def test_declined_ops_really_fall_back():
    for name in DECLINED:
        build = CASES.get(name) or EXTRA[name]
        compiled = check(build, NUMBA_UNFUSED, expect_native=False)
        assert compiled.report.fallback_kernels >= 1, name
