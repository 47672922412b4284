"""Bad input to every op: a ShapeError (or AttributeSchemaError) naming the op, every
input type, and the line of the calling code.

`BAD` has at least one case per registered op (the coverage meta-test checks
that). Each case is a one-line lambda, so the line the builder blames is the
lambda's own line.
"""

from __future__ import annotations

import os
import re

import pytest

from rlx.errors import AttributeSchemaError, RlxError, ShapeError
from rlx.ir import GraphBuilder, TensorType

S, A = ShapeError, AttributeSchemaError


def _body():
    g = GraphBuilder("body")
    g.output(g.neg(g.input("x", (2, 3))))
    return g.build()


# (op, emit(b), error type). Inputs are created inside the lambda via b.input.
BAD = [
    ("neg", lambda b: b.neg(b.input("x", (2,), "i32")), S),
    ("abs", lambda b: b.abs(b.input("x", (2,), "bool")), S),
    ("exp", lambda b: b.exp(b.input("x", (2,), "i64")), S),
    ("log", lambda b: b.log(b.input("x", (3,), "i32")), S),
    ("sqrt", lambda b: b.sqrt(b.input("x", (3,), "i32")), S),
    ("rsqrt", lambda b: b.rsqrt(b.input("x", (3,), "i32")), S),
    ("reciprocal", lambda b: b.reciprocal(b.input("x", (3,), "i32")), S),
    ("sin", lambda b: b.sin(b.input("x", (3,), "i32")), S),
    ("cos", lambda b: b.cos(b.input("x", (3,), "i32")), S),
    ("tanh", lambda b: b.tanh(b.input("x", (3,), "i32")), S),
    ("erf", lambda b: b.erf(b.input("x", (3,), "i32")), S),
    ("sigmoid", lambda b: b.sigmoid(b.input("x", (3,), "i32")), S),
    ("relu", lambda b: b.relu(b.input("x", (3,), "bool")), S),
    ("gelu", lambda b: b.gelu(b.input("x", (3,)), approximate="erf"), A),
    ("gelu", lambda b: b.gelu(b.input("x", (3,), "i64")), S),
    ("add", lambda b: b.add(b.input("a", (2, 3)), b.input("b", (4,))), S),
    ("add", lambda b: b.add(b.input("a", (2, 3)), b.input("b", (3,), "f64")), S),
    ("sub", lambda b: b.sub(b.input("a", (2, 3)), b.input("b", (2,))), S),
    ("mul", lambda b: b.mul(b.input("a", (5, 1, 3)), b.input("b", (2, 4))), S),
    ("div", lambda b: b.div(b.input("a", (2, 3)), b.input("b", (3, 2))), S),
    ("maximum", lambda b: b.maximum(b.input("a", (2,)), b.input("b", (3,))), S),
    ("minimum", lambda b: b.minimum(b.input("a", (2,)), b.input("b", (3,))), S),
    ("pow", lambda b: b.pow(b.input("a", (2,)), b.input("b", (3,))), S),
    ("greater", lambda b: b.greater(b.input("a", (2,)), b.input("b", (3,))), S),
    ("less", lambda b: b.less(b.input("a", (2,)), b.input("b", (2,), "i32")), S),
    ("equal", lambda b: b.equal(b.input("a", (2, 2)), b.input("b", (3, 1))), S),
    ("where", lambda b: b.where(b.input("c", (2, 1), "bool"), b.input("a", (2, 3)), b.input("b", (4, 3))), S),
    ("where", lambda b: b.where(b.input("c", (2,)), b.input("a", (2,)), b.input("b", (2,))), S),
    ("cast", lambda b: b.cast(b.input("x", (2,)), dtype="f8"), A),
    ("const", lambda b: b.const(1.0, "f32", (2, -1)), S),
    ("const", lambda b: b.op("const", value="one"), A),
    ("matmul", lambda b: b.matmul(b.input("a", (2, 3)), b.input("b", (4, 5))), S),
    ("matmul", lambda b: b.matmul(b.input("a", (2, 3, 4)), b.input("b", (3, 4, 5))), S),
    ("matmul", lambda b: b.matmul(b.input("a", (3,)), b.input("b", (3, 2))), S),
    ("matmul", lambda b: b.matmul(b.input("a", (2, 3)), b.input("b", (2, 4)), transpose_b=True), S),
    ("linear", lambda b: b.linear(b.input("x", (2, 3)), b.weight("w", (4, 5))), S),
    ("linear", lambda b: b.linear(b.input("x", ()), b.weight("w", (4, 1))), S),
    ("linear", lambda b: b.linear(b.input("x", (2, 3), "f16"), b.weight("w", (4, 3))), S),
    ("linear", lambda b: b.linear(b.input("x", (2, 5)), b.weight("w", (4, 5)), b.weight("b", (5,))), S),
    ("attention", lambda b: b.attention(b.input("q", (1, 4, 8)), b.input("k", (1, 5, 6)), b.input("v", (1, 5, 8)), scale=1.0), S),
    ("attention", lambda b: b.attention(b.input("q", (1, 4, 8)), b.input("k", (1, 5, 8)), b.input("v", (1, 6, 8)), scale=1.0), S),
    ("attention", lambda b: b.attention(b.input("q", (1, 4, 8)), b.input("k", (1, 6, 8)), b.input("v", (1, 6, 8)), b.input("rh", (1, 4, 2)), b.input("rw", (1, 4, 2)), scale=1.0), S),
    ("attention", lambda b: b.attention(b.input("q", (1, 4, 8)), b.input("k", (1, 0, 8)), b.input("v", (1, 0, 8)), scale=1.0), S),
    ("attention", lambda b: b.attention(b.input("q", (1, 4, 8)), b.input("k", (1, 4, 8), "f64"), b.input("v", (1, 4, 8)), scale=1.0), S),
    ("attention", lambda b: b.attention(b.input("q", (1, 4, 8)), b.input("k", (1, 4, 8)), b.input("v", (1, 4, 8))), A),
    ("conv2d", lambda b: b.conv2d(b.input("x", (1, 3, 8, 8)), b.weight("w", (4, 2, 3, 3))), S),
    ("conv2d", lambda b: b.conv2d(b.input("x", (1, 3, 2, 2)), b.weight("w", (4, 3, 3, 3))), S),
    ("conv2d", lambda b: b.conv2d(b.input("x", (1, 3, 8, 8)), b.weight("w", (4, 3, 3, 3)), b.weight("b", (3,))), S),
    ("conv2d", lambda b: b.conv2d(b.input("x", (1, 3, 8, 8)), b.weight("w", (4, 3, 3, 3)), stride=0), S),
    ("conv2d", lambda b: b.conv2d(b.input("x", (1, 3, 8, 8)), b.weight("w", (4, 3, 3, 3)), stride=(1, 2, 3)), S),
    ("conv2d", lambda b: b.conv2d(b.input("x", (1, 4, 8, 8)), b.weight("w", (6, 2, 3, 3)), groups=0), S),
    ("conv2d", lambda b: b.conv2d(b.input("x", (3, 8, 8)), b.weight("w", (4, 3, 3, 3))), S),
    ("conv2d", lambda b: b.conv2d(b.input("x", (1, 3, 8, 8)), b.weight("w", (4, 3, 3, 3), "f64")), S),
    ("conv_transpose2d", lambda b: b.conv_transpose2d(b.input("x", (1, 3, 4, 4)), b.weight("w", (4, 3, 2, 2))), S),
    ("conv_transpose2d", lambda b: b.conv_transpose2d(b.input("x", (1, 3, 4, 4)), b.weight("w", (3, 2, 2, 2)), b.weight("b", (2,), "f16")), S),
    ("conv_transpose2d", lambda b: b.conv_transpose2d(b.input("x", (1, 3, 4, 4)), b.weight("w", (3, 2, 2, 2)), stride=2, output_padding=2), S),
    ("conv_transpose2d", lambda b: b.conv_transpose2d(b.input("x", (1, 3, 4, 4)), b.weight("w", (3, 2, 2, 2)), groups=0), S),
    ("conv_transpose2d", lambda b: b.conv_transpose2d(b.input("x", (1, 3, 4, 4)), b.weight("w", (3, 2, 2, 2)), stride=0), S),
    ("conv_transpose2d", lambda b: b.conv_transpose2d(b.input("x", (1, 2, 1, 1)), b.weight("w", (2, 2, 1, 1)), padding=1), S),
    ("im2col", lambda b: b.im2col(b.input("x", (1, 2, 2, 2)), kernel=3), S),
    ("im2col", lambda b: b.im2col(b.input("x", (1, 2, 5, 5)), kernel=2, stride=0), S),
    ("im2col", lambda b: b.im2col(b.input("x", (1, 2, 5, 5))), A),
    ("max_pool2d", lambda b: b.max_pool2d(b.input("x", (1, 1, 4, 4)), kernel=2, padding=2), S),
    ("max_pool2d", lambda b: b.max_pool2d(b.input("x", (1, 1, 2, 2)), kernel=3), S),
    ("max_pool2d", lambda b: b.max_pool2d(b.input("x", (1, 1, 4, 4)), kernel=2, stride=0), S),
    ("max_pool2d", lambda b: b.max_pool2d(b.input("x", (1, 4, 4)), kernel=2), S),
    ("resize_bilinear", lambda b: b.resize_bilinear(b.input("x", (1, 1, 4, 4)), size=(0, 3)), S),
    ("resize_bilinear", lambda b: b.resize_bilinear(b.input("x", (4, 4)), size=(2, 2)), S),
    ("resize_bicubic", lambda b: b.resize_bicubic(b.input("x", (1, 1, 4, 4)), size=(3, 0)), S),
    ("resize_bicubic", lambda b: b.resize_bicubic(b.input("x", (1, 1, 4, 4), "i32"), size=(2, 2)), S),
    ("layer_norm", lambda b: b.layer_norm(b.input("x", (2, 8)), b.weight("w", (4,))), S),
    ("layer_norm", lambda b: b.layer_norm(b.input("x", (2, 8)), axis=2), S),
    ("layer_norm", lambda b: b.layer_norm(b.input("x", (2, 8), "i32")), S),
    ("layer_norm", lambda b: b.layer_norm(b.input("x", (2, 8)), b.weight("w", (8,), "f64")), S),
    ("softmax", lambda b: b.softmax(b.input("x", (2, 3)), axis=-3), S),
    ("softmax", lambda b: b.softmax(b.input("x", (2, 3)), axis=1.5), A),
    ("reduce_sum", lambda b: b.reduce_sum(b.input("x", (2, 3)), axes=(2,)), S),
    ("reduce_mean", lambda b: b.reduce_mean(b.input("x", (2, 3)), axes=(0, -3)), S),
    ("reduce_max", lambda b: b.reduce_max(b.input("x", (2, 0)), axes=(1,)), S),
    ("reduce_max", lambda b: b.reduce_max(b.input("x", (2, 3)), keepdims=1), A),
    ("reshape", lambda b: b.reshape(b.input("x", (2, 3)), shape=(4, 2)), S),
    ("reshape", lambda b: b.reshape(b.input("x", (2, 3)), shape=(-1, -1)), S),
    ("reshape", lambda b: b.reshape(b.input("x", (2, 3)), shape=(-1, 4)), S),
    ("reshape", lambda b: b.reshape(b.input("x", (2, 3)), shape=(-2, -3)), S),
    ("reshape", lambda b: b.reshape(b.input("x", (2, 3))), A),
    ("transpose", lambda b: b.transpose(b.input("x", (2, 3)), perm=(0, 0)), S),
    ("transpose", lambda b: b.transpose(b.input("x", (2, 3)), perm=(0, 1, 2)), S),
    ("pad", lambda b: b.pad(b.input("x", (2, 3)), pads=(1, 1)), S),
    ("pad", lambda b: b.pad(b.input("x", (2, 3)), pads=(0, 0, -1, 0)), S),
    ("slice", lambda b: b.slice(b.input("x", (2, 3)), starts=(0,), ends=(1,)), S),
    ("slice", lambda b: b.slice(b.input("x", (2, 3)), steps=(1, 0)), S),
    ("slice", lambda b: b.slice(b.input("x", (2, 3)), steps=(1, -1)), S),
    ("concat", lambda b: b.concat(b.input("a", (2, 3)), b.input("b", (3, 3)), axis=1), S),
    ("concat", lambda b: b.concat(b.input("a", (2, 3)), b.input("b", (2, 3), "f64"), axis=0), S),
    ("concat", lambda b: b.concat(b.input("a", (2, 3)), b.input("b", (2, 3)), axis=2), S),
    ("concat", lambda b: b.concat(axis=0), S),
    ("broadcast_to", lambda b: b.broadcast_to(b.input("x", (2, 3)), shape=(3, 3)), S),
    ("broadcast_to", lambda b: b.broadcast_to(b.input("x", (2, 3)), shape=(3,)), S),
    ("window_partition", lambda b: b.window_partition(b.input("x", (1, 8, 8)), window=4), S),
    ("window_partition", lambda b: b.window_partition(b.input("x", (1, 8, 8, 2)), window=0), S),
    ("window_unpartition", lambda b: b.window_unpartition(b.input("x", (3, 4, 4, 2)), window=4, height=5, width=5), S),
    ("window_unpartition", lambda b: b.window_unpartition(b.input("x", (4, 4, 3, 2)), window=4, height=8, width=8), S),
    ("window_unpartition", lambda b: b.window_unpartition(b.input("x", (0, 0, 0, 2)), window=0, height=8, width=8), S),
    ("window_unpartition", lambda b: b.window_unpartition(b.input("x", (1, 4, 4, 2)), window=4, height=0, width=4), S),
    ("gather", lambda b: b.gather(b.input("t", (5, 3)), b.input("i", (2,)), axis=0), S),
    ("gather", lambda b: b.gather(b.input("t", (5, 3)), b.input("i", (2,), "i64"), axis=2), S),
    ("gather", lambda b: b.gather(b.input("t", (5, 3)), b.input("i", (2,), "i64"), axis=-3), S),
    ("gather", lambda b: b.gather(b.input("t", ()), b.input("i", (2,), "i64"), axis=0), S),
    ("gather", lambda b: b.gather(b.input("t", (5, 3)), b.input("i", (2,), "i64"), axis=1.0), A),
    ("transpose", lambda b: b.transpose(b.input("x", (2, 3)), perm=(1, 0.0)), A),
    ("window_partition", lambda b: b.window_partition(b.input("x", (1, 8, 8, 2)), window=4.0), A),
    ("arange", lambda b: b.arange(stop=5, step=0), S),
    ("arange", lambda b: b.arange(stop=5, dtype="f16"), A),
    ("fused", lambda b: b.fused(b.input("x", (2, 3)), kind="elementwise"), S),
    ("fused", lambda b: b.fused(b.input("x", (3, 2)), kind="elementwise", body=_body()), S),
    ("fused", lambda b: b.fused(b.input("x", (2, 3)), kind="magic", body=_body()), A),
]

_AT = re.compile(r"\(at (?P<file>[^():]+):(?P<line>\d+)\)$")


@pytest.mark.parametrize("op,emit,error", BAD, ids=[f"{c[0]}-{i}" for i, c in enumerate(BAD)])
def test_bad_input_names_op_types_and_source_line(op, emit, error):
    b = GraphBuilder("bad")
    with pytest.raises(error) as info:
        emit(b)
    msg = str(info.value)
    assert msg.startswith(f"{op}:"), msg
    if error is ShapeError:
        node_inputs = [v for v in b.graph.inputs] + list(b.graph.weights.values())
        for v in node_inputs:
            assert str(v.type) in msg, f"{msg!r} does not show input type {v.type}"
    m = _AT.search(msg)
    assert m, f"no source location in {msg!r}"
    assert os.path.basename(m["file"]) == "test_shape_errors.py"
    assert int(m["line"]) == emit.__code__.co_firstlineno
    assert not b.graph.nodes or b.graph.nodes[-1].op != op, "a failed op must not be appended"


def test_error_points_at_model_code_not_at_rlx_internals():
    """The location is the first frame outside rlx, through helper layers of model code."""
    def block(b, x):
        return b.reshape(x, shape=(7, 7))  # <- this line is blamed

    b = GraphBuilder()
    x = b.input("x", (2, 3))
    with pytest.raises(ShapeError) as info:
        block(b, x)
    assert f"test_shape_errors.py:{block.__code__.co_firstlineno + 1})" in str(info.value)
    assert "reshape: target [7, 7] has 49 elements, input has 6" in str(info.value)


def test_unknown_op_from_the_builder_names_the_source_line():
    b = GraphBuilder()
    x = b.input("x", (2,))
    with pytest.raises(RlxError, match=r"unknown op 'frobnicate'.*test_shape_errors\.py:\d+"):
        b.frobnicate(x)
    with pytest.raises(RlxError, match=r"unknown op 'frobnicate'.*test_shape_errors\.py:\d+"):
        b.op("frobnicate", x)


def test_unknown_op_is_a_missing_attribute_for_hasattr_and_getattr():
    b = GraphBuilder()
    assert not hasattr(b, "frobnicate")
    assert getattr(b, "frobnicate", None) is None
    assert hasattr(b, "add") and callable(getattr(b, "add"))
    with pytest.raises(AttributeError, match=r"unknown op 'frobnicate'"):
        b.frobnicate


def test_weight_declared_twice_with_different_shapes():
    b = GraphBuilder()
    b.weight("w", (2, 3))
    assert b.weight("w", (2, 3)) is b.graph.weights["w"]
    with pytest.raises(ShapeError, match=r"@w declared as f32\[2,3\] and as f32\[3,2\]"):
        b.weight("w", (3, 2))


def test_builder_rejects_bad_names_and_operands():
    b = GraphBuilder()
    b.input("x", (2,))
    with pytest.raises(RlxError, match="already used"):
        b.input("x", (2,))
    with pytest.raises(RlxError, match="invalid input name"):
        b.input("a b", (2,))
    with pytest.raises(RlxError, match="invalid weight name"):
        b.weight("w/1", (2,))
    with pytest.raises(ShapeError, match="cannot use str"):
        b.add(b.graph.inputs[0], "one")
    with pytest.raises(ShapeError, match="input b is required"):
        b.add(b.graph.inputs[0], None)
    with pytest.raises(ShapeError, match=r"add takes 2 inputs"):
        b.add(b.graph.inputs[0])


def test_tensor_type_rules():
    assert str(TensorType((1, 3), "f16")) == "f16[1,3]"
    assert TensorType(()).numel == 1 and TensorType((0, 5)).numel == 0
    with pytest.raises(ShapeError, match="negative dimension"):
        TensorType((2, -1))
    with pytest.raises(ShapeError, match="unknown dtype 'f8'"):
        TensorType((2,), "f8")
