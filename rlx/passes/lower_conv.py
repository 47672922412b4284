"""conv2d -> (patch gather) + matmul + bias, in NCHW order throughout.

Three forms of the patch matrix [N, C*kh*kw, OH*OW]:
  * 1x1, stride 1, no padding: the input itself, reshaped;
  * kernel == stride, no padding or dilation (ViT patch embedding): a reshape
    and a transpose, no im2col;
  * anything else: the `im2col` op.
The weight [O, C, kh, kw] reshapes to [O, C*kh*kw] and multiplies the patch
matrix from the left, which yields [N, O, OH*OW], already NCHW. Grouped
convolutions are left for the backend's conv2d kernel.
"""

from __future__ import annotations

from rlx.ir.graph import Graph
from rlx.passes.rewrite import rewrite


def patch_matrix(b, x, kernel, stride, padding, dilation):
    n, c, h, w = x.shape
    kh, kw = kernel
    if kernel == (1, 1) and stride == (1, 1) and padding == (0, 0):
        return b.reshape(x, shape=(n, c, h * w))
    if (kernel == stride and padding == (0, 0) and dilation == (1, 1)
            and h % kh == 0 and w % kw == 0):
        oh, ow = h // kh, w // kw
        t = b.reshape(x, shape=(n, c, oh, kh, ow, kw))
        t = b.transpose(t, perm=(0, 1, 3, 5, 2, 4))
        return b.reshape(t, shape=(n, c * kh * kw, oh * ow))
    return b.im2col(x, kernel=kernel, stride=stride, padding=padding, dilation=dilation)


def lower_conv(graph: Graph, options=None) -> Graph:
    def visit(node, rw):
        if node.op != "conv2d" or node.attrs["groups"] != 1:
            return None
        x, w, bias = (rw.map(v) for v in node.inputs)
        o, c, kh, kw = w.shape
        n, _, oh, ow = node.output.shape
        b = rw.b
        with b.scope(node.output.name):
            cols = patch_matrix(b, x, (kh, kw), node.attrs["stride"], node.attrs["padding"],
                                node.attrs["dilation"])
            w2 = b.reshape(w, shape=(o, c * kh * kw))
            y = b.matmul(w2, cols)
            if bias is not None:
                y = b.add(y, b.reshape(bias, shape=(o, 1)))
            y = b.reshape(y, shape=(n, o, oh, ow))
        return [y]

    return rewrite(graph, visit)
