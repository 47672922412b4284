"""Shape inference: re-derive every attribute's canonical form and every result type.

Graphs from the builder or parser are already typed; this pass is the check
after hand edits or external rewrites, and the place a graph built with stale
types gets corrected.
"""

from __future__ import annotations

from rlx.ir.graph import Graph
from rlx.passes.rewrite import Rewriter


def infer_shapes(graph: Graph, options=None) -> Graph:
    rw = Rewriter(graph)
    for node in graph.nodes:
        out = rw.b.emit(node.op, [rw.map(v) for v in node.inputs], node.attrs, body=node.body,
                        out_names=[v.name for v in node.outputs])
        outs = out if isinstance(out, tuple) else (out,)
        # Not Rewriter.replace: a changed result type is the point of this pass.
        for old, new in zip(node.outputs, outs):
            rw.vmap[id(old)] = new
    return rw.finish()
