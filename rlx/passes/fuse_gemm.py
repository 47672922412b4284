"""Fuse GEMM epilogues and operand views: matmul + bias, activation, scale, residual add.

The group is a matmul plus the chain of elementwise ops applied to its result
(each reading the running value once, other operands from outside), so the
kernel can apply the epilogue to the output while it is still in cache
instead of writing and re-reading it per op. Reshapes of the running value
are allowed inside the chain (a linear layer's output reshaped back to
[B, H, W, C] before the residual add); the kernel works in the finest of the
chain's shapes, in which every outside operand must be a strided view.

The matmul's own operands may reach it through movement ops (a head slice
of a packed qkv projection, a transpose): when the chain of movement ops is
a strided view BLAS can read -- unit stride along one of the last two dims,
the other stride is the leading dimension, batch dims at any strides (the
first may stay split, e.g. windows x heads) -- the chain is absorbed and the
kernel reads the source buffer in place instead of a copied tensor. A matmul
with such operands forms a group even without an epilogue.
"""

from __future__ import annotations

from rlx.ir.graph import RESULT, Graph
from rlx.passes.fuse_elementwise import fusable_elementwise
from rlx.passes.fuse_groups import GraphIndex, Group, emit_groups, is_convex, operand_nodes
from rlx.ir.views import StridedView, gemm_operand_view, view_chain


def operand_chain(value) -> list:
    """The longest chain of movement ops ending in matmul operand `value` that a GEMM
    kernel can read through (`gemm_operand_view`); [] when none, for a constant's, and
    when the chain only reshapes a contiguous buffer (already a free alias)."""
    source, chain = view_chain(value, lambda v: v.producer is None or v.kind != RESULT)
    for k in range(len(chain)):
        src = chain[k].inputs[0]
        if src.producer is not None and src.producer.op == "const":
            continue
        view = gemm_operand_view(src.shape, chain[k:], value.shape)
        if view is not None:
            if all(n.op == "reshape" for n in chain[k:]) and view.is_contiguous:
                return []
            return chain[k:]
    return []


def _space(chain) -> tuple[int, ...]:
    """The finest shape among the running value's shapes (most dims, first found)."""
    best = chain[0].output.shape
    for n in chain[1:]:
        if len(n.output.shape) > len(best):
            best = n.output.shape
    return best


def _legal(index: GraphIndex, chain) -> list | None:
    """Absorbed nodes for `chain` if every outside operand maps into the chain's
    iteration space, else None."""
    space = _space(chain)
    inside = {id(n) for n in chain}
    absorbed = []
    running = chain[0].output
    for node in chain[1:]:
        if node.op == "reshape":
            running = node.output
            if StridedView.contiguous(running.shape).reshape(space) is None:
                return None
            continue
        for v in node.present_inputs():
            if v is running:
                continue
            nodes = operand_nodes(index, v, node.output.shape, inside)
            if nodes is None:
                return None
            # The operand's index map in this op's space must survive the reshape
            # into the kernel's space.
            from rlx.ir.views import view_of

            if nodes and nodes[0].op == "const":
                absorbed.extend(nodes)
                continue
            src = nodes[0].inputs[0] if nodes else v
            view = view_of(src.shape, nodes, node.output.shape)
            if view is None or view.reshape(space) is None:
                return None
            absorbed.extend(nodes)
        running = node.output
    if not is_convex(index, chain, absorbed):
        return None
    return absorbed


def select_gemm(graph: Graph, claimed: set[int] | None = None) -> list[Group]:
    index = GraphIndex(graph)
    claimed = claimed or set()
    groups = []
    for node in graph.nodes:
        if node.op != "matmul" or id(node) in claimed or node.output.dtype != "f32":
            continue
        chain = [node]
        running = node.output
        while True:
            user = index.sole_user(running)
            if user is None or id(user) in claimed:
                break
            if user.op == "reshape":
                chain.append(user)
                running = user.output
                continue
            if not fusable_elementwise(user) or user.output.shape != running.shape \
                    or user.output.dtype != running.dtype:
                break
            if sum(v is running for v in user.inputs) != 1:
                break
            chain.append(user)
            running = user.output
        while len(chain) > 1 and chain[-1].op == "reshape":
            chain.pop()  # trailing reshapes stay free views outside the kernel
        absorbed = None
        while len(chain) > 1:
            absorbed = _legal(index, chain)
            if absorbed is not None:
                break
            chain.pop()
            while len(chain) > 1 and chain[-1].op == "reshape":
                chain.pop()
        if len(chain) == 1:
            absorbed = []
        views = [n for v in node.inputs for n in operand_chain(v)]
        if views and not is_convex(index, chain, absorbed + views):
            views = []
        if len(chain) > 1 or views:
            groups.append(Group("gemm", chain, _dedupe(views + absorbed)))
            claimed.update(id(n) for n in chain)
    return groups


def _dedupe(nodes):
    seen, out = set(), []
    for n in nodes:
        if id(n) not in seen:
            seen.add(id(n))
            out.append(n)
    return out


def fuse_gemm(graph: Graph, options=None) -> Graph:
    if options is not None and not options.fuse_epilogues:
        return graph
    return emit_groups(graph, select_gemm(graph))
