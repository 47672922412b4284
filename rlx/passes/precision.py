"""Precision: which ops compute in bf16 when the profile asks for ``precision = "bf16"``.

Matrix products are where bf16 pays (a CPU's dot-product and tile units take
bf16 pairs at two to sixteen times the f32 rate) and where it costs least
accuracy: each output sums many products, and the sum stays f32. So every f32
`matmul` (linear layers, convolutions lowered to GEMMs, the rel-pos terms, the
decoder's products) and every `attention` (its Q·Kᵀ and P·V) gets the attribute
``precision = "bf16"``: operands rounded to bfloat16 (round to nearest even),
products accumulated in f32. Everything else stays f32 -- LayerNorm statistics,
softmax, GELU, residual adds, whatever the host's post-processing reads.

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


def precision(graph: Graph, options=None) -> Graph:
    want = getattr(options, "precision", "f32") if options is not None else "f32"
    if want == "f32":
        return graph

    def visit(node, rw):
        if node.op not in PRODUCT_OPS or node.outputs[0].dtype != "f32" \
                or node.attrs.get("precision") == want:
            return None
        out = rw.b.emit(node.op, [rw.map(v) for v in node.inputs],
                        {**node.attrs, "precision": want}, out_names=[node.output.name],
                        canonical=True)
        return [out]

    return rewrite(graph, visit)
