"""Constant folding of weight-only subexpressions into derived weights.

A node whose operands are all weights (or small literals) computes the same
thing on every call: a transposed weight matrix, a gathered position table, a
weight times a scale. This pass moves such nodes into ``graph.derived`` so they
run once when weights are bound, never per inference. Folds that would blow a
small weight up into a large tensor by replicating it (broadcasts, elementwise
ops that broadcast) are left alone: the copy is free as a view at run time.
An op that computes a large table from a small one (a bicubic resize of a
position embedding) is folded at any size, since otherwise every call would
compute it again.
"""

from __future__ import annotations

from rlx.ir.graph import WEIGHT, Graph
from rlx.ir.ops import get_op
from rlx.passes.rewrite import Rewriter

#: Do not fold a replication if the result is this much bigger than its operands (and > 16 MB).
MAX_GROWTH = 4
MIN_BLOWUP_BYTES = 16 << 20
#: op categories that only replicate data (the growth limit applies to them)
REPLICATING = frozenset({"movement", "elementwise"})


def fold_constants(graph: Graph, options=None) -> Graph:
    rw = Rewriter(graph)
    definitions: dict[tuple, object] = {}
    for node in graph.nodes:
        operands = [rw.map(v) for v in node.inputs]
        present = [v for v in operands if v is not None]
        foldable = (node.op != "const" and node.body is None and len(node.outputs) == 1
                    and all(v.kind == WEIGHT or (v.producer is not None and v.producer.op == "const")
                            for v in present))
        if foldable and get_op(node.op).category in REPLICATING:
            out_bytes = node.output.type.nbytes
            in_bytes = sum(v.type.nbytes for v in present)
            if out_bytes > MIN_BLOWUP_BYTES and out_bytes > MAX_GROWTH * max(in_bytes, 1):
                foldable = False
        if not foldable:
            rw.copy(node)
            continue
        args = []
        for v in operands:
            if v is not None and v.kind != WEIGHT:  # a literal: make it a derived scalar
                c = v.producer
                v = _derive(rw, definitions, "const", [], c.attrs, v.name)
            args.append(v)
        rw.vmap[id(node.output)] = _derive(rw, definitions, node.op, args, node.attrs,
                                           node.output.name)
    return rw.finish()


def _derive(rw: Rewriter, definitions: dict, op: str, args: list, attrs: dict, base: str):
    key = (op, tuple(v.name if v is not None else None for v in args),
           tuple(sorted(attrs.items())))
    if key in definitions:
        return definitions[key]
    name, k = base, 0
    while name in rw.graph.weights:
        k += 1
        name = f"{base}_{k}"
    value = rw.derive(op, args, attrs, name)
    definitions[key] = value
    return value
