"""Common-subexpression elimination: one node per distinct (op, operands, attrs)."""

from __future__ import annotations

from rlx.ir.graph import Graph
from rlx.ir.printer import print_graph
from rlx.passes.rewrite import Rewriter


def _key(node, operands):
    body = print_graph(node.body) if node.body is not None else None
    attrs = tuple(sorted(node.attrs.items()))
    return (node.op, tuple(id(v) if v is not None else None for v in operands), attrs, body)


def cse(graph: Graph, options=None) -> Graph:
    """Reuse the first of several identical pure computations (constants included)."""
    rw = Rewriter(graph)
    seen: dict[tuple, list] = {}
    for node in graph.nodes:
        operands = [rw.map(v) for v in node.inputs]
        key = _key(node, operands)
        if key in seen:
            rw.replace(node, seen[key])
        else:
            seen[key] = rw.copy(node)
    return rw.finish()
