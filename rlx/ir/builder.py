"""The builder API model code and passes use to emit graphs.

``b.conv2d(x, w, bias, stride=16)`` looks the op up in the registry, brings
the attributes to canonical form, infers the result type and appends a node.
A shape or attribute problem is raised right there, naming the op, the input
types and the line of model code that made the call, so a wrong reshape in a
40-block encoder points at its source line rather than at a later crash.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from typing import Iterator, Sequence

import numpy as np

from rlx.errors import AttributeSchemaError, ShapeError, UnknownOpError, VerifyError
from rlx.ir.graph import INPUT, RESULT, WEIGHT, Graph, Node, Value
from rlx.ir.ops import get_op
from rlx.ir.types import TensorType

_RLX_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


def _caller() -> str:
    """file:line of the first frame outside the rlx package (the model code)."""
    frame = sys._getframe(1)
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        if not path.startswith(_RLX_DIR + os.sep):
            return f"{os.path.relpath(path)}:{frame.f_lineno}"
        frame = frame.f_back
    return "<unknown>"


def _lookup(name: str):
    try:
        return get_op(name)
    except AttributeSchemaError as e:
        raise AttributeSchemaError(f"{e} (at {_caller()})") from None


class GraphBuilder:
    """Appends nodes to a graph in order (which is therefore topological)."""

    def __init__(self, name: str = "main", graph: Graph | None = None):
        self.graph = graph if graph is not None else Graph(name)
        # Weights (@name) and other values (%name) are separate namespaces.
        self._names: set[str] = {v.name for v in self.graph.all_values() if v.kind != WEIGHT}
        self._counters: dict[str, int] = {}
        self._scope: list[str] = []

    # ---- naming -------------------------------------------------------------

    @contextlib.contextmanager
    def scope(self, prefix: str) -> Iterator[None]:
        """Name results ``prefix.op`` inside the block (nests with dots)."""
        self._scope.append(prefix)
        try:
            yield
        finally:
            self._scope.pop()

    def fresh(self, hint: str) -> str:
        base = ".".join(self._scope + [hint]) if self._scope else hint
        if not NAME_RE.match(base):
            raise AttributeSchemaError(f"invalid value name {base!r}")
        if base not in self._names:
            self._names.add(base)
            return base
        n = self._counters.get(base, 0)
        while True:
            n += 1
            cand = f"{base}_{n}"
            if cand not in self._names:
                self._counters[base] = n
                self._names.add(cand)
                return cand

    # ---- graph interface ----------------------------------------------------

    def input(self, name: str, shape: Sequence[int], dtype: str = "f32") -> Value:
        if name in self._names:
            raise VerifyError(f"name {name!r} already used in graph {self.graph.name}")
        if not NAME_RE.match(name):
            raise AttributeSchemaError(f"invalid input name {name!r}")
        v = Value(name, TensorType(tuple(shape), dtype), INPUT)
        self._names.add(name)
        self.graph.inputs.append(v)
        return v

    def weight(self, name: str, shape: Sequence[int], dtype: str = "f32") -> Value:
        """Declare (or look up) a weight bound by name at run time."""
        t = TensorType(tuple(shape), dtype)
        existing = self.graph.weights.get(name)
        if existing is not None:
            if existing.type != t:
                raise ShapeError(f"weight @{name} declared as {existing.type} and as {t} "
                                 f"(at {_caller()})")
            return existing
        if not NAME_RE.match(name):
            raise AttributeSchemaError(f"invalid weight name {name!r}")
        v = Value(name, t, WEIGHT)
        self.graph.weights[name] = v
        return v

    def output(self, *values: Value) -> None:
        self.graph.outputs.extend(values)

    def build(self, verify: bool = True) -> Graph:
        if verify:
            from rlx.ir.verifier import verify as run_verify

            run_verify(self.graph)
        return self.graph

    # ---- emitting ops -------------------------------------------------------

    def const(self, value: float, dtype: str = "f32", shape=()) -> Value:
        return self.op("const", value=value, dtype=dtype, shape=shape)

    def _as_value(self, x, like: Value | None) -> Value | None:
        if x is None or isinstance(x, Value):
            return x
        if isinstance(x, (int, float, np.floating, np.integer)) and not isinstance(x, bool):
            return self.const(float(x), like.dtype if like is not None else "f32")
        raise ShapeError(f"cannot use {type(x).__name__} {x!r} as an op input (at {_caller()})")

    def op(self, name: str, *inputs, body: Graph | None = None, out_names=None, **attrs):
        """Emit one op; returns its Value (or a tuple for multi-output ops)."""
        opdef = _lookup(name)
        like = next((v for v in inputs if isinstance(v, Value)), None)
        values = [self._as_value(x, like) for x in inputs]
        return self.emit(opdef.name, values, attrs, body=body, out_names=out_names)

    def emit(self, name: str, inputs: list, attrs: dict, body: Graph | None = None,
             out_names: Sequence[str] | None = None, canonical: bool = False):
        """Low-level emission used by `op` and by passes (inputs already Values)."""
        opdef = get_op(name)
        try:
            opdef.check_arity(len(inputs))
            if not opdef.variadic:
                inputs = list(inputs) + [None] * (len(opdef.inputs) - len(inputs))
            for i, v in enumerate(inputs):
                if v is None and (opdef.variadic or not opdef.inputs[i].endswith("?")):
                    raise ShapeError(f"{name}: input {opdef.inputs[min(i, len(opdef.inputs) - 1)]}"
                                     f" is required")
            types = [v.type if v is not None else None for v in inputs]
            cattrs = dict(attrs) if canonical else opdef.canonical_attrs(attrs, types)
            out_types = opdef.infer_types(types, cattrs, body)
            if out_names is not None and len(out_names) != len(out_types):
                raise ShapeError(f"{name} produces {len(out_types)} results, "
                                 f"{len(out_names)} names given")
        except (ShapeError, AttributeSchemaError) as e:
            raise type(e)(f"{e} (at {_caller()})") from None
        node = Node(name, inputs, cattrs, body=body)
        hints = list(out_names) if out_names else [name] * len(out_types)
        node.outputs = [Value(self.fresh(h), t, RESULT, node, i)
                        for i, (h, t) in enumerate(zip(hints, out_types))]
        self.graph.nodes.append(node)
        return node.outputs[0] if len(node.outputs) == 1 else tuple(node.outputs)

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            _lookup(name)  # a clear error for unknown ops, naming the calling line
        except AttributeSchemaError as e:
            raise UnknownOpError(str(e)) from None

        def emit_op(*inputs, **attrs):
            return self.op(name, *inputs, **attrs)

        emit_op.__name__ = name
        return emit_op

    # ---- conveniences (expressed with registry ops) -------------------------

    def slice_axis(self, x: Value, axis: int, start: int, end: int, step: int = 1) -> Value:
        axis %= x.type.rank
        starts = [0] * x.type.rank
        ends = list(x.shape)
        steps = [1] * x.type.rank
        starts[axis], ends[axis], steps[axis] = start, end, step
        return self.op("slice", x, starts=starts, ends=ends, steps=steps)

    def permute(self, x: Value, *perm: int) -> Value:
        return self.op("transpose", x, perm=perm)
