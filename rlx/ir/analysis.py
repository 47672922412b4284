"""Graph analyses built on networkx: dependence graph, order, liveness, DOT, FLOPs.

The IR keeps its own list order (always topological); networkx is used where
a general graph algorithm is the clearest statement of what is wanted: a
re-sort after a pass reorders nodes, weakly connected groups, DOT export.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from rlx.ir.graph import Graph, Node, Value
from rlx.ir.ops import get_op


def dependence_graph(graph: Graph) -> nx.DiGraph:
    """DiGraph over node indices; an edge a -> b when b reads a result of a."""
    g = nx.DiGraph()
    producer: dict[int, int] = {}
    for i, node in enumerate(graph.nodes):
        g.add_node(i, node=node)
        for v in node.outputs:
            producer[id(v)] = i
    for i, node in enumerate(graph.nodes):
        for v in node.present_inputs():
            j = producer.get(id(v))
            if j is not None:
                g.add_edge(j, i)
    return g


def topological_sort(graph: Graph) -> None:
    """Reorder graph.nodes topologically, stable with respect to the current order."""
    dep = dependence_graph(graph)
    order = list(nx.lexicographical_topological_sort(dep))
    graph.nodes = [graph.nodes[i] for i in order]


def connected_groups(graph: Graph, selected: set[int]) -> list[list[int]]:
    """Weakly connected components of the selected node indices (each sorted)."""
    dep = dependence_graph(graph).subgraph(selected)
    return sorted(sorted(c) for c in nx.weakly_connected_components(dep))


@dataclass(frozen=True)
class Interval:
    """A value is live from the node that defines it to its last reader (inclusive)."""

    value: Value
    start: int
    end: int


def liveness(graph: Graph) -> list[Interval]:
    """Live intervals of node results in node-index time; graph outputs live to the end."""
    last_use: dict[int, int] = {}
    for i, node in enumerate(graph.nodes):
        for v in node.present_inputs():
            last_use[id(v)] = i
    end = len(graph.nodes)
    for v in graph.outputs:
        last_use[id(v)] = end
    out = []
    for i, node in enumerate(graph.nodes):
        for v in node.outputs:
            out.append(Interval(v, i, last_use.get(id(v), i)))
    return out


def node_flops(node: Node) -> int:
    ins = [v.type if v is not None else None for v in node.inputs]
    outs = [v.type for v in node.outputs]
    return get_op(node.op).count_flops(ins, outs, node.attrs, node.body)


def graph_flops(graph: Graph) -> int:
    return sum(node_flops(n) for n in graph.nodes)


def to_dot(graph: Graph) -> str:
    """Graphviz DOT text: ops as boxes, inputs/weights as ellipses, edges labeled by type."""
    lines = [f'digraph "{graph.name}" {{', "  rankdir=TB;", '  node [fontname="monospace"];']
    ids: dict[int, str] = {}

    def label(s: str) -> str:
        return s.replace("\\", "\\\\").replace('"', '\\"')

    for k, v in enumerate(graph.inputs):
        ids[id(v)] = f"in{k}"
        lines.append(f'  in{k} [shape=ellipse, label="{label(v.ref)}\\n{v.type}"];')
    for k, v in enumerate(graph.weights.values()):
        ids[id(v)] = f"w{k}"
        lines.append(f'  w{k} [shape=ellipse, style=dashed, label="{label(v.ref)}\\n{v.type}"];')
    for i, node in enumerate(graph.nodes):
        title = node.op if node.op != "fused" else f"fused.{node.attrs.get('kind')}"
        if node.body is not None:
            title += f" [{', '.join(n.op for n in node.body.nodes)}]"
        lines.append(f'  n{i} [shape=box, label="{label(title)}"];')
        for v in node.outputs:
            ids[id(v)] = f"n{i}"
    for i, node in enumerate(graph.nodes):
        for v in node.present_inputs():
            src = ids.get(id(v))
            if src is not None:
                lines.append(f'  {src} -> n{i} [label="{v.type}"];')
    for k, v in enumerate(graph.outputs):
        lines.append(f'  out{k} [shape=ellipse, label="output {k}"];')
        lines.append(f"  {ids[id(v)]} -> out{k};")
    lines.append("}")
    return "\n".join(lines) + "\n"
