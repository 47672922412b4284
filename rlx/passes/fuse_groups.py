"""Shared machinery of the fusion passes: legal groups and how they become `fused` nodes.

A fusion pass picks *groups*: sets of nodes that one kernel will compute. A
group is legal when it is convex — no path leaves the group and comes back
(otherwise the fused node would have to run both before and after some other
node). Convexity is checked with ancestor bitsets: node ``j`` is an ancestor
of node ``i`` when ``i`` (transitively) reads a result of ``j``.

Besides its members a group may *absorb* nodes it copies into its body without
owning them: scalar constants (become literals) and movement ops on its inputs
that are mere index maps (see `rlx.ir.views`). An absorbed node stays in the
outer graph for its other users; `dce` drops it if nothing else needs it.

`emit_groups` rebuilds the graph with each group replaced by one `fused` node
whose body holds the absorbed nodes and the members in their original order.
Group results that are read outside the group (or are graph outputs) become
the fused node's results, under their original names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from rlx.ir.builder import GraphBuilder
from rlx.ir.graph import RESULT, Graph, Node, Value
from rlx.passes.dce import dce
from rlx.passes.rewrite import Rewriter


class GraphIndex:
    """Positions, producers, users and ancestor bitsets of a graph's nodes."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.pos: dict[int, int] = {id(n): i for i, n in enumerate(graph.nodes)}
        self.users: dict[int, list[Node]] = {}
        for node in graph.nodes:
            for v in node.present_inputs():
                self.users.setdefault(id(v), []).append(node)
        self.outputs = {id(v) for v in graph.outputs}
        self.anc: list[int] = []
        for node in graph.nodes:
            bits = 0
            for v in node.present_inputs():
                j = self.producer_index(v)
                if j is not None:
                    bits |= self.anc[j] | (1 << j)
            self.anc.append(bits)

    def producer_index(self, v: Value) -> int | None:
        if v.producer is None:
            return None
        return self.pos.get(id(v.producer))

    def users_of(self, v: Value) -> list[Node]:
        return self.users.get(id(v), [])

    def sole_user(self, v: Value) -> Node | None:
        """The one node reading `v`, if exactly one does and `v` is not a graph output."""
        users = self.users_of(v)
        if len(users) == 1 and id(v) not in self.outputs:
            return users[0]
        return None

    def depends_on(self, v: Value, mask: int) -> bool:
        """True if `v` is computed from (or by) any node in the bitset `mask`."""
        j = self.producer_index(v)
        if j is None:
            return False
        return bool((self.anc[j] | (1 << j)) & mask)

    def mask(self, nodes) -> int:
        bits = 0
        for n in nodes:
            bits |= 1 << self.pos[id(n)]
        return bits


@dataclass
class Group:
    kind: str
    members: list[Node] = field(default_factory=list)
    #: nodes copied into the body but not owned (constants, movement ops on inputs)
    absorbed: list[Node] = field(default_factory=list)

    def node_ids(self) -> set[int]:
        return {id(n) for n in self.members}


def is_convex(index: GraphIndex, members, absorbed=()) -> bool:
    """No member (or absorbed node) reads a value computed outside the group from a member."""
    mask = index.mask(members)
    ids = {id(n) for n in members} | {id(n) for n in absorbed}
    for node in list(members) + list(absorbed):
        for v in node.present_inputs():
            p = v.producer
            if p is None or id(p) in ids:
                continue
            if index.depends_on(v, mask):
                return False
    return True


def emit_groups(graph: Graph, groups: list[Group]) -> Graph:
    """A new graph with every group replaced by one `fused` node (then dead code dropped)."""
    if not groups:
        return graph
    owner: dict[int, int] = {}
    for g, group in enumerate(groups):
        for n in group.members:
            owner[id(n)] = g
    # Units: a group or a single node. Order them topologically, stable w.r.t. the
    # position of each unit's first node.
    units: list[tuple[str, int]] = []
    unit_of: dict[int, int] = {}
    first_pos: list[int] = []
    seen_groups: dict[int, int] = {}
    for i, node in enumerate(graph.nodes):
        g = owner.get(id(node))
        if g is None:
            unit_of[id(node)] = len(units)
            units.append(("node", i))
            first_pos.append(i)
        else:
            if g not in seen_groups:
                seen_groups[g] = len(units)
                units.append(("group", g))
                first_pos.append(i)
            unit_of[id(node)] = seen_groups[g]
    dep = nx.DiGraph()
    dep.add_nodes_from(range(len(units)))

    def unit_inputs(u: int) -> list[Value]:
        kind, ref = units[u]
        if kind == "node":
            return graph.nodes[ref].present_inputs()
        group = groups[ref]
        return [v for n in group.members + group.absorbed for v in n.present_inputs()]

    for u in range(len(units)):
        for v in unit_inputs(u):
            if v.producer is not None and id(v.producer) in unit_of:
                src = unit_of[id(v.producer)]
                if src != u:
                    dep.add_edge(src, u)
    order = list(nx.lexicographical_topological_sort(dep, key=lambda u: first_pos[u]))

    rw = Rewriter(graph)
    users = {}
    for node in graph.nodes:
        for v in node.present_inputs():
            users.setdefault(id(v), []).append(node)
    outputs = {id(v) for v in graph.outputs}
    pos = {id(n): i for i, n in enumerate(graph.nodes)}
    for u in order:
        kind, ref = units[u]
        if kind == "node":
            rw.copy(graph.nodes[ref])
            continue
        _emit_group(rw, groups[ref], users, outputs, pos)
    return dce(rw.finish())


def _emit_group(rw: Rewriter, group: Group, users: dict, outputs: set, pos: dict) -> None:
    member_ids = group.node_ids()
    inside = member_ids | {id(n) for n in group.absorbed}
    body_nodes = sorted(group.absorbed + group.members, key=lambda n: pos[id(n)])
    # External values read by the body, in first-use order.
    produced_inside = {id(v) for n in body_nodes for v in n.outputs}
    externals: list[Value] = []
    seen: set[int] = set()
    for n in body_nodes:
        for v in n.present_inputs():
            if id(v) not in produced_inside and id(v) not in seen:
                seen.add(id(v))
                externals.append(v)
    body = Graph(group.kind)
    bb = GraphBuilder(graph=body)
    env: dict[int, Value] = {}
    for v in externals:
        env[id(v)] = bb.input(_unique(bb, v.name), v.shape, v.dtype)
    for n in body_nodes:
        ins = [env[id(v)] if v is not None else None for v in n.inputs]
        out = bb.emit(n.op, ins, n.attrs, body=n.body, out_names=[v.name for v in n.outputs],
                      canonical=True)
        outs = list(out) if isinstance(out, tuple) else [out]
        for old, new in zip(n.outputs, outs):
            env[id(old)] = new
    results = []
    for n in group.members:
        for v in n.outputs:
            external_use = any(id(u) not in inside for u in users.get(id(v), []))
            if external_use or id(v) in outputs:
                results.append(v)
    body.outputs = [env[id(v)] for v in results]
    fused = rw.b.emit("fused", [rw.map(v) for v in externals], {"kind": group.kind}, body=body,
                      out_names=[v.name for v in results], canonical=True)
    fused = list(fused) if isinstance(fused, tuple) else [fused]
    for old, new in zip(results, fused):
        rw.vmap[id(old)] = new


def _unique(bb: GraphBuilder, name: str) -> str:
    if name not in bb._names:
        return name
    return bb.fresh(name)


def operand_nodes(index: GraphIndex, value: Value, space, inside: set[int]) -> list[Node] | None:
    """Nodes a group absorbs so that it reads `value` over the iteration space `space`.

    Constants are inlined (with any movement ops on them). Otherwise the
    longest chain of movement ops ending in `value` whose combined index map
    is a strided view is absorbed, so the kernel reads the chain's source
    buffer directly. Returns [] when `value` is read as it is (broadcast to
    `space`), or None when even that is impossible.
    """
    from rlx.ir.views import view_chain, view_of

    def stop(v):
        return v.producer is None or v.kind != RESULT or id(v.producer) in inside

    source, chain = view_chain(value, stop)
    if source.kind == RESULT and source.producer is not None and \
            source.producer.op == "const" and id(source.producer) not in inside:
        return [source.producer] + chain
    for k in range(len(chain) + 1):
        src = chain[k].inputs[0] if k < len(chain) else value
        if view_of(src.shape, chain[k:], space) is not None:
            return chain[k:]
    return None
