"""Dead-code elimination: drop nodes, derived weights and weights nothing reads."""

from __future__ import annotations

from rlx.ir.graph import Graph
from rlx.passes.rewrite import Rewriter


def dce(graph: Graph, options=None) -> Graph:
    """Remove every node whose results do not reach a graph output (all ops are pure)."""
    live: set[int] = {id(v) for v in graph.outputs}
    kept = set()
    for node in reversed(graph.nodes):
        if any(id(v) in live for v in node.outputs):
            kept.add(id(node))
            live.update(id(v) for v in node.present_inputs())
    rw = Rewriter(graph)
    for node in graph.nodes:
        if id(node) in kept:
            rw.copy(node)
    return prune_weights(rw.finish())


def prune_weights(graph: Graph) -> Graph:
    """Drop (in place) weights and derived weights that no node or output reads."""
    live = {id(v) for v in graph.outputs}
    for node in graph.nodes:
        live.update(id(v) for v in node.present_inputs())
    derived = []
    for node in reversed(graph.derived):
        if id(node.output) in live:
            derived.append(node)
            live.update(id(v) for v in node.present_inputs())
    graph.derived = derived[::-1]
    graph.weights = {k: v for k, v in graph.weights.items() if id(v) in live}
    return graph
