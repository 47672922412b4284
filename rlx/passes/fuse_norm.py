"""LayerNorm and softmax as single kernels (`fused{kind="norm"}`).

A norm reads its input several times (statistics, then normalization), so a
cheap elementwise producer used only by the norm (a residual add, a scale, a
bias) is folded in and recomputed on the fly instead of being written out;
likewise a short elementwise chain applied to the norm's result (LayerNorm2d
followed by GELU) is applied before the result is stored. Prologue and
epilogue are limited to a few ops so the recomputation stays cheap.
"""

from __future__ import annotations

from rlx.ir.graph import Graph
from rlx.passes.fuse_elementwise import fusable_elementwise
from rlx.passes.fuse_groups import GraphIndex, Group, emit_groups, is_convex, operand_nodes

NORM_OPS = frozenset({"layer_norm", "softmax"})
MAX_PROLOGUE = 3
MAX_EPILOGUE = 3


def _operands_ok(index, node, members, space):
    inside = {id(n) for n in members}
    absorbed = []
    for v in node.present_inputs():
        if v.producer is not None and id(v.producer) in inside:
            continue
        nodes = operand_nodes(index, v, space, inside)
        if nodes is None:
            return None
        absorbed.extend(nodes)
    return absorbed


def select_norm(graph: Graph, claimed: set[int] | None = None) -> list[Group]:
    index = GraphIndex(graph)
    claimed = claimed if claimed is not None else set()
    groups = []
    for node in graph.nodes:
        if node.op not in NORM_OPS or id(node) in claimed or node.output.dtype != "f32":
            continue
        space = node.output.shape
        members = [node]
        absorbed = []
        # Prologue: single-use same-shape elementwise producers of the norm input.
        frontier = [node.inputs[0]]
        while frontier and len(members) - 1 < MAX_PROLOGUE:
            v = frontier.pop(0)
            p = v.producer
            if p is None or id(p) in claimed or not fusable_elementwise(p) or \
                    p.output.shape != space or index.sole_user(v) is None:
                continue
            trial = [p] + members
            extra = _operands_ok(index, p, trial, space)
            if extra is None or not is_convex(index, trial, absorbed + extra):
                continue
            members = trial
            absorbed += extra
            frontier.extend(w for w in p.present_inputs() if w.shape == space)
        # The norm's input may arrive through an index map; layer_norm's weight and
        # bias are per-channel vectors read directly.
        x = node.inputs[0]
        if x.producer is None or id(x.producer) not in {id(n) for n in members}:
            extra = operand_nodes(index, x, space, {id(n) for n in members})
            if extra is None:
                continue
            absorbed += extra
        # Epilogue: a short chain applied to the result.
        running = node.output
        for _ in range(MAX_EPILOGUE):
            user = index.sole_user(running)
            if user is None or id(user) in claimed or not fusable_elementwise(user) or \
                    user.output.shape != space or sum(v is running for v in user.inputs) != 1:
                break
            trial = members + [user]
            extra = _operands_ok(index, user, trial, space)
            if extra is None or not is_convex(index, trial, absorbed + extra):
                break
            members = trial
            absorbed += extra
            running = user.output
        members.sort(key=lambda n: index.pos[id(n)])
        seen, uniq = set(), []
        for a in absorbed:
            if id(a) not in seen:
                seen.add(id(a))
                uniq.append(a)
        groups.append(Group("norm", members, uniq))
        claimed.update(id(n) for n in members)
    return groups


def fuse_norm(graph: Graph, options=None) -> Graph:
    return emit_groups(graph, select_norm(graph))
