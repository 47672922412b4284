"""Elementwise ops: reference semantics against torch (float64) or the math module.

Also checks each op's scalar decomposition (what code generators compile)
against its reference, using only the primitive scalar operations.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rlx.ir.ops import OPS
from rlx.ir.ops.elementwise import PRIMITIVES
from tests.support.opcheck import NumpyPrimitives, assert_close, covers, rand, run_op

RNG = np.random.default_rng(1234)


def _t(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


# op -> (torch function, input domain)
UNARY = {
    "neg": (torch.neg, "any"),
    "abs": (torch.abs, "any"),
    "exp": (torch.exp, "any"),
    "log": (torch.log, "positive"),
    "sqrt": (torch.sqrt, "positive"),
    "rsqrt": (torch.rsqrt, "positive"),
    "reciprocal": (torch.reciprocal, "nonzero"),
    "sin": (torch.sin, "any"),
    "cos": (torch.cos, "any"),
    "tanh": (torch.tanh, "any"),
    "erf": (torch.erf, "any"),
    "sigmoid": (torch.sigmoid, "any"),
    "relu": (torch.relu, "any"),
}


def _domain(kind, shape, dtype):
    x = rand(RNG, shape, np.float64, 3.0)
    if kind == "positive":
        x = np.abs(x) + 0.05
    elif kind == "nonzero":
        x = np.where(np.abs(x) < 0.05, 0.5, x)
    return np.asarray(x).astype(dtype)


@covers(*UNARY)
@pytest.mark.parametrize("op", sorted(UNARY))
@pytest.mark.parametrize("dtype,rtol", [(np.float32, 2e-6), (np.float64, 1e-13)])
@pytest.mark.parametrize("shape", [(3, 5, 7), (1,), ()])
def test_unary_matches_torch(op, dtype, rtol, shape):
    fn, kind = UNARY[op]
    x = _domain(kind, shape, dtype)
    got = run_op(op, x)
    want = fn(_t(x)).numpy()
    assert_close(got, want, rtol=rtol, atol=rtol * 1e-3, what=op)


@covers("neg", "exp", "relu")
def test_unary_on_empty_and_special_values():
    assert run_op("exp", np.zeros((0, 3), np.float32)).shape == (0, 3)
    x = np.array([np.inf, -np.inf, np.nan, -0.0], np.float32)
    np.testing.assert_array_equal(run_op("relu", x)[:2], [np.inf, 0.0])
    assert np.isnan(run_op("exp", x)[2])
    assert np.signbit(run_op("neg", np.array([0.0], np.float32)))[0]


@covers("erf")
def test_erf_is_accurate_in_float64_over_the_whole_range():
    x = np.concatenate([np.linspace(-7, 7, 2801), [0.0, 1e-300, -1e-10, 0.84375, 1.25,
                                                    1 / 0.35, 5.999, 6.0, 27.0, 40.0]])
    got = run_op("erf", x)
    want = np.array([math.erf(v) for v in x])
    assert_close(got, want, rtol=1e-15, atol=1e-300)
    nan_inf = run_op("erf", np.array([np.nan, np.inf, -np.inf]))
    assert np.isnan(nan_inf[0]) and nan_inf[1] == 1.0 and nan_inf[2] == -1.0


@covers("gelu")
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_both_variants_match_torch(approximate):
    x = rand(RNG, (4, 257), np.float32, 3.0)
    got = run_op("gelu", x, approximate=approximate)
    want = F.gelu(_t(x), approximate=approximate).numpy()
    assert_close(got, want, rtol=2e-6, atol=1e-7, what=approximate)


@covers("gelu")
def test_exact_gelu_keeps_digits_for_very_negative_inputs():
    # x * Phi(x) = x/2 * erfc(-x/sqrt2): no cancellation when computed with erfc.
    x = np.array([-3.0, -6.0, -9.0, -12.0, -20.0, -37.0, -40.0, 0.5, 8.0])
    got = run_op("gelu", x)
    want = np.array([v * 0.5 * math.erfc(-v / math.sqrt(2)) for v in x])
    assert_close(got, want, rtol=1e-12, atol=0.0)
    assert got[4] < 0  # not flushed to zero (f64 1 + erf(x) would give exactly 0)


BINARY = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
    "maximum": np.maximum, "minimum": np.minimum, "pow": np.power,
}
COMPARE = {"greater": np.greater, "less": np.less, "equal": np.equal}


@covers(*BINARY)
@pytest.mark.parametrize("op", sorted(BINARY))
@pytest.mark.parametrize("sa,sb", [((3, 4), (3, 4)), ((2, 1, 4), (3, 1)), ((), (5,)),
                                   ((1, 1), (1,)), ((0, 3), (1, 3))])
def test_binary_broadcasting_matches_torch(op, sa, sb):
    a = rand(RNG, sa, np.float32)
    b = rand(RNG, sb, np.float32)
    if op == "pow":
        a = np.asarray(np.abs(a) + 0.1, np.float32)
    if op == "div":
        b = np.where(np.abs(b) < 0.1, 0.7, b).astype(np.float32)
    got = run_op(op, a, b)
    tfn = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div,
           "maximum": torch.maximum, "minimum": torch.minimum, "pow": torch.pow}[op]
    assert_close(got, tfn(_t(a), _t(b)).numpy(), rtol=3e-6, atol=1e-6, what=op)
    assert got.dtype == np.float32


@covers("add", "sub", "mul", "maximum")
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_integer_arithmetic_stays_integer(dtype):
    a = RNG.integers(-50, 50, (4, 3)).astype(dtype)
    b = RNG.integers(-50, 50, (3,)).astype(dtype)
    for op, fn in (("add", np.add), ("sub", np.subtract), ("mul", np.multiply),
                   ("maximum", np.maximum)):
        got = run_op(op, a, b)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, fn(a.astype(np.int64), b.astype(np.int64)))


@covers(*COMPARE)
@pytest.mark.parametrize("op", sorted(COMPARE))
def test_comparisons_give_bool(op):
    a = RNG.integers(0, 3, (4, 5)).astype(np.float32)
    b = RNG.integers(0, 3, (5,)).astype(np.float32)
    got = run_op(op, a, b)
    tfn = {"greater": torch.gt, "less": torch.lt, "equal": torch.eq}[op]
    assert got.dtype == np.bool_
    np.testing.assert_array_equal(got, tfn(_t(a), _t(b)).numpy())


@covers("where")
def test_where_broadcasts_all_three_operands():
    c = RNG.random((2, 1, 4)) < 0.5
    a = rand(RNG, (3, 1), np.float32)
    b = rand(RNG, (4,), np.float32)
    got = run_op("where", c, a, b)
    np.testing.assert_array_equal(got, torch.where(torch.from_numpy(c), torch.from_numpy(a),
                                                   torch.from_numpy(b)).numpy())
    assert got.shape == (2, 3, 4)


@covers("cast")
@pytest.mark.parametrize("src,dst", [("f32", "i32"), ("f32", "i64"), ("f32", "f16"),
                                     ("f32", "bool"), ("bool", "f32"), ("i64", "f64"),
                                     ("f64", "f32"), ("i32", "i64")])
def test_cast_matches_torch(src, dst):
    tdt = {"f32": torch.float32, "f64": torch.float64, "f16": torch.float16,
           "i32": torch.int32, "i64": torch.int64, "bool": torch.bool}
    x = torch.tensor([-2.7, -1.0, -0.5, 0.0, 0.4, 1.5, 3.9, 100.25]).to(tdt[src])
    got = run_op("cast", x.numpy(), dtype=dst)
    np.testing.assert_array_equal(got, x.to(tdt[dst]).numpy())


@covers("const")
@pytest.mark.parametrize("value,dtype,shape", [(1.5, "f32", ()), (-3.0, "i64", (2, 3)),
                                               (0.0, "bool", (1,)), (1.0, "bool", (4, 0)),
                                               (2.25, "f64", (3,))])
def test_const(value, dtype, shape):
    got = run_op("const", value=value, dtype=dtype, shape=shape)
    want = np.full(shape, value, dtype=dtype.replace("f", "float").replace("i", "int")
                   if dtype != "bool" else bool)
    assert got.shape == tuple(shape) and got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


# ---- the scalar decompositions code generators compile --------------------------------

ELEMENTWISE = sorted(name for name, op in OPS.items() if "scalar" in op.extra)


def test_every_elementwise_op_has_a_scalar_decomposition():
    missing = [n for n, op in OPS.items() if op.category == "elementwise"
               and "scalar" not in op.extra]
    assert not missing, f"elementwise ops without a scalar decomposition: {missing}"
    assert {"add", "exp", "erf", "select", "cast"} <= PRIMITIVES


@pytest.mark.parametrize("op", ELEMENTWISE)
def test_scalar_decomposition_agrees_with_reference(op):
    opdef = OPS[op]
    n = opdef.input_arity()[0]
    attr_sets = [{"approximate": "none"}, {"approximate": "tanh"}] if op == "gelu" else [{}]
    if op == "cast":
        attr_sets = [{"dtype": "i32"}, {"dtype": "f64"}]
    if op == "const":
        attr_sets = [{"value": 2.5, "dtype": "f32", "shape": ()},
                     {"value": 3.0, "dtype": "i64", "shape": ()}]
    for attrs in attr_sets:
        if op == "where":
            args = [RNG.random(64) < 0.5, rand(RNG, 64, np.float64), rand(RNG, 64, np.float64)]
        else:
            args = [np.abs(rand(RNG, 64, np.float64, 2.0)) + 0.1 for _ in range(n)]
        full = {**{k: a.default for k, a in opdef.attrs.items()}, **attrs}
        want = opdef.evaluate(args, full)[0]
        got = np.asarray(opdef.extra["scalar"](NumpyPrimitives(), *args, full))
        got = np.broadcast_to(got, np.shape(want))
        if want.dtype == np.bool_:
            np.testing.assert_array_equal(got, want)
        else:
            assert_close(got, want, rtol=1e-12, atol=1e-14, what=f"{op} {attrs}")
