"""max_pool2d without padding -> the elementwise maximum of its strided taps.

A kh x kw pooling with stride (sh, sw) is the maximum of kh*kw strided slices
of its input: tap (i, j) is ``x[:, :, i::sh, j::sw]`` cut to the output size.
Slices are movement ops, so the fusion passes fold them into the strided
loads of one elementwise kernel: the input is read once, the output written
once, and the kernel is vectorized and split over threads like every other
elementwise kernel. (The earlier form, a reshape to ``[n, c, h/kh, kh,
w/kw, kw]`` and a reduce_max over the two kernel axes, ran as a host numpy
reduction over non-contiguous axes: SAM3's 0.5x neck branch spent 60% of its
time there.) Overlapping poolings (stride < kernel) lower the same way.

Left for the backend's own kernel: padded poolings (the padding counts as
-inf, which a slice cannot express) and kernels of more than `MAX_TAPS`
taps, where one reduction beats a long chain of maxima.
"""

from __future__ import annotations

from rlx.ir.graph import Graph
from rlx.passes.rewrite import rewrite

#: largest kernel (kh * kw) lowered to a chain of maxima
MAX_TAPS = 16


def lower_pool(graph: Graph, options=None) -> Graph:
    def visit(node, rw):
        if node.op != "max_pool2d":
            return None
        a = node.attrs
        x = rw.map(node.inputs[0])
        n, c, _, _ = x.shape
        kh, kw = a["kernel"]
        sh, sw = a["stride"]
        if a["padding"] != (0, 0) or kh * kw > MAX_TAPS:
            return None
        oh, ow = node.output.shape[2:]
        b = rw.b
        with b.scope(node.output.name):
            taps = [b.slice(x, starts=[0, 0, i, j],
                            ends=[n, c, i + (oh - 1) * sh + 1, j + (ow - 1) * sw + 1],
                            steps=[1, 1, sh, sw])
                    for i in range(kh) for j in range(kw)]
            while len(taps) > 1:  # a balanced tree: short dependency chains
                pairs = [b.maximum(taps[k], taps[k + 1]) for k in range(0, len(taps) - 1, 2)]
                taps = pairs + ([taps[-1]] if len(taps) % 2 else [])
            return [taps[0]]

    return rewrite(graph, visit)
