"""The `fuse` pass: GEMM epilogues, then norms, then elementwise chains, then attention views.

Order matters: a bias/GELU/residual chain after a matmul belongs to the GEMM
kernel (the output tile is touched once), an elementwise producer used only
by a LayerNorm or softmax belongs to the norm kernel, and whatever
elementwise work is left is grouped into elementwise kernels; finally the
movement ops feeding attention operands are folded into the attention
kernel's indexing. Each stage is a pass of its own (`fuse-gemm`, `fuse-norm`,
`fuse-elementwise`, `fuse-attention`); `fuse` runs them all so
`rlx dump-ir --after fuse` shows the final groups.
"""

from __future__ import annotations

from rlx.ir.graph import Graph
from rlx.passes.fuse_attention import fuse_attention
from rlx.passes.fuse_elementwise import fuse_elementwise
from rlx.passes.fuse_gemm import fuse_gemm
from rlx.passes.fuse_norm import fuse_norm


def fuse(graph: Graph, options=None) -> Graph:
    if options is not None and not options.fuse:
        return graph
    graph = fuse_gemm(graph, options)
    graph = fuse_norm(graph, options)
    graph = fuse_elementwise(graph, options)
    return fuse_attention(graph, options)
