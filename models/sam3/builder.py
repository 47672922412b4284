"""HIR builders for the four branches of the SAM3 neck (one subgraph each).

Each branch reads the trunk feature ``[B, 1024, 72, 72]`` and emits one level
``[B, 256, h, w]``. The builders say only *what* is computed, in the HIR ops
the official modules map to one-to-one (``conv_transpose2d``, ``gelu`` with
the exact erf, ``max_pool2d``, ``conv2d``); the general lowering passes turn
the k2s2 transposed convolutions into GEMM + depth-to-space, the 2x2 max-pool
into the maximum of four strided slices (one fused elementwise kernel) and
the 1x1 / 3x3 convolutions into GEMMs over a patch matrix. Nothing in `rlx/` knows about this neck.

Branches compile as separate subgraphs because they share nothing but the
input: the 4x branch alone is about two thirds of the neck's FLOPs, and
separate subgraphs keep each arena small and each one dumpable on its own
(``rlx dump-ir sam3-neck --subgraph branch_4x``).
"""

from __future__ import annotations

from typing import Callable, Dict

from rlx.ir import Graph, GraphBuilder

from .config import DEFAULT, NeckConfig, branch_layers, branch_name

__all__ = ["INPUT_NAME", "build_branch", "branch_builders"]

#: Name of every branch graph's single input.
INPUT_NAME = "feature"


def build_branch(index: int, scale: float, cfg: NeckConfig = DEFAULT) -> Graph:
    """The graph of branch ``convs.{index}`` (scale factor `scale`)."""
    b = GraphBuilder(branch_name(scale))
    x = b.input(INPUT_NAME, cfg.input_shape)
    layers = {layer.name: layer for layer in branch_layers(scale, cfg)}

    def params(name):
        layer = layers[name]
        prefix = f"convs.{index}.{name}"
        return (b.weight(f"{prefix}.weight", layer.weight_shape()),
                b.weight(f"{prefix}.bias", (layer.out_channels,)))

    def deconv(x, name):
        with b.scope(f"convs.{index}.{name}"):
            return b.conv_transpose2d(x, *params(name), stride=2)

    def conv(x, name, padding):
        with b.scope(f"convs.{index}.{name}"):
            return b.conv2d(x, *params(name), padding=padding)

    if scale == 4.0:
        x = deconv(x, "dconv_2x2_0")
        with b.scope(f"convs.{index}.gelu"):
            x = b.gelu(x, approximate="none")
        x = deconv(x, "dconv_2x2_1")
    elif scale == 2.0:
        x = deconv(x, "dconv_2x2")
    elif scale == 0.5:
        with b.scope(f"convs.{index}.maxpool_2x2"):
            x = b.max_pool2d(x, kernel=2, stride=2)
    x = conv(x, "conv_1x1", 0)
    x = conv(x, "conv_3x3", 1)
    b.output(x)
    graph = b.build()
    expected = cfg.level_shape(scale)
    if x.shape != expected:  # a config the builder cannot honour; fail loudly here
        raise AssertionError(f"{graph.name}: built {x.shape}, expected {expected}")
    return graph


def branch_builders(cfg: NeckConfig = DEFAULT) -> Dict[str, Callable[[], Graph]]:
    """Subgraph name -> zero-argument builder, in branch order (for the model registry)."""
    return {branch_name(s): (lambda i=i, s=s: build_branch(i, s, cfg))
            for i, s in enumerate(cfg.scale_factors)}
