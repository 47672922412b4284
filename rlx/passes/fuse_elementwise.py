"""Fuse chains of elementwise ops of one shape into `fused{kind="elementwise"}` nodes.

Every member of a group has the same result shape (the kernel's iteration
space); operands from outside may be smaller (broadcast) or reach the group
through transposes, slices and reshapes that are mere index maps — those are
absorbed so the kernel reads the original buffer with strides instead of a
copied tensor. Scalar constants become literals. Intermediate results stay in
registers; only values read outside the group are written.

Groups grow greedily in program order: a node joins the groups of its
same-shape elementwise producers when the union stays convex. A lone op is
wrapped only if it absorbed a movement op (otherwise the plain node is the
same kernel).
"""

from __future__ import annotations

from rlx.ir.graph import Graph
from rlx.ir.ops import get_op
from rlx.passes.fuse_groups import GraphIndex, Group, emit_groups, is_convex, operand_nodes


def fusable_elementwise(node) -> bool:
    if node.op == "const" or node.body is not None:
        return False
    if get_op(node.op).category != "elementwise":
        return False
    return all(v.dtype != "f16" for v in node.present_inputs() + node.outputs)


def _absorb_for(index: GraphIndex, members: list, node) -> list | None:
    inside = {id(n) for n in members}
    absorbed = []
    for v in node.present_inputs():
        if v.producer is not None and id(v.producer) in inside:
            continue
        nodes = operand_nodes(index, v, node.output.shape, inside)
        if nodes is None:
            return None
        absorbed.extend(nodes)
    return absorbed


def select_elementwise(graph: Graph, claimed: set[int] | None = None) -> list[Group]:
    index = GraphIndex(graph)
    claimed = claimed or set()
    group_of: dict[int, int] = {}
    groups: list[Group | None] = []
    for node in graph.nodes:
        if id(node) in claimed or not fusable_elementwise(node):
            continue
        shape = node.output.shape
        candidates = []
        for v in node.present_inputs():
            p = v.producer
            if p is not None and id(p) in group_of and v.shape == shape:
                g = group_of[id(p)]
                if g not in candidates:
                    candidates.append(g)
        placed = False
        # Try joining all candidate groups at once, then each alone (largest first).
        tries = [candidates] if len(candidates) > 1 else []
        tries += [[g] for g in sorted(candidates, key=lambda g: -len(groups[g].members))]
        for combo in tries:
            members = [n for g in combo for n in groups[g].members] + [node]
            members.sort(key=lambda n: index.pos[id(n)])
            absorbed = [a for g in combo for a in groups[g].absorbed]
            extra = _absorb_for(index, members, node)
            if extra is None:
                continue
            absorbed = _dedupe(absorbed + extra)
            if not is_convex(index, members, absorbed):
                continue
            target = combo[0]
            groups[target] = Group("elementwise", members, absorbed)
            for g in combo[1:]:
                groups[g] = None
            for n in members:
                group_of[id(n)] = target
            placed = True
            break
        if not placed:
            absorbed = _absorb_for(index, [node], node) or []
            group_of[id(node)] = len(groups)
            groups.append(Group("elementwise", [node], _dedupe(absorbed)))
    out = []
    for g in groups:
        if g is None:
            continue
        moves = [a for a in g.absorbed if a.op != "const"]
        if len(g.members) > 1 or moves:
            out.append(g)
    return out


def _dedupe(nodes: list) -> list:
    seen, out = set(), []
    for n in nodes:
        if id(n) not in seen:
            seen.add(id(n))
            out.append(n)
    return out


def fuse_elementwise(graph: Graph, options=None) -> Graph:
    return emit_groups(graph, select_elementwise(graph))
