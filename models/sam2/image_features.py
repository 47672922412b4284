"""The whole image side of SAM 2 as one graph: image -> the three levels the predictor keeps.

``SAM2ImagePredictor.set_image`` runs ``SAM2Base.forward_image`` (Hiera
trunk, FPN neck, scalp, then ``sam_mask_decoder.conv_s0`` / ``conv_s1`` on
the two high-resolution levels), adds ``no_mem_embed`` to the S/16 level
(``directly_add_no_mem_embed``) and stores

* ``high_res_0`` ``[1, d/8, S/4, S/4]``   (``_features["high_res_feats"][0]``)
* ``high_res_1`` ``[1, d/4, S/8, S/8]``   (``_features["high_res_feats"][1]``)
* ``image_embed`` ``[1, d, S/16, S/16]``  (``_features["image_embed"]``)

This builder emits exactly that, so one compiled call replaces ``set_image``'s
model work. ``conv_s0`` / ``conv_s1`` follow the neck's 1x1 laterals with
nothing in between (levels 0 and 1 get no top-down path), so each pair is
composed into one 1x1 conv: ``W = W_s @ W_lat``, ``b = W_s @ b_lat + b_s``,
weight-only products folded at bind time. The S/4 level then costs one
96 -> 32 GEMM instead of 96 -> 256 -> 32 (the same sums, reassociated: a
difference at float32 rounding level). The weights keep their state-dict
names, including ``sam_mask_decoder.conv_s*`` and ``no_mem_embed``.
"""

from __future__ import annotations

from typing import Dict, Tuple

from rlx.ir import Graph, GraphBuilder
from rlx.ir.graph import Value

from .config import Sam2Config, get_config
from .hiera import hiera_trunk
from .neck import check_levels, lateral, level_nchw, top_down_sum

__all__ = ["IMAGE_FEATURES", "OUTPUT_NAMES", "image_feature_shapes", "image_features",
           "build_image_features"]

#: subgraph name
IMAGE_FEATURES = "image_features"
#: the graph's outputs, in order
OUTPUT_NAMES = ("high_res_0", "high_res_1", "image_embed")
_HEADS = ("sam_mask_decoder.conv_s0", "sam_mask_decoder.conv_s1")


def image_feature_shapes(config, image_size: int | None = None) -> Dict[str, Tuple[int, ...]]:
    """Output name -> shape (NCHW, batch 1), e.g. ``image_embed: (1, 256, 64, 64)``."""
    c = get_config(config, image_size)
    d = c.d_model
    s0, s1, s2 = c.feature_sizes
    return {"high_res_0": (1, d // 8, s0, s0), "high_res_1": (1, d // 4, s1, s1),
            "image_embed": (1, d, s2, s2)}


def image_features(b: GraphBuilder, c: Sam2Config, image: Value) -> Tuple[Value, Value, Value]:
    """Emit trunk, neck, conv_s0/conv_s1 and no_mem_embed on ``image`` [1, 3, S, S]."""
    if not c.use_high_res_features_in_sam:
        raise NotImplementedError(f"{c.name}: use_high_res_features_in_sam=False")
    check_levels(c, (0, 1))
    stages = hiera_trunk(b, c, image)
    shapes = image_feature_shapes(c)
    d = c.d_model
    outs = []
    with b.scope("neck"):
        for level, head in enumerate(_HEADS):  # laterals composed with conv_s0 / conv_s1
            w_lat, b_lat = lateral(b, c, level)
            cout = shapes[OUTPUT_NAMES[level]][1]
            w_s = b.reshape(b.weight(f"{head}.weight", (cout, d, 1, 1)), shape=(cout, d))
            b_s = b.reshape(b.weight(f"{head}.bias", (cout,)), shape=(cout, 1))
            w = b.matmul(w_s, w_lat)
            bias = b.add(b.matmul(w_s, b.reshape(b_lat, shape=(d, 1))), b_s)
            y = level_nchw(b, stages[level], w, None)
            outs.append(b.add(y, bias))
        # S/16: lateral + nearest_2x(S/32 lateral), then no_mem_embed
        h = stages[2].shape[1]
        fine = level_nchw(b, stages[2], *lateral(b, c, 2))
        coarse = level_nchw(b, stages[3], *lateral(b, c, 3))
        emb = top_down_sum(b, fine, coarse, h, stages[2].shape[2])
        if c.directly_add_no_mem_embed:
            emb = b.add(emb, b.reshape(b.weight("no_mem_embed", (1, 1, d)), shape=(d, 1)))
        outs.append(emb)
    return tuple(b.op("reshape", y, shape=shapes[name], out_names=[name])
                 for name, y in zip(OUTPUT_NAMES, outs))


def build_image_features(config, image_size: int | None = None) -> Graph:
    """``%image [1, 3, S, S]`` (normalized, as SAM2Transforms leaves it) -> high_res_0, high_res_1, image_embed."""
    c = get_config(config, image_size)
    b = GraphBuilder(IMAGE_FEATURES)
    image = b.input("image", (1, c.in_chans, c.image_size, c.image_size))
    b.output(*image_features(b, c, image))
    return b.build()
