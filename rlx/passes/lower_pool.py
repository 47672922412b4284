"""max_pool2d with kernel == stride and no padding -> reshape + reduce_max.

Non-overlapping pooling (SAM3's 0.5x FPN branch) is a reduction over two
split axes; other poolings are left for the backend's max_pool2d kernel.
"""

from __future__ import annotations

from rlx.ir.graph import Graph
from rlx.passes.rewrite import rewrite


def lower_pool(graph: Graph, options=None) -> Graph:
    def visit(node, rw):
        if node.op != "max_pool2d":
            return None
        a = node.attrs
        x = rw.map(node.inputs[0])
        n, c, h, w = x.shape
        kh, kw = a["kernel"]
        if a["stride"] != a["kernel"] or a["padding"] != (0, 0) or h % kh or w % kw:
            return None
        b = rw.b
        with b.scope(node.output.name):
            t = b.reshape(x, shape=(n, c, h // kh, kh, w // kw, kw))
            return [b.reduce_max(t, axes=(3, 5))]

    return rewrite(graph, visit)
