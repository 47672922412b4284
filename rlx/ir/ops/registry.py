"""The op registry: each op is defined once, here and in its family module.

An `OpDef` says everything the rest of rlx needs to know about an op: its
inputs, its attribute schema (with defaults and canonical forms), its shape and
dtype rule, its numpy reference semantics and its FLOP count. The builder,
printer, parser, verifier, reference interpreter and passes all read these
definitions; nothing else hard-codes an op's meaning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from rlx.errors import AttributeSchemaError, ShapeError
from rlx.ir.types import TensorType

REQUIRED = object()

# Attribute kinds and how a user-supplied value is brought to canonical form.
_ATTR_KINDS = ("int", "float", "bool", "str", "ints", "floats", "optional_float",
               "optional_ints", "any")


@dataclass(frozen=True)
class Attr:
    kind: str
    default: Any = REQUIRED
    choices: tuple | None = None
    doc: str = ""

    def canonical(self, op: str, name: str, value):
        """`value` in canonical form, or an `AttributeSchemaError` naming op and attribute.

        Integer kinds take Python or numpy integers only: a float, even a whole one
        (``axis=1.0``), is an error rather than silently truncated or converted,
        and so is a bool.
        """
        if value is None and self.kind in ("optional_float", "optional_ints", "any"):
            return None
        if _float_where_int(self.kind, value):
            raise AttributeSchemaError(
                f"{op}: attribute {name}={value!r} must be "
                f"{'an integer' if self.kind == 'int' else 'integers'}, got a float")
        try:
            if self.kind == "int":
                if not _is_int(value):
                    raise TypeError
                value = int(value)
            elif self.kind in ("float", "optional_float"):
                if isinstance(value, bool):
                    raise TypeError
                value = float(value)
            elif self.kind == "bool":
                if not isinstance(value, (bool, np.bool_)):
                    raise TypeError
                value = bool(value)
            elif self.kind == "str":
                if not isinstance(value, str):
                    raise TypeError
            elif self.kind in ("ints", "optional_ints"):
                if _is_int(value):
                    value = (int(value),)  # a scalar where a list is expected: ops expand it
                if isinstance(value, (str, bytes)) or not all(_is_int(v) for v in value):
                    raise TypeError
                value = tuple(int(v) for v in value)
            elif self.kind == "floats":
                value = tuple(float(v) for v in value)
            elif self.kind == "any":
                value = _freeze(value)
        except (TypeError, ValueError):
            raise AttributeSchemaError(
                f"{op}: attribute {name}={value!r} is not of kind {self.kind}"
            ) from None
        if self.choices is not None and value not in self.choices:
            raise AttributeSchemaError(
                f"{op}: attribute {name}={value!r} must be one of {list(self.choices)}"
            )
        return value


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _floaty(v) -> bool:
    return isinstance(v, (float, np.floating))


def _float_where_int(kind: str, value) -> bool:
    """True when an integer kind is given a float, alone or inside a sequence."""
    if kind == "int":
        return _floaty(value)
    if kind in ("ints", "optional_ints"):
        items = value if isinstance(value, (list, tuple, np.ndarray)) else [value]
        return any(_floaty(v) for v in np.asarray(items, dtype=object).ravel())
    return False


def _freeze(value):
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


@dataclass
class OpDef:
    """The single definition of an op."""

    name: str
    #: input names; a trailing "?" marks an optional input, "*" a variadic tail.
    inputs: tuple[str, ...]
    attrs: dict[str, Attr]
    infer: Callable[[list, dict], list[TensorType]]
    reference: Callable[[list, dict], list[np.ndarray]]
    category: str = "other"
    doc: str = ""
    #: FLOPs for one execution given (input types, output types, attrs).
    flops: Callable[[list, list, dict], int] | None = None
    #: canonicalize attributes once input types are known (e.g. resolve -1 in reshape).
    normalize: Callable[[list, dict], dict] | None = None
    #: for elementwise ops: True if f(0, ...) == 0 is not needed by anyone; kept for fusion rules.
    extra: dict = field(default_factory=dict)

    @property
    def variadic(self) -> bool:
        return bool(self.inputs) and self.inputs[-1].endswith("*")

    def input_arity(self) -> tuple[int, int | None]:
        required = sum(1 for n in self.inputs if not n.endswith(("?", "*")))
        if self.variadic:
            return required, None
        return required, len(self.inputs)

    def canonical_attrs(self, given: dict, input_types: Sequence[TensorType | None]) -> dict:
        unknown = set(given) - set(self.attrs)
        if unknown:
            raise AttributeSchemaError(
                f"{self.name}: unknown attribute(s) {sorted(unknown)}; "
                f"known: {sorted(self.attrs) or 'none'}"
            )
        out = {}
        for name, spec in self.attrs.items():
            if name in given:
                out[name] = spec.canonical(self.name, name, given[name])
            elif spec.default is REQUIRED:
                raise AttributeSchemaError(f"{self.name}: missing required attribute {name!r}")
            else:
                out[name] = spec.default
        if self.normalize is not None:
            try:
                out = self.normalize(list(input_types), out)
            except ShapeError as e:
                raise self._blame(e, input_types) from None
        return out

    def _blame(self, err: ShapeError, types) -> ShapeError:
        """The same error, saying which op it is and showing every input type.

        Shape rules raise with whatever types they looked at (or, from helpers such
        as `broadcast_shapes` or `TensorType`, with none and no op name); the user
        needs the op and all of its operands to find the bad call.
        """
        msg = str(err)
        cut = msg.rfind(" (inputs: ")
        if cut != -1 and msg.endswith(")"):
            msg = msg[:cut]
        if not msg.startswith(f"{self.name}:"):
            msg = f"{self.name}: {msg}"
        shown = [str(t) for t in types if t is not None]
        if shown:
            msg += f" (inputs: {', '.join(shown)})"
        return ShapeError(msg)

    # The three entry points everyone calls; ops with a body (``fused``) get it too.

    def infer_types(self, ins: list, attrs: dict, body=None) -> list[TensorType]:
        try:
            if self.extra.get("takes_body"):
                return self.infer(ins, attrs, body)
            return self.infer(ins, attrs)
        except ShapeError as e:
            raise self._blame(e, ins) from None

    def evaluate(self, ins: list, attrs: dict, body=None) -> list[np.ndarray]:
        if self.extra.get("takes_body"):
            return self.reference(ins, attrs, body)
        return self.reference(ins, attrs)

    def count_flops(self, ins: list, outs: list, attrs: dict, body=None) -> int:
        if self.flops is None:
            return 0
        if self.extra.get("takes_body"):
            return self.flops(ins, outs, attrs, body)
        return self.flops(ins, outs, attrs)

    def check_arity(self, n: int) -> None:
        lo, hi = self.input_arity()
        if n < lo or (hi is not None and n > hi):
            expected = f"{lo}" if lo == hi else f"{lo}..{hi if hi is not None else 'n'}"
            raise ShapeError(
                f"{self.name} takes {expected} inputs ({', '.join(self.inputs)}), got {n}"
            )


OPS: dict[str, OpDef] = {}


def define(name: str, inputs: Sequence[str], attrs: dict | None = None, *, infer, reference,
           category: str = "other", doc: str = "", flops=None, normalize=None, **extra) -> OpDef:
    if name in OPS:
        raise ValueError(f"op {name!r} defined twice")
    op = OpDef(name, tuple(inputs), dict(attrs or {}), infer, reference, category, doc,
               flops, normalize, dict(extra))
    OPS[name] = op
    return op


def get_op(name: str) -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        raise AttributeSchemaError(f"unknown op {name!r}") from None


def same_dtype(op: str, *types) -> None:
    """Raise a ShapeError unless all present operand types share one dtype."""
    present = [t for t in types if t is not None]
    if len({t.dtype for t in present}) > 1:
        fail(op, "operand dtypes differ: " + ", ".join(t.dtype for t in present), *present)


def fail(op: str, message: str, *types) -> None:
    """Raise a ShapeError that names the op and the types involved."""
    shown = ", ".join(str(t) for t in types if t is not None)
    raise ShapeError(f"{op}: {message}" + (f" (inputs: {shown})" if shown else ""))
