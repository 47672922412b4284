"""The graph data structure: values, nodes, graphs.

A `Graph` is a list of `Node`s in topological order over SSA `Value`s. Values
come from three places: graph inputs (``%image``), weights (``@blocks.0.attn.qkv.weight``,
bound by name at run time, never stored in the IR) and node results. Weight-only
computations that a pass folded (pre-transposed matrices, gathered position
tables) live in ``graph.derived``: nodes whose results are themselves weights,
evaluated once when weights are bound.

A node may carry a ``body`` graph (a region): fusion passes use it to hold the
ops a single kernel computes.
"""

from __future__ import annotations

import itertools
from typing import Iterable, Iterator

from rlx.errors import VerifyError
from rlx.ir.types import TensorType

INPUT, WEIGHT, RESULT = "input", "weight", "result"


class Value:
    """An SSA value. Compared by identity; the name is for people and text."""

    __slots__ = ("name", "type", "kind", "producer", "index")

    def __init__(self, name: str, type: TensorType, kind: str = RESULT, producer=None, index=0):
        self.name = name
        self.type = type
        self.kind = kind
        self.producer: Node | None = producer
        self.index = index  # which output of the producer

    @property
    def shape(self) -> tuple[int, ...]:
        return self.type.shape

    @property
    def dtype(self) -> str:
        return self.type.dtype

    @property
    def ref(self) -> str:
        """How the value is written in IR text."""
        return ("@" if self.kind == WEIGHT else "%") + self.name

    def __repr__(self) -> str:
        return f"{self.ref}: {self.type}"


class Node:
    """One op application: ``outputs = op(inputs) {attrs}`` (plus an optional body)."""

    __slots__ = ("op", "inputs", "attrs", "outputs", "body", "__weakref__")

    def __init__(self, op: str, inputs: list, attrs: dict, outputs: list[Value] | None = None,
                 body: "Graph | None" = None):
        self.op = op
        self.inputs: list[Value | None] = list(inputs)
        self.attrs: dict = dict(attrs)
        self.outputs: list[Value] = list(outputs or [])
        self.body = body

    @property
    def output(self) -> Value:
        if len(self.outputs) != 1:
            raise VerifyError(f"{self.op} has {len(self.outputs)} outputs, not one")
        return self.outputs[0]

    def present_inputs(self) -> list[Value]:
        return [v for v in self.inputs if v is not None]

    def __repr__(self) -> str:
        outs = ", ".join(v.ref for v in self.outputs)
        ins = ", ".join(v.ref if v is not None else "_" for v in self.inputs)
        return f"{outs} = {self.op}({ins})"


class Graph:
    """A named, topologically ordered graph with inputs, weights and outputs."""

    def __init__(self, name: str = "main"):
        self.name = name
        self.inputs: list[Value] = []
        self.weights: dict[str, Value] = {}
        self.derived: list[Node] = []
        self.nodes: list[Node] = []
        self.outputs: list[Value] = []

    # ---- queries -------------------------------------------------------------

    def all_values(self) -> Iterator[Value]:
        yield from self.inputs
        yield from self.weights.values()
        for node in itertools.chain(self.derived, self.nodes):
            yield from node.outputs

    def source_weights(self) -> dict[str, Value]:
        """Weights that must be supplied at bind time (not derived by a pass)."""
        derived = {v.name for n in self.derived for v in n.outputs}
        return {k: v for k, v in self.weights.items() if k not in derived}

    def users(self) -> dict[Value, list[Node]]:
        """Map each value to the nodes that read it (graph outputs not included)."""
        table: dict[Value, list[Node]] = {}
        for node in itertools.chain(self.derived, self.nodes):
            for v in node.present_inputs():
                table.setdefault(v, []).append(node)
        return table

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for node in self.nodes:
            key = node.op if node.op != "fused" else f"fused.{node.attrs.get('kind')}"
            counts[key] = counts.get(key, 0) + 1
        return counts

    def find(self, name: str) -> Value:
        for v in self.all_values():
            if v.name == name:
                return v
        raise KeyError(name)

    def __len__(self) -> int:
        return len(self.nodes)

    def __repr__(self) -> str:
        return f"<Graph {self.name}: {len(self.inputs)} inputs, {len(self.nodes)} nodes>"

    def __str__(self) -> str:
        from rlx.ir.printer import print_graph

        return print_graph(self)


def walk(nodes: Iterable[Node]) -> Iterator[Node]:
    """All nodes, recursing into bodies (outer node first)."""
    for node in nodes:
        yield node
        if node.body is not None:
            yield from walk(node.body.nodes)
