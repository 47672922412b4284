"""HIR builders for SAM 2's prompt side: one "prompt -> masks" graph per prompt shape.

SAM 2's prompt encoder and mask decoder are SAM v1's with four additions, so
this module builds on `models.sam.decoder` and writes only the differences:

=================================  ==================================================
SAM v1 piece (reused as is)        SAM 2 difference (here)
=================================  ==================================================
`mask_downscale`, dense PE,        --
no-mask embedding
`two_way_transformer`              an extra *object-score token* in front of the IoU
                                   and mask tokens (``pred_obj_scores``)
`mlp_heads` (hypernetworks, IoU)   IoU through a sigmoid (``iou_prediction_use_sigmoid``);
                                   an object-score MLP on the object token
upscaling in token layout,         *high-resolution skips*: ``conv_s1`` features added
`mask_product_tokens`              after the first ConvTranspose (before its
                                   LayerNorm), ``conv_s0`` features after the second
                                   (before its GELU) -- `upscale_with_skips`
=================================  ==================================================

The remaining SAM 2 difference, dynamic multimask via stability (single-mask
output falls back to the best multimask token when token 0's mask is
unstable), is a selection among outputs the graph already returns, done on
the host (`models.sam2.predictor`).

Weight names: SAM 2's state dict calls the two modules ``sam_prompt_encoder``
/ ``sam_mask_decoder`` (v1: ``prompt_encoder`` / ``mask_decoder``) and the
transformer MLPs ``mlp.layers.0/1`` (v1: ``mlp.lin1/2``). `Sam2NamesBuilder`
is a `GraphBuilder` that translates v1's names as the reused builders declare
their weights, so the IR carries SAM 2's names and an official checkpoint binds
without remapping.

The bucket graph (one per number of sparse tokens, with or without a mask
prompt) takes the three feature levels ``SAM2ImagePredictor.set_image`` keeps
plus the prompt, and is compiled staged (`rlx.runtime.staged`) with the image
inputs slow: the image embedding in token layout, the first layer's image-side
projections and the skip features re-ordered into the upscaling's row order
run once per image; each click runs the rest.
"""

from __future__ import annotations

from dataclasses import replace as _replace
from typing import Optional, Tuple

from rlx.errors import InputError
from rlx.ir import Graph, GraphBuilder
from rlx.ir.graph import Value

from models.sam.config import SamConfig
from models.sam.decoder import (
    _mm,
    dense_positional_encoding,
    mask_downscale,
    mask_product_tokens,
    mlp_heads,
    no_mask_embedding,
    two_way_transformer,
)

from .config import Sam2Config, get_config

__all__ = [
    "IMAGE_INPUTS",
    "PROMPT_TO_MASKS",
    "MAX_SPARSE_TOKENS",
    "Sam2NamesBuilder",
    "heads_config",
    "bucket_name",
    "build_prompt_to_masks",
    "output_tokens",
    "upscale_with_skips",
    "skip_tokens",
    "PROMPT_SUBGRAPHS",
]

PE, MD = "sam_prompt_encoder", "sam_mask_decoder"
PROMPT_TO_MASKS = "prompt_to_masks"
#: the bucket inputs that change once per image (what set_image keeps), in call order
IMAGE_INPUTS = ("image_embed", "high_res_0", "high_res_1")
#: a sanity bound on prompt size: one graph is compiled per distinct count
MAX_SPARSE_TOKENS = 64

#: SAM v1 weight-name pieces -> SAM 2's (prefix renames, then the transformer MLP layers)
_RENAMES = (("prompt_encoder.", f"{PE}."), ("mask_decoder.", f"{MD}."))
_MLP_RENAMES = ((".mlp.lin1.", ".mlp.layers.0."), (".mlp.lin2.", ".mlp.layers.1."))


def sam2_weight_name(v1_name: str) -> str:
    """SAM v1's state-dict name of a prompt-side tensor -> SAM 2's."""
    name = v1_name
    for old, new in _RENAMES:
        if name.startswith(old):
            name = new + name[len(old):]
            break
    for old, new in _MLP_RENAMES:
        name = name.replace(old, new)
    return name


class Sam2NamesBuilder(GraphBuilder):
    """A `GraphBuilder` declaring SAM v1's prompt-side weights under SAM 2's names."""

    def weight(self, name, shape, dtype="f32"):
        return super().weight(sam2_weight_name(name), shape, dtype)


def heads_config(config) -> SamConfig:
    """The SAM v1 config with the same prompt encoder and mask decoder as `config`.

    The v1 builders read their sizes from a `SamConfig`; SAM 2's heads have the
    same structure with the image embedding at ``image_size / backbone_stride``.
    The encoder fields are placeholders (never built from this config).
    """
    c = get_config(config)
    if c.d_model % 8:
        raise InputError(f"{c.name}: d_model {c.d_model} must be a multiple of 8")
    return SamConfig(
        name=f"{c.name}-heads", encoder_embed_dim=c.d_model, encoder_depth=1,
        encoder_num_heads=1, encoder_global_attn_indexes=(), image_size=c.image_size,
        patch_size=c.backbone_stride, out_chans=c.d_model, prompt_embed_dim=c.d_model,
        mask_in_chans=c.mask_in_chans, decoder_depth=c.decoder_depth,
        decoder_num_heads=c.decoder_num_heads, decoder_mlp_dim=c.decoder_mlp_dim,
        num_multimask_outputs=c.num_multimask_outputs, iou_head_depth=c.iou_head_depth,
        iou_head_hidden_dim=c.iou_head_hidden_dim)


def bucket_name(num_sparse: int, has_mask: bool) -> str:
    return f"{PROMPT_TO_MASKS}_n{num_sparse}{'_mask' if has_mask else ''}"


def output_tokens(b: GraphBuilder, c: Sam2Config) -> Value:
    """Object-score token (if any), IoU token, mask tokens: ``[1, s + 1 + M, C]``."""
    d, m = c.d_model, c.num_multimask_outputs + 1
    parts = [b.weight(f"{MD}.obj_score_token.weight", (1, d))] if c.pred_obj_scores else []
    parts += [b.weight(f"{MD}.iou_token.weight", (1, d)),
              b.weight(f"{MD}.mask_tokens.weight", (m, d))]
    return b.reshape(b.concat(*parts, axis=0), shape=(1, len(parts) - 1 + m, d))


def skip_tokens(b: GraphBuilder, feat: Value, grid: int, levels: int) -> Value:
    """An NCHW map ``[1, C, 2^L g, 2^L g]`` in the upscaling's row order: ``[1, 4^L g*g, C]``.

    The token-layout upscaling (`models.sam.decoder.upscale_tokens`) orders
    the rows of its L-th transposed convolution as (h, w, kh1, kw1, ..., khL,
    kwL): pixel of the g x g embedding grid, then one 2x2 sub-pixel per level.
    Output pixel row is ``2^L h + 2^(L-1) kh1 + ... + khL`` (columns alike),
    so the map is split into those digits and transposed once. It depends on
    the image only, so the staged bucket runs it once per image.
    """
    ch = feat.shape[1]
    # [1, C, g, 2 (kh1), ..., 2 (khL), g, 2 (kw1), ..., 2 (kwL)]
    x = b.reshape(feat, shape=(1, ch, grid) + (2,) * levels + (grid,) + (2,) * levels)
    h_axes = list(range(2, 3 + levels))            # h, kh1..khL
    w_axes = list(range(3 + levels, 4 + 2 * levels))  # w, kw1..kwL
    perm = [0, h_axes[0], w_axes[0]]
    for lv in range(1, levels + 1):
        perm += [h_axes[lv], w_axes[lv]]
    perm.append(1)
    x = b.transpose(x, perm=tuple(perm))
    return b.reshape(x, shape=(1, 4 ** levels * grid * grid, ch))


def _deconv_tokens(b: GraphBuilder, x: Value, prefix: str, cin: int, cout: int) -> Value:
    """ConvTranspose2d k=s=2 on token rows: ``[B, R, Cin] -> [B, R, (kh, kw, Cout)]``.

    The same GEMM form as `models.sam.decoder.upscale_tokens` (weight and
    bias re-laid out once at bind time, bias added in the GEMM epilogue).
    """
    w = b.weight(f"{prefix}.weight", (cin, cout, 2, 2))
    wm = b.reshape(b.transpose(w, perm=(0, 2, 3, 1)), shape=(cin, 4 * cout))
    bias = b.reshape(b.broadcast_to(b.reshape(b.weight(f"{prefix}.bias", (cout,)),
                                              shape=(1, cout)), shape=(4, cout)),
                     shape=(4 * cout,))
    return b.add(_mm(b, x, wm), bias)


def upscale_with_skips(b: GraphBuilder, c: Sam2Config, keys: Value,
                       skip_s1: Optional[Value], skip_s0: Optional[Value]) -> Value:
    """``MaskDecoder.output_upscaling`` with SAM 2's high-resolution skips, in token layout.

    ``act1(ln1(dc1(src) + feat_s1))`` then ``act2(dc2(.) + feat_s0)``;
    `keys` ``[B, N, C]`` (N = g*g), skips from `skip_tokens` (``[1, 4N, C/4]``
    and ``[1, 16N, C/8]``), or None when the config has no high-res features.
    Returns ``[B, 16N, C/8]`` rows in the order `mask_product_tokens` expects.
    """
    d = c.d_model
    c1, c2 = d // 4, d // 8
    p = f"{MD}.output_upscaling"
    bsz, n, _ = keys.shape
    with b.scope("output_upscaling"):
        x = b.reshape(_deconv_tokens(b, keys, f"{p}.0", d, c1), shape=(bsz, 4 * n, c1))
        if skip_s1 is not None:
            x = b.add(x, skip_s1)
        x = b.layer_norm(x, b.weight(f"{p}.1.weight", (c1,)), b.weight(f"{p}.1.bias", (c1,)),
                         axis=2, eps=1e-6)
        x = b.gelu(x, approximate="none")
        x = _deconv_tokens(b, x, f"{p}.3", c1, c2)  # [B, 4N, (kh2, kw2, C/8)]
        if skip_s0 is not None:
            x = b.add(x, b.reshape(skip_s0, shape=(1, 4 * n, 4 * c2)))
        x = b.gelu(x, approximate="none")
        return b.reshape(x, shape=(bsz, 16 * n, c2))


def _mlp(b: GraphBuilder, x: Value, prefix: str, dims) -> Value:
    for i in range(len(dims) - 1):
        x = b.linear(x, b.weight(f"{prefix}.layers.{i}.weight", (dims[i + 1], dims[i])),
                     b.weight(f"{prefix}.layers.{i}.bias", (dims[i + 1],)))
        if i < len(dims) - 2:
            x = b.relu(x)
    return x


def object_score(b: GraphBuilder, c: Sam2Config, token: Value) -> Value:
    """``pred_obj_score_head`` on the object-score token ``[B, C]`` -> logit ``[B, 1]``."""
    d, p = c.d_model, f"{MD}.pred_obj_score_head"
    with b.scope("obj_score"):
        if c.pred_obj_scores_mlp:
            return _mlp(b, token, p, (d, d, d, 1))
        return b.linear(token, b.weight(f"{p}.weight", (1, d)), b.weight(f"{p}.bias", (1,)))


def build_prompt_to_masks(config, num_sparse: int, has_mask: bool = False,
                          name: Optional[str] = None) -> Graph:
    """SAM 2's prompt encoder (dense side) + mask decoder for one prompt bucket.

    Inputs: ``image_embed [1, C, g, g]`` (with no_mem_embed), ``high_res_0
    [1, C/8, 4g, 4g]`` (after conv_s0), ``high_res_1 [1, C/4, 2g, 2g]`` (after
    conv_s1), ``sparse [1, N, C]`` (host: `models.sam2.prompt`), and
    ``mask_input [1, 1, 4g, 4g]`` in mask buckets. Outputs: low-res logits
    ``[1, M, 4g, 4g]`` and IoU ``[1, M]`` of every mask token (token 0 the
    single-mask output, 1..M-1 the multimask ones), object-score logit ``[1, 1]``.
    """
    c = get_config(config)
    hc = heads_config(c)
    if not 0 <= num_sparse <= MAX_SPARSE_TOKENS:
        raise InputError(f"a prompt has 0..{MAX_SPARSE_TOKENS} sparse tokens, got {num_sparse}")
    d, g, s = c.d_model, hc.image_embedding_size, hc.mask_input_size
    m = hc.num_mask_tokens
    b = Sam2NamesBuilder(name or bucket_name(num_sparse, has_mask))
    emb = b.input(IMAGE_INPUTS[0], (1, d, g, g))
    skips = (None, None)
    if c.use_high_res_features_in_sam:
        hr0 = b.input(IMAGE_INPUTS[1], (1, d // 8, 4 * g, 4 * g))
        hr1 = b.input(IMAGE_INPUTS[2], (1, d // 4, 2 * g, 2 * g))
        with b.scope("skips"):
            skips = (skip_tokens(b, hr1, g, 1), skip_tokens(b, hr0, g, 2))
    sparse = b.input("sparse", (1, num_sparse, d)) if num_sparse else None
    mask = b.input("mask_input", (1, 1, s, s)) if has_mask else None

    def tokens(x):  # [1, C, g, g] -> [1, g*g, C]
        return b.transpose(b.reshape(x, shape=(1, d, g * g)), perm=(0, 2, 1))

    if mask is not None:
        src = b.add(tokens(emb), tokens(mask_downscale(b, hc, mask)))
    else:
        src = b.add(tokens(emb), no_mask_embedding(b, hc))
    pe = dense_positional_encoding(b, hc)
    points = output_tokens(b, c)
    first = 1 if c.pred_obj_scores else 0
    if sparse is not None:
        points = b.concat(points, sparse, axis=1)
    queries, keys = two_way_transformer(b, hc, src, pe, points, static_image=mask is None,
                                        out_tokens=first + 1 + m)
    hyper_in, iou = mlp_heads(b, hc, b.slice_axis(queries, 1, first, first + 1 + m))
    if c.iou_prediction_use_sigmoid:
        iou = b.sigmoid(iou)
    masks = mask_product_tokens(b, hc, hyper_in, upscale_with_skips(b, c, keys, *skips))
    if c.pred_obj_scores:
        obj = object_score(b, c, b.reshape(b.slice_axis(queries, 1, 0, 1), shape=(1, d)))
    else:  # the official default: "object present" (sigmoid(10) = 1)
        obj = b.const(10.0, shape=(1, 1))
    b.output(masks, iou, obj)
    return b.build()


#: subgraph name -> builder(config): the bucket of the most common prompt (one click
#: and its padding point, no mask), and a box with a mask prompt
PROMPT_SUBGRAPHS = {
    PROMPT_TO_MASKS: lambda config: build_prompt_to_masks(config, 2, False, name=PROMPT_TO_MASKS),
    f"{PROMPT_TO_MASKS}_box_mask": lambda config: build_prompt_to_masks(
        config, 3, True, name=f"{PROMPT_TO_MASKS}_box_mask"),
}
