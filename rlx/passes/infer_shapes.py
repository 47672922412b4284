"""Shape inference: re-derive every attribute's canonical form and every result type.

Graphs from the builder or parser are already typed; this pass is the check
after hand edits or external rewrites, and the place a graph built with stale
types gets corrected.
"""

from __future__ import annotations

from rlx.ir.graph import Graph
from rlx.passes.rewrite import rewrite


def infer_shapes(graph: Graph, options=None) -> Graph:
    def redo(node, rw):
        return rw.b.emit(node.op, [rw.map(v) for v in node.inputs], node.attrs, body=node.body,
                         out_names=[v.name for v in node.outputs])

    return rewrite(graph, redo)
