"""Read attention operands through index maps instead of copied tensors.

Multi-head attention usually reaches its q/k/v through a reshape, a head
transpose and a slice of one packed qkv projection; materialized, each is a
full copy of the projection. When such a chain is a strided view of its
source, the attention node and the chain form one `fused{kind="attention"}`
group and the kernel reads the packed buffer directly (each head's rows keep
unit stride, so the GEMMs inside the kernel still run on BLAS).
"""

from __future__ import annotations

from rlx.ir.graph import Graph
from rlx.passes.fuse_groups import GraphIndex, Group, emit_groups, is_convex, operand_nodes


def select_attention(graph: Graph) -> list[Group]:
    index = GraphIndex(graph)
    groups = []
    for node in graph.nodes:
        if node.op != "attention":
            continue
        absorbed = []
        for v in node.present_inputs():
            nodes = operand_nodes(index, v, v.shape, {id(node)})
            if nodes and nodes[0].op != "const":
                absorbed.extend(n for n in nodes if n not in absorbed)
        if absorbed and is_convex(index, [node], absorbed):
            groups.append(Group("attention", [node], absorbed))
    return groups


def fuse_attention(graph: Graph, options=None) -> Graph:
    return emit_groups(graph, select_attention(graph))
