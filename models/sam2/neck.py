"""SAM 2's FPN neck: 1x1 lateral convolutions, one nearest-neighbour top-down path, sine positions.

The official ``FpnNeck`` maps the four trunk stages (highest resolution
first) to ``d_model`` channels with a 1x1 conv each (``convs.{j}`` reads
stage ``3 - j``), walking from the coarsest level up; a level listed in
``fpn_top_down_levels`` (2 and 3 in every config) adds the level below it
upsampled 2x by nearest neighbour. ``ImageEncoder.scalp = 1`` then drops the
coarsest level, so only three levels leave the neck, and in image mode only
the S/16 level (``image_embed``) carries the top-down sum; the other two are
plain laterals that the mask decoder immediately projects again
(``conv_s0`` / ``conv_s1``).

Layout: the trunk's features are NHWC and every 1x1 conv is a GEMM over
their channels. The levels leave as NCHW (what the predictor stores) by
computing ``W @ X^T`` directly, a GEMM whose right operand is a transposed
view, so no transpose kernel runs. Nearest 2x upsampling is a broadcast of
the coarse level over a ``[.., h, 2, w, 2]`` split of the fine one, fused into
the add.

The sine position encoding of each level (``vision_pos_enc``) depends on the
level's size only; image mode never reads it (the decoder uses the prompt
encoder's dense encoding), so it is computed on the host for callers that
want it, with the same function as the SAM 3 neck (the official class is the
same).
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from rlx.ir import GraphBuilder
from rlx.ir.graph import Value

from models.sam3.position_encoding import sine_position_encoding

from .config import Sam2Config

__all__ = ["NECK_PREFIX", "lateral", "level_nchw", "top_down_sum", "vision_pos_enc"]

NECK_PREFIX = "image_encoder.neck"


def lateral(b: GraphBuilder, c: Sam2Config, stage: int):
    """The 1x1 lateral conv of trunk stage `stage` (0 = highest resolution): (weight [d, C], bias)."""
    j = len(c.backbone_channel_list) - 1 - stage
    cin, d = c.backbone_channel_list[j], c.d_model
    w = b.weight(f"{NECK_PREFIX}.convs.{j}.conv.weight", (d, cin, c.fpn_kernel_size,
                                                          c.fpn_kernel_size))
    if c.fpn_kernel_size != 1:
        raise NotImplementedError(f"{c.name}: FPN kernel size {c.fpn_kernel_size} (the official "
                                  "configs all use 1)")
    return b.reshape(w, shape=(d, cin)), b.weight(f"{NECK_PREFIX}.convs.{j}.conv.bias", (d,))


def level_nchw(b: GraphBuilder, x: Value, weight: Value, bias: Optional[Value]) -> Value:
    """1x1 conv of NHWC ``x`` [1, h, w, C] as ``W @ X^T (+ bias)``: ``[O, h*w]`` (NCHW order)."""
    _, h, w, cin = x.shape
    xt = b.transpose(b.reshape(x, shape=(h * w, cin)), perm=(1, 0))  # a view
    y = b.matmul(weight, xt)
    if bias is not None:
        y = b.add(y, b.reshape(bias, shape=(weight.shape[0], 1)))
    return y


def top_down_sum(b: GraphBuilder, fine: Value, coarse: Value, h: int, w: int) -> Value:
    """``fine + nearest_2x(coarse)`` on ``[C, h*w]`` / ``[C, h/2*w/2]`` maps -> ``[C, h, 2, w, 2]``-ordered ``[C, h*w]``."""
    d = fine.shape[0]
    f = b.reshape(fine, shape=(d, h // 2, 2, w // 2, 2))
    g = b.reshape(coarse, shape=(d, h // 2, 1, w // 2, 1))
    return b.reshape(b.add(f, g), shape=(d, h * w))


def vision_pos_enc(c: Sam2Config) -> List[np.ndarray]:
    """The neck's position encodings of the kept levels, ``[1, d_model, h, w]`` each (host, cached)."""
    if not c.pos_normalize:
        raise NotImplementedError("only the normalized sine encoding of the official configs")
    return [sine_position_encoding(s, s, c.pos_num_feats, temperature=c.pos_temperature)
            for s in c.feature_sizes]


def check_levels(c: Sam2Config, levels: Sequence[int]) -> None:
    """The image-features builder composes conv_s0/conv_s1 with laterals: those levels must be plain."""
    for lvl in levels:
        if lvl in c.fpn_top_down_levels:
            raise NotImplementedError(f"{c.name}: level {lvl} has a top-down path; the image "
                                      "builder assumes levels 0 and 1 are laterals only")
    if c.scalp != 1 or c.fpn_interp_model != "nearest" or c.fuse_type != "sum":
        raise NotImplementedError(f"{c.name}: only scalp=1, nearest top-down and sum fusion "
                                  "(every official config)")
