"""Rows sliced away after a per-row product are never computed: slice the input instead.

A matmul whose right operand is one matrix ([K, N], shared by every row) maps
each row of its left operand to one row of the result, and an elementwise
op whose other operands vary only along the last dim (a bias, a scale) does
the same. Such per-row work commutes with any movement of whole rows: a
reshape or transpose that keeps the last dim in place, and a slice that
keeps all of it. So in

    y = slice(transpose(reshape(add(matmul(a, w), bias))))

the movement ops can be applied to `a` (with K in place of N) before the
product, and when the chain drops rows (the crop after ViT window
unpartitioning, for instance) the product runs on fewer rows:

    y = add(reshape(matmul(reshape(slice(transpose(reshape(a)))), w)), bias)

Exact: each output row is computed from the same input row by the same ops.
The rewrite only fires when the chain ends in a slice that removes rows, and
only through single-use values (nothing else sees the intermediate results).
"""

from __future__ import annotations

import math

from rlx.ir.graph import Graph, Value
from rlx.ir.ops import get_op
from rlx.passes.fuse_groups import GraphIndex
from rlx.passes.rewrite import rewrite


def _row_op(node, running: Value) -> bool:
    """An elementwise op on the running value whose other operands only vary along the
    last dim (or are scalars), with the running value's shape and dtype."""
    if node.body is not None or node.op == "const" or len(node.outputs) != 1:
        return False
    if get_op(node.op).category != "elementwise":
        return False
    if node.output.shape != running.shape or node.output.dtype != running.dtype:
        return False
    if sum(v is running for v in node.inputs) != 1:
        return False
    for v in node.present_inputs():
        if v is running:
            continue
        if any(d != 1 for d in v.shape[:-1]) or len(v.shape) > len(running.shape):
            return False
        if v.shape and v.shape[-1] not in (1, running.shape[-1]):
            return False
    return True


def _row_move(node, running: Value) -> bool:
    """A movement op that moves whole rows (the last dim stays last and whole)."""
    x, out = running.shape, node.output.shape
    if not x or not out or x[-1] != out[-1]:
        return False
    if node.op == "reshape":
        return True
    if node.op == "transpose":
        return node.attrs["perm"][-1] == len(x) - 1
    if node.op == "slice":
        n = x[-1]
        return (node.attrs["starts"][-1], node.attrs["ends"][-1], node.attrs["steps"][-1]) \
            == (0, n, 1)
    return False


def _candidates(graph: Graph) -> dict[int, tuple]:
    """last slice node id -> (matmul, [chain nodes up to that slice])."""
    index = GraphIndex(graph)
    found = {}
    for node in graph.nodes:
        if node.op != "matmul" or node.attrs["transpose_a"]:
            continue
        a, b = node.inputs
        if len(b.shape) != 2 or len(a.shape) < 2:
            continue
        chain, running, last_slice = [], node.output, None
        while True:
            user = index.sole_user(running)
            if user is None or not (_row_op(user, running) or (
                    user.op in ("reshape", "transpose", "slice") and _row_move(user, running))):
                break
            chain.append(user)
            if user.op == "slice" and math.prod(user.output.shape) < math.prod(running.shape):
                last_slice = len(chain)
            running = user.output
        if last_slice is not None:
            found[id(chain[last_slice - 1])] = (node, chain[:last_slice])
    return found


def narrow_rows(graph: Graph, options=None) -> Graph:
    found = _candidates(graph)
    if not found:
        return graph

    def visit(node, rw):
        hit = found.get(id(node))
        if hit is None:
            return None
        mm, chain = hit
        b = rw.b
        a, w = rw.map(mm.inputs[0]), rw.map(mm.inputs[1])
        k = a.shape[-1]
        with b.scope(node.output.name):
            for n in chain:  # the movement, on the left operand
                if n.op == "reshape":
                    a = b.reshape(a, shape=tuple(n.output.shape[:-1]) + (k,))
                elif n.op == "transpose":
                    a = b.transpose(a, perm=n.attrs["perm"])
                elif n.op == "slice":
                    a = b.slice(a, starts=n.attrs["starts"][:-1] + (0,),
                                ends=n.attrs["ends"][:-1] + (k,),
                                steps=n.attrs["steps"][:-1] + (1,))
            rows = math.prod(a.shape[:-1])
            y = b.emit("matmul", [b.reshape(a, shape=(rows, k)), w], dict(mm.attrs),
                       canonical=True)
            y = b.reshape(y, shape=node.output.shape)
            for n in chain:  # the per-row ops, on the narrowed result
                if n.op in ("reshape", "transpose", "slice"):
                    continue
                ins = []
                for v in n.inputs:
                    if v is None:
                        ins.append(None)
                    elif v.producer is not None and any(v.producer is c for c in [mm, *chain]):
                        ins.append(y)
                    else:
                        o = rw.map(v)
                        ins.append(b.reshape(o, shape=o.shape[-1:]) if o.shape else o)
                y = b.emit(n.op, ins, dict(n.attrs), canonical=True)
        return [y]

    return rewrite(graph, visit)
