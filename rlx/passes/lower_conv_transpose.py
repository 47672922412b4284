"""conv_transpose2d with kernel == stride -> matmul + depth-to-space.

With kernel == stride and no padding the output windows do not overlap, so
each input pixel independently produces a k x k block of every output
channel: one GEMM [Cout*k*k, Cin] x [Cin, H*W], then a reshape/transpose that
scatters the k x k blocks into place (depth-to-space). The bias is added to
the GEMM's rows (bias[o] for every row (o, i, j)), where the GEMM fusion makes
it the product's epilogue. SAM's mask upscaling
and SAM3's FPN use exactly this form; other transposed convolutions are left
for the backend's conv_transpose2d kernel.
"""

from __future__ import annotations

from rlx.ir.graph import Graph
from rlx.passes.rewrite import rewrite


def lower_conv_transpose(graph: Graph, options=None) -> Graph:
    def visit(node, rw):
        if node.op != "conv_transpose2d":
            return None
        a = node.attrs
        x, w, bias = (rw.map(v) for v in node.inputs)
        cin, cout, kh, kw = w.shape
        if not ((kh, kw) == a["stride"] and a["padding"] == (0, 0) and a["dilation"] == (1, 1)
                and a["output_padding"] == (0, 0) and a["groups"] == 1):
            return None
        n, _, h, wd = x.shape
        b = rw.b
        with b.scope(node.output.name):
            # weight [Cin, Cout, kh, kw] -> [Cout*kh*kw, Cin]; folded once at bind time.
            wm = b.reshape(b.transpose(w, perm=(1, 2, 3, 0)), shape=(cout * kh * kw, cin))
            y = b.matmul(wm, b.reshape(x, shape=(n, cin, h * wd)))
            if bias is not None:
                # per GEMM row (o, i, j): bias[o] repeated kh*kw times (folded at bind). Added
                # before the depth-to-space it becomes the GEMM's epilogue, not a separate pass
                # over the scattered output (which then is a plain copy)
                rows = b.broadcast_to(b.reshape(bias, shape=(cout, 1)), shape=(cout, kh * kw))
                y = b.add(y, b.reshape(rows, shape=(cout * kh * kw, 1)))
            y = b.reshape(y, shape=(n, cout, kh, kw, h, wd))
            y = b.transpose(y, perm=(0, 1, 4, 2, 5, 3))
            y = b.reshape(y, shape=(n, cout, h * kh, wd * kw))
        return [y]

    return rewrite(graph, visit)
