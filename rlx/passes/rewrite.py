"""Rebuilding a graph node by node: the mechanism every pass uses.

A pass never mutates its input graph; it returns a new one. That keeps the
"run before and after, compare outputs" test honest (the *before* graph is
still intact) and makes `dump_after` snapshots free. The `Rewriter` walks the
old nodes in order; for each one a pass either copies it or emits replacement
nodes through the builder and says which new values stand for the old results.
"""

from __future__ import annotations

from typing import Callable, Sequence

from rlx.ir.builder import GraphBuilder
from rlx.ir.graph import INPUT, WEIGHT, Graph, Node, Value


class Rewriter:
    def __init__(self, graph: Graph, name: str | None = None):
        self.old = graph
        new = Graph(name or graph.name)
        self.b = GraphBuilder(graph=new)
        self.vmap: dict[int, Value] = {}
        for v in graph.inputs:
            self.vmap[id(v)] = self.b.input(v.name, v.shape, v.dtype)
        derived = {id(n.output) for n in graph.derived}
        for name_, v in graph.weights.items():
            if id(v) not in derived:
                self.vmap[id(v)] = self.b.weight(name_, v.shape, v.dtype)
        for node in graph.derived:
            self.derive(node.op, [self.map(v) for v in node.inputs], node.attrs,
                        node.output.name, old=node.output)

    @property
    def graph(self) -> Graph:
        return self.b.graph

    def map(self, v: Value | None) -> Value | None:
        if v is None:
            return None
        try:
            return self.vmap[id(v)]
        except KeyError:
            raise KeyError(f"{v.ref} has no replacement yet (pass emitted out of order)") from None

    def copy(self, node: Node) -> list[Value]:
        """Emit `node` unchanged (same op, attrs, body and result names)."""
        out = self.b.emit(node.op, [self.map(v) for v in node.inputs], node.attrs, body=node.body,
                          out_names=[v.name for v in node.outputs], canonical=True)
        outs = list(out) if isinstance(out, tuple) else [out]
        self.replace(node, outs)
        return outs

    def replace(self, node: Node, values: Sequence[Value]) -> None:
        if len(values) != len(node.outputs):
            raise ValueError(f"{node.op}: {len(values)} replacements for {len(node.outputs)} results")
        for old, new in zip(node.outputs, values):
            if old.type != new.type:
                raise TypeError(f"replacement for {old.ref}: {old.type} has type {new.type}")
            self.vmap[id(old)] = new

    def derive(self, op: str, inputs: list[Value], attrs: dict, name: str,
               old: Value | None = None) -> Value:
        """Add a derived weight ``@name = op(weights...)`` (evaluated once at bind time)."""
        existing = self.graph.weights.get(name)
        scratch = GraphBuilder("scratch")
        out = scratch.emit(op, inputs, attrs, out_names=["d"])
        node = scratch.graph.nodes[0]
        if existing is not None:
            # Same name already derived (e.g. a weight shared by two layers): reuse it.
            if existing.type != out.type:
                raise TypeError(f"derived weight @{name} defined with two types")
            value = existing
        else:
            out.name, out.kind = name, WEIGHT
            self.graph.weights[name] = out
            self.graph.derived.append(node)
            value = out
        if old is not None:
            self.vmap[id(old)] = value
        return value

    def finish(self) -> Graph:
        self.graph.outputs = [self.map(v) for v in self.old.outputs]
        return self.graph


def rewrite(graph: Graph, fn: Callable[[Node, Rewriter], Sequence[Value] | None],
            name: str | None = None) -> Graph:
    """Apply `fn` to each node; it returns replacement values, or None to copy the node."""
    rw = Rewriter(graph, name)
    for node in graph.nodes:
        result = fn(node, rw)
        if result is None:
            rw.copy(node)
        else:
            rw.replace(node, list(result) if not isinstance(result, Value) else [result])
    return rw.finish()


def is_weight_only(v: Value) -> bool:
    return v.kind == WEIGHT


def is_input(v: Value) -> bool:
    return v.kind == INPUT
