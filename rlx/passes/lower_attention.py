"""attention -> matmul, scale, (decomposed rel-pos bias), softmax, matmul.

Used when the backend has no blocked attention kernel or the profile asks for
it (debugging a fused kernel against its plain decomposition). The bias adds
rel_h over the key-row axis and rel_w over the key-column axis of the score
matrix viewed as [B, Nq, k_h, k_w].
"""

from __future__ import annotations

from rlx.ir.graph import Graph
from rlx.passes.rewrite import rewrite


def lower_attention(graph: Graph, options=None) -> Graph:
    if options is not None and not options.lower_attention:
        return graph

    def visit(node, rw):
        if node.op != "attention":
            return None
        q, k, v, rh, rw_ = (rw.map(x) for x in node.inputs)
        b = rw.b
        bsz, nq, _ = q.shape
        nk = k.shape[1]
        with b.scope(node.output.name):
            s = b.matmul(q, k, transpose_b=True)
            s = b.mul(s, node.attrs["scale"])
            if rh is not None:
                kh, kw = rh.shape[2], rw_.shape[2]
                s = b.reshape(s, shape=(bsz, nq, kh, kw))
                s = b.add(s, b.reshape(rh, shape=(bsz, nq, kh, 1)))
                s = b.add(s, b.reshape(rw_, shape=(bsz, nq, 1, kw)))
                s = b.reshape(s, shape=(bsz, nq, nk))
            p = b.softmax(s, axis=-1)
            return [b.matmul(p, v)]

    return rewrite(graph, visit)
