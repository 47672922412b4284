"""Reshape/transpose elimination: collapse chains and drop identities.

reshape(reshape(x)) is one reshape; transpose(transpose(x)) is one transpose
(or none); a transpose that only moves size-1 axes is a reshape. Fewer
movement ops means fewer copies and more chances for fusion to absorb the rest
into indexing.
"""

from __future__ import annotations

from rlx.ir.graph import Graph
from rlx.passes.rewrite import rewrite


def _moves_only_unit_axes(shape, perm) -> bool:
    kept = [p for p in perm if shape[p] != 1]
    return kept == sorted(kept)


def simplify_movement(graph: Graph, options=None) -> Graph:
    def visit(node, rw):
        if node.op == "reshape":
            x = rw.map(node.inputs[0])
            if x.producer is not None and x.producer.op == "reshape":
                x = x.producer.inputs[0]
            if x.shape == node.output.shape:
                return [x]
            return [rw.b.emit("reshape", [x], {"shape": node.output.shape}, canonical=True,
                              out_names=[node.output.name])]
        if node.op == "transpose":
            x = rw.map(node.inputs[0])
            perm = node.attrs["perm"]
            if x.producer is not None and x.producer.op == "transpose":
                inner = x.producer.attrs["perm"]
                perm = tuple(inner[p] for p in perm)
                x = x.producer.inputs[0]
            if perm == tuple(range(len(perm))):
                return [x]
            if _moves_only_unit_axes(x.shape, perm):
                return [rw.b.emit("reshape", [x], {"shape": node.output.shape}, canonical=True,
                                  out_names=[node.output.name])]
            return [rw.b.emit("transpose", [x], {"perm": perm}, canonical=True,
                              out_names=[node.output.name])]
        return None

    return rewrite(graph, visit)
