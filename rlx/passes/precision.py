"""Precision: which ops compute in bf16 when the profile asks for ``precision = "bf16"``.

Matrix products are where bf16 pays (a CPU's dot-product and tile units take
bf16 pairs at two to sixteen times the f32 rate) and where it costs least
accuracy: each output sums many products, and the sum stays f32. So every f32
`matmul` (linear layers, convolutions lowered to GEMMs, the rel-pos terms, the
decoder's products) and every `attention` (its Q·Kᵀ and P·V) large enough to be
bound by the matrix units (`MIN_MACS`) gets the attribute ``precision = "bf16"``:
operands rounded to bfloat16 (round to nearest even), products accumulated in
f32. Everything else stays f32 -- small products, LayerNorm statistics, softmax,
GELU, residual adds, whatever the host's post-processing reads.

The decision is an attribute, not a conversion op, so the reference interpreter
computes exactly these semantics (`rlx.ir.ops.linalg.round_bf16`) and any
backend's bf16 kernel is tested against it on the same inputs; weights stay f32
in the graph and a backend converts (and packs) them once, when they are bound.
The pass runs after lowering and cleanup (so lowered convolutions and decomposed
attention are plain matmuls by then) and before fusion (fused bodies keep it).
"""

from __future__ import annotations

from rlx.ir.graph import Graph
from rlx.passes.rewrite import rewrite

#: ops whose products take bf16 operands under precision bf16
PRODUCT_OPS = ("matmul", "attention")
#: products with fewer multiply-adds than this stay f32 (`PassOptions.bf16_min_macs`). Below
#: ~0.5 G a product is bound by memory traffic and call overhead, not by the matrix units,
#: so bf16 would cost accuracy for nothing. Measured on SAM ViT-B (re-drawn weights, the
#: reference interpreter): the encoder's products are all above (projections and MLP
#: 0.8-7 G, windowed and global attention 1.5-13 G per op), the prompt path's all below
#: (upscaling GEMMs 0.27 G, the rest far less); with the prompt path in bf16 too the
#: low-res logits differed from f32 by rel-L2 2.2e-2 and 0.6 % of mask pixels, with it in
#: f32 by 7.7e-3 and <= 0.25 %.
MIN_MACS = 1 << 29


def macs(node) -> int:
    """Multiply-adds of a product node (matmul: batch x M x N x K; attention: both
    products, b x nq x nk x (d + dv))."""
    if node.op == "attention":
        q, k, v = node.inputs[:3]
        return q.shape[0] * q.shape[1] * k.shape[1] * (q.shape[2] + v.shape[2])
    a = node.inputs[0]
    kdim = a.shape[-2] if node.attrs.get("transpose_a") else a.shape[-1]
    return node.outputs[0].type.numel * kdim


def precision(graph: Graph, options=None) -> Graph:
    want = getattr(options, "precision", "f32") if options is not None else "f32"
    if want == "f32":
        return graph
    floor = getattr(options, "bf16_min_macs", MIN_MACS)

    def visit(node, rw):
        if node.op not in PRODUCT_OPS or node.outputs[0].dtype != "f32" \
                or node.attrs.get("precision") == want or macs(node) < floor:
            return None
        out = rw.b.emit(node.op, [rw.map(v) for v in node.inputs],
                        {**node.attrs, "precision": want}, out_names=[node.output.name],
                        canonical=True)
        return [out]

    return rewrite(graph, visit)
