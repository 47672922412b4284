"""Read attention operands through index maps instead of copied tensors.

Multi-head attention usually reaches its q/k/v through a reshape, a head
transpose and a slice of one packed qkv projection; materialized, each is a
full copy of the projection. When such a chain is a strided view of its
source, the attention node and the chain form one `fused{kind="attention"}`
group and the kernel reads the packed buffer directly (each head's rows keep
unit stride, so the GEMMs inside the kernel still run on BLAS). The batch dim
may stay split (windows x heads of windowed attention): the kernel unravels
its batch index.
"""

from __future__ import annotations

from rlx.ir.graph import RESULT, Graph
from rlx.passes.fuse_groups import GraphIndex, Group, emit_groups, is_convex
from rlx.ir.views import batched_view, view_chain


def operand_chain(value) -> list:
    """The longest chain of movement ops ending in `value` that the kernel can read
    through (batch dims may stay split, see `batched_view`)."""
    source, chain = view_chain(value, lambda v: v.producer is None or v.kind != RESULT)
    for k in range(len(chain)):
        src = chain[k].inputs[0]
        if src.producer is not None and src.producer.op == "const":
            continue
        if batched_view(src.shape, chain[k:], value.shape) is not None:
            return chain[k:]
    return []


def select_attention(graph: Graph) -> list[Group]:
    index = GraphIndex(graph)
    groups = []
    for node in graph.nodes:
        if node.op != "attention":
            continue
        absorbed = []
        for v in node.present_inputs():
            absorbed.extend(n for n in operand_chain(v) if n not in absorbed)
        if absorbed and is_convex(index, [node], absorbed):
            groups.append(Group("attention", [node], absorbed))
    return groups


def fuse_attention(graph: Graph, options=None) -> Graph:
    return emit_groups(graph, select_attention(graph))
