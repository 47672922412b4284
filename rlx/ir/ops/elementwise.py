"""Elementwise ops: unary math, binary arithmetic with numpy broadcasting, casts, constants.

Each op also gives its *scalar* definition in terms of a handful of primitive
scalar operations (``E.add``, ``E.exp``, ``E.erf``, ...). Code generators
implement only those primitives and read composite ops (GELU, sigmoid, rsqrt)
from here, so an op's meaning is written once.

Reference semantics compute in float64 where float32 would lose accuracy
(erf-based GELU, tanh GELU) and round to the declared dtype at the end.
"""

from __future__ import annotations

import math

import numpy as np

from rlx.ir.ops.registry import Attr, define, fail
from rlx.ir.ops.special import erf as _erf, erfc_neg_safe_gelu
from rlx.ir.types import DTYPES, FLOAT_DTYPES, TensorType, broadcast_shapes

SQRT1_2 = math.sqrt(0.5)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)

#: The primitive scalar operations code generators must implement.
PRIMITIVES = frozenset({
    "add", "sub", "mul", "div", "max", "min", "pow", "neg", "abs", "exp", "log",
    "sqrt", "erf", "tanh", "sin", "cos", "lt", "gt", "le", "ge", "eq", "select", "cast",
})


def _unary_infer(op):
    def infer(ins, attrs):
        (x,) = ins
        if x.dtype not in FLOAT_DTYPES:
            fail(op, f"needs a float input, got {x.dtype}", x)
        return [x]
    return infer


def _count(ins, outs, attrs, per=1):
    return per * outs[0].numel


def _unary(name, fn, scalar, flops_per=1, doc="", attrs=None):
    def reference(ins, attrs_):
        (x,) = ins
        return [np.asarray(fn(x, attrs_)).astype(x.dtype, copy=False)]

    define(name, ["x"], attrs or {}, infer=_unary_infer(name), reference=reference,
           category="elementwise", doc=doc or f"elementwise {name}",
           flops=lambda i, o, a: _count(i, o, a, flops_per), scalar=scalar)


_unary("neg", lambda x, a: -x, lambda E, x, a: E.neg(x))
_unary("abs", lambda x, a: np.abs(x), lambda E, x, a: E.abs(x))
_unary("exp", lambda x, a: np.exp(x), lambda E, x, a: E.exp(x), 8)
_unary("log", lambda x, a: np.log(x), lambda E, x, a: E.log(x), 8)
_unary("sqrt", lambda x, a: np.sqrt(x), lambda E, x, a: E.sqrt(x), 4)
_unary("rsqrt", lambda x, a: 1.0 / np.sqrt(x.astype(np.float64)),
       lambda E, x, a: E.div(1.0, E.sqrt(x)), 5)
_unary("reciprocal", lambda x, a: 1.0 / x, lambda E, x, a: E.div(1.0, x))
_unary("sin", lambda x, a: np.sin(x), lambda E, x, a: E.sin(x), 8)
_unary("cos", lambda x, a: np.cos(x), lambda E, x, a: E.cos(x), 8)
_unary("tanh", lambda x, a: np.tanh(x), lambda E, x, a: E.tanh(x), 8)
_unary("erf", lambda x, a: _erf(x), lambda E, x, a: E.erf(x), 8)
_unary("sigmoid", lambda x, a: 1.0 / (1.0 + np.exp(-x.astype(np.float64))),
       lambda E, x, a: E.div(1.0, E.add(1.0, E.exp(E.neg(x)))), 10)
_unary("relu", lambda x, a: np.maximum(x, 0), lambda E, x, a: E.max(x, 0.0))


def _gelu_ref(x, attrs):
    if attrs["approximate"] == "tanh":
        x64 = x.astype(np.float64)
        return 0.5 * x64 * (1.0 + np.tanh(SQRT_2_OVER_PI * (x64 + 0.044715 * x64 ** 3)))
    return erfc_neg_safe_gelu(x)


def _gelu_scalar(E, x, attrs):
    if attrs["approximate"] == "tanh":
        inner = E.mul(SQRT_2_OVER_PI, E.add(x, E.mul(0.044715, E.mul(x, E.mul(x, x)))))
        return E.mul(E.mul(0.5, x), E.add(1.0, E.tanh(inner)))
    return E.mul(E.mul(0.5, x), E.add(1.0, E.erf(E.mul(x, SQRT1_2))))


_unary("gelu", _gelu_ref, _gelu_scalar, 12,
       doc="GELU: x * Phi(x) exactly (approximate='none', erf) or with the tanh formula",
       attrs={"approximate": Attr("str", "none", ("none", "tanh"))})


# ---- binary ----------------------------------------------------------------------


def _binary_infer(op, out_dtype=None):
    def infer(ins, attrs):
        a, b = ins
        if a.dtype != b.dtype:
            fail(op, f"dtypes differ: {a.dtype} vs {b.dtype}", a, b)
        try:
            shape = broadcast_shapes(a.shape, b.shape)
        except Exception:
            fail(op, "shapes do not broadcast", a, b)
        return [TensorType(shape, out_dtype or a.dtype)]
    return infer


def _binary(name, fn, scalar, out_dtype=None, doc=""):
    def reference(ins, attrs):
        a, b = ins
        r = fn(a, b)
        return [np.asarray(r).astype(DTYPES[out_dtype] if out_dtype else a.dtype, copy=False)]

    define(name, ["a", "b"], {}, infer=_binary_infer(name, out_dtype), reference=reference,
           category="elementwise", doc=doc or f"elementwise {name} with numpy broadcasting",
           flops=lambda i, o, a: o[0].numel, scalar=scalar)


_binary("add", np.add, lambda E, a, b, at: E.add(a, b))
_binary("sub", np.subtract, lambda E, a, b, at: E.sub(a, b))
_binary("mul", np.multiply, lambda E, a, b, at: E.mul(a, b))
_binary("div", np.divide, lambda E, a, b, at: E.div(a, b))
_binary("maximum", np.maximum, lambda E, a, b, at: E.max(a, b))
_binary("minimum", np.minimum, lambda E, a, b, at: E.min(a, b))
_binary("pow", np.power, lambda E, a, b, at: E.pow(a, b))
_binary("greater", np.greater, lambda E, a, b, at: E.gt(a, b), out_dtype="bool")
_binary("less", np.less, lambda E, a, b, at: E.lt(a, b), out_dtype="bool")
_binary("equal", np.equal, lambda E, a, b, at: E.eq(a, b), out_dtype="bool")


def _where_infer(ins, attrs):
    c, a, b = ins
    if c.dtype != "bool":
        fail("where", f"condition must be bool, got {c.dtype}", c)
    if a.dtype != b.dtype:
        fail("where", f"branch dtypes differ: {a.dtype} vs {b.dtype}", a, b)
    return [TensorType(broadcast_shapes(c.shape, a.shape, b.shape), a.dtype)]


define("where", ["cond", "a", "b"], {}, infer=_where_infer,
       reference=lambda ins, at: [np.where(*ins).astype(ins[1].dtype, copy=False)],
       category="elementwise", doc="select a where cond else b",
       flops=lambda i, o, a: o[0].numel, scalar=lambda E, c, a, b, at: E.select(c, a, b))


def _cast_infer(ins, attrs):
    return [ins[0].with_dtype(attrs["dtype"])]


define("cast", ["x"], {"dtype": Attr("str", choices=tuple(DTYPES))}, infer=_cast_infer,
       reference=lambda ins, at: [ins[0].astype(DTYPES[at["dtype"]])],
       category="elementwise", doc="convert the element type",
       flops=lambda i, o, a: 0, scalar=lambda E, x, at: E.cast(x, at["dtype"]))


def _const_infer(ins, attrs):
    return [TensorType(attrs["shape"], attrs["dtype"])]


define("const", [], {"value": Attr("float"), "dtype": Attr("str", "f32", tuple(DTYPES)),
                     "shape": Attr("ints", ())},
       infer=_const_infer,
       reference=lambda ins, at: [np.full(at["shape"], at["value"], dtype=DTYPES[at["dtype"]])],
       category="elementwise", doc="a tensor filled with one scalar (small literals only; "
       "real data is a weight)", flops=lambda i, o, a: 0,
       scalar=lambda E, at: E.cast(at["value"], at["dtype"]) if at["dtype"] != "f32"
       else at["value"])
