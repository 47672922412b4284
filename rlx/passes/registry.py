"""Every pass, registered here and only here, and the standard pipelines.

To add a pass: write ``def my_pass(graph, options) -> Graph`` in its own module
under `rlx/passes/`, add one `Pass(...)` line below, and put its name into the
pipeline where it belongs.
"""

from __future__ import annotations

from rlx.errors import RlxError
from rlx.passes.cse import cse
from rlx.passes.dce import dce
from rlx.passes.fold_constants import fold_constants
from rlx.passes.fold_pointwise_conv import fold_pointwise_conv
from rlx.passes.fuse import fuse
from rlx.passes.fuse_attention import fuse_attention
from rlx.passes.fuse_elementwise import fuse_elementwise
from rlx.passes.fuse_gemm import fuse_gemm
from rlx.passes.fuse_norm import fuse_norm
from rlx.passes.infer_shapes import infer_shapes
from rlx.passes.lower_attention import lower_attention
from rlx.passes.lower_conv import lower_conv
from rlx.passes.lower_conv_transpose import lower_conv_transpose
from rlx.passes.lower_conv_winograd import lower_conv_winograd
from rlx.passes.lower_linear import lower_linear
from rlx.passes.lower_pool import lower_pool
from rlx.passes.lower_windows import lower_windows
from rlx.passes.narrow_rows import narrow_rows
from rlx.passes.manager import Pass
from rlx.passes.options import PassOptions
from rlx.passes.precision import precision
from rlx.passes.simplify_movement import simplify_movement

PASSES: dict[str, Pass] = {p.name: p for p in [
    Pass("infer-shapes", infer_shapes, "re-derive canonical attributes and result types"),
    Pass("fold-pointwise-conv", fold_pointwise_conv,
         "1x1 conv after a (transposed) conv -> one conv with composed weights, if cheaper"),
    Pass("lower-linear", lower_linear, "linear -> 2-D matmul (transposed weight) + bias"),
    Pass("lower-conv-winograd", lower_conv_winograd,
         "conv2d 3x3 stride 1 -> Winograd tile transforms + per-tile-position matmuls"),
    Pass("lower-conv", lower_conv, "conv2d -> patch matrix (reshape or im2col) + matmul + bias"),
    Pass("lower-conv-transpose", lower_conv_transpose,
         "conv_transpose2d with kernel == stride -> matmul + depth-to-space"),
    Pass("lower-windows", lower_windows, "window (un)partition -> pad/reshape/transpose/slice"),
    Pass("lower-attention", lower_attention,
         "attention -> matmul + rel-pos bias + softmax + matmul (if the options ask)"),
    Pass("lower-pool", lower_pool, "unpadded max_pool2d -> maximum of its strided slices"),
    Pass("narrow-rows", narrow_rows,
         "rows sliced away after a per-row matmul (+ bias) are not computed: slice its input"),
    Pass("fold-constants", fold_constants, "weight-only subexpressions -> derived weights"),
    Pass("simplify-movement", simplify_movement, "collapse reshape/transpose chains"),
    Pass("cse", cse, "merge identical computations"),
    Pass("dce", dce, "drop unused nodes and weights"),
    Pass("precision", precision,
         "precision bf16: matmul/attention take bf16 operands, accumulate in f32"),
    Pass("fuse", fuse, "fusion: GEMM epilogues, then norms, then elementwise chains"),
    Pass("fuse-gemm", fuse_gemm, "matmul + bias/activation/scale/residual -> fused.gemm"),
    Pass("fuse-norm", fuse_norm, "layer_norm/softmax (+ cheap prologue/epilogue) -> fused.norm"),
    Pass("fuse-elementwise", fuse_elementwise,
         "same-shape elementwise chains (+ absorbed views) -> fused.elementwise"),
    Pass("fuse-attention", fuse_attention,
         "attention + the view ops on its operands -> fused.attention (strided reads)"),
]}

#: Lowering from HIR to the primitive ops backends compile.
LOWERING = ["infer-shapes", "fold-pointwise-conv", "lower-linear", "lower-conv-winograd",
            "lower-conv", "lower-conv-transpose", "lower-windows", "lower-attention", "lower-pool"]
CLEANUP = ["narrow-rows", "fold-constants", "simplify-movement", "cse", "dce"]


def register(p: Pass) -> None:
    """Add a pass (for extensions outside rlx); names are unique."""
    if p.name in PASSES:
        raise ValueError(f"pass {p.name!r} already registered")
    PASSES[p.name] = p


def get_pass(name: str) -> Pass:
    try:
        return PASSES[name]
    except KeyError:
        raise RlxError(f"unknown pass {name!r}; known: {', '.join(PASSES)}") from None


def default_pipeline(options: PassOptions | None = None) -> list[str]:
    """Names of the passes a compile runs, in order."""
    fusion = ["fuse"] if options is None or options.fuse else []
    bf16 = ["precision"] if options is not None and options.precision != "f32" else []
    return LOWERING + CLEANUP + bf16 + fusion
