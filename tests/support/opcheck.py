"""Helpers for op-level tests: one-op graphs, strict reference runs, one sample per op.

Why a helper: every op test wants the same three checks besides the numbers
it compares: the reference result has exactly the shape *and* dtype the shape
rule inferred (the interpreter would silently cast a wrong dtype), the graph
runs through the interpreter like any other graph, and its text form parses
back to the same text. `run_op` does all three, so each op test only states
the independent computation it compares against.

`covers(op, ...)` marks a test as exercising an op's semantics; the coverage
meta-test in tests/ir imports the op test modules and fails for any registered
op that no test claims. `SAMPLES` holds one representative graph per op for
the round-trip and verifier tests.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pytest

from rlx.backends.reference import run_graph
from rlx.ir import Graph, GraphBuilder, TensorType, parse, print_graph, verify
from rlx.ir.ops import get_op
from rlx.ir.ops.elementwise import PRIMITIVES
from rlx.ir.types import DTYPES


def covers(*ops: str):
    """Mark a test as checking the semantics of `ops` (read by the coverage meta-test)."""
    return pytest.mark.covers(*ops)


def rand(rng: np.random.Generator, shape, dtype=np.float32, scale: float = 1.0) -> np.ndarray:
    return np.asarray(scale * rng.standard_normal(shape)).astype(dtype)


def op_graph(op: str, args: list, attrs: dict, body: Graph | None = None) -> Graph:
    """A graph whose inputs are the op's operands (arrays or TensorTypes; None = absent)."""
    b = GraphBuilder(f"op_{op}")
    values = []
    for i, a in enumerate(args):
        if a is None:
            values.append(None)
            continue
        t = a if isinstance(a, TensorType) else TensorType.of(np.asarray(a))
        values.append(b.input(f"x{i}", t.shape, t.dtype))
    out = b.op(op, *values, body=body, **attrs)
    b.output(*(out if isinstance(out, tuple) else (out,)))
    return b.build()


def run_op(op: str, *args, body: Graph | None = None, **attrs):
    """Run one op on arrays (None for an absent optional input) with all the strict checks.

    Returns the single result (or the list of results of a multi-result op).
    """
    g = op_graph(op, list(args), attrs, body)
    node = g.nodes[-1]
    operands = [None if a is None else np.asarray(a) for a in args]
    operands += [None] * (len(node.inputs) - len(operands))  # absent trailing optionals
    raw = get_op(op).evaluate(operands, node.attrs, node.body)
    assert len(raw) == len(node.outputs)
    for r, v in zip(raw, node.outputs):
        r = np.asarray(r)
        assert r.shape == v.shape, f"{op}: reference shape {r.shape}, inferred {v.type}"
        assert r.dtype == v.type.np_dtype, f"{op}: reference dtype {r.dtype}, inferred {v.type}"
    outs = run_graph(g, [a for a in args if a is not None], {})
    for r, o in zip(raw, outs):
        np.testing.assert_array_equal(np.asarray(r), o)
    text = print_graph(g)
    again = parse(text)
    verify(again)
    assert print_graph(again) == text
    return outs[0] if len(outs) == 1 else outs


def assert_close(actual, expected, rtol=1e-5, atol=1e-6, what=""):
    """allclose with an exact shape check (broadcasting must not hide a wrong shape)."""
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{what} shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64),
                               rtol=rtol, atol=atol, err_msg=what)


# ---- the scalar decomposition of elementwise ops -----------------------------------


class NumpyPrimitives:
    """The primitive scalar operations, vectorized with numpy (float64), for checking
    each elementwise op's ``extra["scalar"]`` decomposition. Asking for anything
    outside `PRIMITIVES` fails: code generators implement only those."""

    _IMPL: dict[str, Callable] = {
        "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
        "max": np.maximum, "min": np.minimum, "pow": np.power, "neg": np.negative,
        "abs": np.abs, "exp": np.exp, "log": np.log, "sqrt": np.sqrt,
        "erf": np.vectorize(math.erf, otypes=[np.float64]), "tanh": np.tanh, "sin": np.sin,
        "cos": np.cos, "lt": np.less, "gt": np.greater, "le": np.less_equal,
        "ge": np.greater_equal, "eq": np.equal, "select": np.where,
        "cast": lambda x, dt: np.asarray(x).astype(DTYPES[dt]),
    }

    def __getattr__(self, name):
        if name not in PRIMITIVES:
            raise AssertionError(f"scalar decomposition uses non-primitive {name!r}")
        return self._IMPL[name]


# ---- one representative graph per op ---------------------------------------------------


def _fused_body() -> Graph:
    b = GraphBuilder("body")
    x = b.input("x", (2, 8))
    bias = b.input("bias", (8,))
    y = b.gelu(b.add(x, bias), approximate="tanh")
    b.output(y, b.reduce_sum(y, axes=(1,), keepdims=True))
    return b.build()


def _unary(op, **attrs):
    return lambda b: b.op(op, b.input("x", (2, 3, 4)), **attrs)


def _binary(op, dtype="f32"):
    return lambda b: b.op(op, b.input("a", (2, 1, 4), dtype), b.input("b", (3, 1), dtype))


#: op -> builder callback emitting that op with non-default attributes where it has any.
SAMPLES: dict[str, Callable[[GraphBuilder], object]] = {
    **{op: _unary(op) for op in ("neg", "abs", "exp", "log", "sqrt", "rsqrt", "reciprocal",
                                 "sin", "cos", "tanh", "erf", "sigmoid", "relu")},
    "gelu": _unary("gelu", approximate="tanh"),
    **{op: _binary(op) for op in ("add", "sub", "mul", "div", "maximum", "minimum", "pow",
                                  "greater", "less", "equal")},
    "where": lambda b: b.where(b.input("c", (2, 1), "bool"), b.input("a", (2, 3)),
                               b.input("b", (3,))),
    "cast": lambda b: b.cast(b.input("x", (4,), "i64"), dtype="f16"),
    "const": lambda b: b.const(-2.5, "f64", (2, 2)),
    "matmul": lambda b: b.matmul(b.input("a", (2, 1, 5, 3)), b.input("b", (4, 4, 5)),
                                 transpose_a=True, transpose_b=True),
    "linear": lambda b: b.linear(b.input("x", (2, 3, 5)), b.weight("w", (4, 5)),
                                 b.weight("bias", (4,))),
    "attention": lambda b: b.attention(
        b.input("q", (2, 6, 4)), b.input("k", (2, 6, 4)), b.input("v", (2, 6, 3)),
        b.input("rel_h", (2, 6, 2)), b.input("rel_w", (2, 6, 3)), scale=0.5),
    "conv2d": lambda b: b.conv2d(b.input("x", (1, 4, 9, 7)), b.weight("w", (6, 2, 3, 2)),
                                 b.weight("bias", (6,)), stride=(2, 1), padding=(1, 0),
                                 dilation=(1, 2), groups=2),
    "conv_transpose2d": lambda b: b.conv_transpose2d(
        b.input("x", (1, 4, 3, 5)), b.weight("w", (4, 3, 3, 2)), None, stride=(2, 3),
        padding=1, output_padding=(1, 0), groups=2),
    "im2col": lambda b: b.im2col(b.input("x", (1, 2, 6, 5)), kernel=(3, 2), stride=2,
                                 padding=1, dilation=(1, 2)),
    "max_pool2d": lambda b: b.max_pool2d(b.input("x", (1, 2, 7, 6)), kernel=3, stride=2,
                                         padding=1),
    "resize_bilinear": lambda b: b.resize_bilinear(b.input("x", (1, 2, 5, 4)), size=(7, 3),
                                                   align_corners=True),
    "resize_bicubic": lambda b: b.resize_bicubic(b.input("x", (1, 2, 5, 4)), size=(9, 3)),
    "layer_norm": lambda b: b.layer_norm(b.input("x", (1, 3, 4, 2)), b.weight("w", (3,)),
                                         None, axis=1, eps=1e-3),
    "softmax": lambda b: b.softmax(b.input("x", (2, 5, 3)), axis=-2),
    "reduce_sum": lambda b: b.reduce_sum(b.input("x", (2, 3, 4)), axes=(0, -1), keepdims=True),
    "reduce_mean": lambda b: b.reduce_mean(b.input("x", (2, 3, 4)), axes=(1,)),
    "reduce_max": lambda b: b.reduce_max(b.input("x", (2, 3, 4))),
    "reshape": lambda b: b.reshape(b.input("x", (2, 3, 4)), shape=(4, -1)),
    "transpose": lambda b: b.transpose(b.input("x", (2, 3, 4)), perm=(2, 0, -2)),
    "pad": lambda b: b.pad(b.input("x", (2, 3)), pads=(1, 0, 2, 3), value=-1.5),
    "slice": lambda b: b.slice(b.input("x", (5, 6)), starts=(1, -4), ends=(5, 100),
                               steps=(2, 3)),
    "concat": lambda b: b.concat(b.input("a", (2, 3)), b.input("b", (2, 1)),
                                 b.input("c", (2, 2)), axis=-1),
    "broadcast_to": lambda b: b.broadcast_to(b.input("x", (3, 1)), shape=(2, 3, 4)),
    "window_partition": lambda b: b.window_partition(b.input("x", (1, 5, 7, 2)), window=3),
    "window_unpartition": lambda b: b.window_unpartition(
        b.input("x", (6, 3, 3, 2)), window=3, height=5, width=7),
    "gather": lambda b: b.gather(b.input("t", (5, 3)), b.input("i", (2, 4), "i32"), axis=0),
    "arange": lambda b: b.arange(start=2, stop=11, step=3, dtype="i32"),
    "fused": lambda b: b.fused(b.input("x", (2, 8)), b.weight("bias", (8,)),
                               kind="elementwise", body=_fused_body()),
}


def sample_graph(op: str) -> Graph:
    """The SAMPLES graph for `op`, verified, with every result of the op as an output."""
    b = GraphBuilder(f"sample_{op}")
    out = SAMPLES[op](b)
    b.output(*(out if isinstance(out, tuple) else (out,)))
    return b.build()


def random_inputs(graph: Graph, seed: int = 0) -> list[np.ndarray]:
    """Random arrays for a graph's inputs: floats ~N(0,1), integers in [0, 4), bools."""
    rng = np.random.default_rng(seed)
    out = []
    for v in graph.inputs:
        dt = v.type.np_dtype
        if v.dtype == "bool":
            out.append(rng.random(v.shape) < 0.5)
        elif v.dtype in ("i32", "i64"):
            out.append(rng.integers(0, 4, v.shape).astype(dt))
        else:
            out.append(rng.standard_normal(v.shape).astype(dt))
    return out


def random_weights(graph: Graph, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(v.shape).astype(v.type.np_dtype)
            for name, v in graph.source_weights().items()}


# ---- a graph with every lowering ----------------------------------------------------------


def kitchen_sink():
    """A small SAM-like graph: patch embed, windowed rel-pos attention, MLP, neck, upscale."""
    b = GraphBuilder("sink")
    x = b.input("image", (1, 3, 16, 16))
    with b.scope("patch"):
        t = b.conv2d(x, b.weight("patch.w", (8, 3, 4, 4)), b.weight("patch.b", (8,)), stride=4)
        t = b.transpose(t, perm=(0, 2, 3, 1))                       # [1, 4, 4, 8]
    with b.scope("attn"):
        win = b.window_partition(t, window=3)                        # padded to 6x6: 4 windows
        tok = b.reshape(win, shape=(4, 9, 8))
        qkv = b.linear(tok, b.weight("qkv.w", (24, 8)), b.weight("qkv.b", (24,)))
        q = b.slice_axis(qkv, 2, 0, 8)
        k = b.slice_axis(qkv, 2, 8, 16)
        v = b.slice_axis(qkv, 2, 16, 24)
        rel = b.weight("rel", (5, 3))                                # gathered position table
        idx = b.arange(stop=3)
        table = b.gather(rel, idx, axis=0)                           # weight-only: folds
        rel_h = b.add(b.slice_axis(q, 2, 0, 3), b.reshape(b.reduce_sum(table, axes=(1,)),
                                                           shape=(1, 1, 3)))
        rel_w = b.add(b.slice_axis(k, 2, 0, 3), b.reshape(b.reduce_mean(table, axes=(0,)),
                                                           shape=(1, 1, 3)))
        a = b.attention(q, k, v, rel_h, rel_w, scale=8 ** -0.5)
        a = b.reshape(a, shape=(4, 3, 3, 8))
        t2 = b.window_unpartition(a, window=3, height=4, width=4)
        t = b.add(t, t2)
    with b.scope("mlp"):
        h = b.layer_norm(t, b.weight("ln.w", (8,)), b.weight("ln.b", (8,)))
        h = b.gelu(b.linear(h, b.weight("fc1.w", (16, 8)), b.weight("fc1.b", (16,))))
        t = b.add(t, b.linear(h, b.weight("fc2.w", (8, 16))))
    with b.scope("neck"):
        n = b.transpose(t, perm=(0, 3, 1, 2))                       # [1, 8, 4, 4]
        n = b.conv2d(n, b.weight("neck.w1", (6, 8, 1, 1)))
        n = b.layer_norm(n, b.weight("neck.ln", (6,)), None, axis=1, eps=1e-6)
        n = b.conv2d(n, b.weight("neck.w2", (6, 3, 3, 3)), None, padding=1, groups=2)
    with b.scope("up"):
        u = b.conv_transpose2d(n, b.weight("up.w", (6, 4, 2, 2)), b.weight("up.b", (4,)),
                               stride=2)
        u = b.gelu(u, approximate="tanh")
        p = b.max_pool2d(u, kernel=2)
        p2 = b.max_pool2d(u, kernel=3, stride=2, padding=1)
        r = b.resize_bilinear(p, size=(8, 8), align_corners=False)
    b.output(b.softmax(b.reshape(r, shape=(1, 4, 64)), axis=-1), p2, n)
    return b.build()


# ---- passes ------------------------------------------------------------------------------


def check_pass(name: str, graph: Graph, options=None, *, rtol: float = 1e-5,
               atol: float = 1e-6, exact: bool = False, seed: int = 0) -> Graph:
    """Run the registered pass `name` on `graph` and check what every pass must keep.

    The input graph is untouched (passes build new graphs), the result verifies
    and survives a text round trip, and both graphs compute the same outputs on
    random inputs and weights with the reference interpreter (bit-identical if
    `exact`). Returns the new graph so the caller can check what changed.
    """
    from rlx.passes import PassOptions
    from rlx.passes.registry import get_pass

    before = print_graph(graph)
    new = get_pass(name)(graph, options or PassOptions())
    assert print_graph(graph) == before, f"pass {name} mutated its input graph"
    verify(new)
    text = print_graph(new)
    assert print_graph(parse(text)) == text
    ins, ws = random_inputs(graph, seed), random_weights(graph, seed + 1)
    want = run_graph(graph, ins, ws)
    got = run_graph(new, ins, ws)
    assert len(got) == len(want)
    for i, (g_, w_) in enumerate(zip(got, want)):
        assert g_.shape == w_.shape and g_.dtype == w_.dtype, f"{name}: output {i}"
        if exact:
            np.testing.assert_array_equal(g_, w_, err_msg=f"{name}: output {i}")
        else:
            np.testing.assert_allclose(g_, w_, rtol=rtol, atol=atol,
                                       err_msg=f"{name}: output {i}")
    return new
