"""Memory planning: place every intermediate in one arena, reusing space by liveness.

Shapes are static, so the whole schedule of allocations is known at compile
time. Each buffer lives from the node that writes it to its last reader;
buffers whose lifetimes do not overlap may share bytes. Values produced by
view ops (a reshape of a contiguous buffer) alias their source and extend its
lifetime instead of taking space. Graph outputs are not placed in the arena:
the runtime hands them to the caller, so they get fresh memory per call.

Placement is greedy, largest buffers first, each at the lowest offset that
does not collide with an already placed buffer whose lifetime overlaps (a
standard offset-assignment heuristic for static graphs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlx.ir.graph import RESULT, Graph, Value

ALIGN = 64
#: ops whose result is a view of their first input (buffers are C-contiguous)
VIEW_OPS = frozenset({"reshape"})


@dataclass
class MemoryPlan:
    #: value id -> (offset, nbytes) in the arena, for values that own arena storage
    placement: dict[int, tuple[int, int]] = field(default_factory=dict)
    #: value id -> the value whose storage it views (reshape chains), root-resolved
    alias_of: dict[int, Value] = field(default_factory=dict)
    #: value ids that get fresh memory per call (graph outputs and what they alias)
    fresh: set[int] = field(default_factory=set)
    arena_bytes: int = 0
    #: bytes if nothing were shared (for reports)
    naive_bytes: int = 0


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def plan_memory(graph: Graph, view_ops=VIEW_OPS) -> MemoryPlan:
    plan = MemoryPlan()
    root: dict[int, Value] = {}
    for node in graph.nodes:
        for v in node.outputs:
            root[id(v)] = v
        if node.op in view_ops and node.inputs[0] is not None:
            src = node.inputs[0]
            r = root.get(id(src), src)
            root[id(node.output)] = r
            plan.alias_of[id(node.output)] = r

    def root_of(v: Value) -> Value:
        return root.get(id(v), v)

    # Graph outputs (and the node buffers they view) get fresh memory per call.
    for v in graph.outputs:
        r = root_of(v)
        if r.kind == RESULT:
            plan.fresh.add(id(r))

    start: dict[int, int] = {}
    end: dict[int, int] = {}
    owners: dict[int, Value] = {}
    for i, node in enumerate(graph.nodes):
        for v in node.outputs:
            r = root_of(v)
            if r is v and id(v) not in plan.fresh:
                start[id(v)] = i
                end[id(v)] = i
                owners[id(v)] = v
        for v in node.present_inputs():
            r = root_of(v)
            if id(r) in end:
                end[id(r)] = max(end[id(r)], i)

    order = sorted(owners, key=lambda k: (-owners[k].type.nbytes, start[k]))
    placed: list[tuple[int, int, int, int]] = []  # (offset, size, start, end)
    for k in order:
        size = _align(max(owners[k].type.nbytes, 1))
        plan.naive_bytes += size
        s, e = start[k], end[k]
        conflicts = sorted((off, sz) for off, sz, ps, pe in placed if not (pe < s or e < ps))
        offset = 0
        for off, sz in conflicts:
            if offset + size <= off:
                break
            offset = max(offset, off + sz)
        placed.append((offset, size, s, e))
        plan.placement[k] = (offset, owners[k].type.nbytes)
        plan.arena_bytes = max(plan.arena_bytes, offset + size)
    return plan
