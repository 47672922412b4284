"""window_partition / window_unpartition -> pad + reshape + transpose (+ slice).

Expressed with movement ops only, so later passes can fold the transposes
into the indexing of neighbouring kernels instead of copying whole tensors.
"""

from __future__ import annotations

from rlx.ir.graph import Graph
from rlx.passes.rewrite import rewrite


def _padding(h, w, ws):
    return (ws - h % ws) % ws, (ws - w % ws) % ws


def lower_windows(graph: Graph, options=None) -> Graph:
    def visit(node, rw):
        b = rw.b
        if node.op == "window_partition":
            x = rw.map(node.inputs[0])
            ws = node.attrs["window"]
            bsz, h, w, c = x.shape
            ph, pw = _padding(h, w, ws)
            with b.scope(node.output.name):
                if ph or pw:
                    x = b.pad(x, pads=(0, 0, 0, ph, 0, pw, 0, 0))
                hp, wp = h + ph, w + pw
                t = b.reshape(x, shape=(bsz, hp // ws, ws, wp // ws, ws, c))
                t = b.transpose(t, perm=(0, 1, 3, 2, 4, 5))
                return [b.reshape(t, shape=(-1, ws, ws, c))]
        if node.op == "window_unpartition":
            x = rw.map(node.inputs[0])
            ws, h, w = node.attrs["window"], node.attrs["height"], node.attrs["width"]
            ph, pw = _padding(h, w, ws)
            hp, wp = h + ph, w + pw
            c = x.shape[3]
            bsz = x.shape[0] // ((hp // ws) * (wp // ws))
            with b.scope(node.output.name):
                t = b.reshape(x, shape=(bsz, hp // ws, wp // ws, ws, ws, c))
                t = b.transpose(t, perm=(0, 1, 3, 2, 4, 5))
                t = b.reshape(t, shape=(bsz, hp, wp, c))
                if ph or pw:
                    t = b.slice(t, starts=(0, 0, 0, 0), ends=(bsz, h, w, c))
                return [t]
        return None

    return rewrite(graph, visit)
