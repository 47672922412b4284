"""The attribute schema: a float given where an op wants an integer is an error that
names the op and the attribute, never a silent truncation (``axis=1.5`` -> 1) nor a
silent conversion (``axis=1.0``): through the builder, the parser and every op's schema."""

from __future__ import annotations

import numpy as np
import pytest

from rlx.errors import AttributeSchemaError, ParseError
from rlx.ir import GraphBuilder, parse
from rlx.ir.ops import OPS

INT_KINDS = ("int", "ints", "optional_ints")
CASES = [(op.name, name, attr.kind) for op in OPS.values()
         for name, attr in op.attrs.items() if attr.kind in INT_KINDS]


def test_the_schema_has_integer_attributes():
    assert len(CASES) > 20  # axis, perm, shape, window, stride, padding, ...


@pytest.mark.parametrize("op,name,kind", CASES, ids=[f"{o}.{n}" for o, n, _ in CASES])
@pytest.mark.parametrize("value", [2.0, 2.5, np.float32(2.0), np.float64(-1.0)], ids=repr)
def test_every_integer_attribute_rejects_floats(op, name, kind, value):
    spec = OPS[op].attrs[name]
    given = value if kind == "int" else (1, value)
    with pytest.raises(AttributeSchemaError) as info:
        spec.canonical(op, name, given)
    msg = str(info.value)
    assert msg.startswith(f"{op}: attribute {name}=") and "got a float" in msg, msg
    # whole numbers of integer types still pass, as Python or numpy integers
    ok = 2 if kind == "int" else (1, np.int64(2))
    assert spec.canonical(op, name, ok) == (2 if kind == "int" else (1, 2))


def test_builder_and_parser_reject_a_float_axis():
    b = GraphBuilder("g")
    x = b.input("x", (2, 3))
    with pytest.raises(AttributeSchemaError, match=r"softmax: attribute axis=1.0 must be an "
                                                   r"integer, got a float"):
        b.softmax(x, axis=1.0)
    text = ("graph g {\n  input %x: f32[2,3]\n  %y: f32[2,3] = softmax(%x) {axis=1.0}\n"
            "  output %y\n}\n")
    with pytest.raises(ParseError, match=r":3:.*softmax: attribute axis=1.0 must be an integer"):
        parse(text)
    assert parse(text.replace("axis=1.0", "axis=1")).nodes[0].attrs == {"axis": 1}


def test_a_float_list_where_ints_are_wanted():
    b = GraphBuilder("g")
    x = b.input("x", (1, 2, 8, 8))
    with pytest.raises(AttributeSchemaError, match=r"max_pool2d: attribute kernel=\(2.0, 2.0\) "
                                                   r"must be integers, got a float"):
        b.max_pool2d(x, kernel=(2.0, 2.0))
    with pytest.raises(AttributeSchemaError, match="reshape: attribute shape="):
        b.reshape(x, shape=np.array([2.0, 64.0]))
