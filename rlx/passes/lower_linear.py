"""linear -> 2-D matmul against the transposed weight, plus a bias add.

Leading dims are flattened so the GEMM is one large [M, K] x [K, N] product
(the shape BLAS is fastest at); the weight stays in PyTorch's [out, in] layout
and is read transposed (`transpose_b`), so no second copy of it is made.
"""

from __future__ import annotations

import math

from rlx.ir.graph import Graph
from rlx.passes.rewrite import rewrite


def lower_linear(graph: Graph, options=None) -> Graph:
    def visit(node, rw):
        if node.op != "linear":
            return None
        x, w, b = (rw.map(v) for v in node.inputs)
        name = node.output.name
        lead = x.shape[:-1]
        with rw.b.scope(name):
            x2 = x if x.type.rank == 2 else rw.b.reshape(x, shape=(math.prod(lead), x.shape[-1]))
            y = rw.b.matmul(x2, w, transpose_b=True)
            if b is not None:
                y = rw.b.add(y, b)
            if x.type.rank != 2:
                y = rw.b.reshape(y, shape=lead + (w.shape[0],))
        return [y]

    return rewrite(graph, visit)
