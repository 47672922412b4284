"""HIR builders for SAM's prompt-side network: mask downscaling and the mask decoder.

Everything here emits into a `GraphBuilder` from `Value`s, so the same code
serves two purposes:

* the one compiled "prompt -> masks" graph per prompt-shape bucket
  (`models.sam.prompt_graph`), which chains all pieces, and
* four small standalone subgraphs (``prompt_mask_downscale``,
  ``two_way_transformer``, ``upscale``, ``mlp_heads``) that can be dumped,
  compiled and benchmarked on their own and are tested one by one against the
  official PyTorch modules.

The pieces, with the official module each mirrors:

=========================  ====================================================
builder                    official module
=========================  ====================================================
`mask_downscale`           ``PromptEncoder.mask_downscaling``: conv k2s2 ->
                           LayerNorm2d -> GELU -> conv k2s2 -> LayerNorm2d ->
                           GELU -> conv 1x1
`dense_positional_encoding` ``PromptEncoder.get_dense_pe`` (random Fourier
                           features of the cell centres), in token layout
`two_way_transformer`      ``TwoWayTransformer``: 2 blocks (self-attention,
                           token->image cross-attention, ReLU MLP,
                           image->token cross-attention), then a final
                           token->image attention and LayerNorm
`upscale`                  ``MaskDecoder.output_upscaling``: ConvTranspose2d
                           k2s2 -> LayerNorm2d -> GELU -> ConvTranspose2d k2s2
                           -> GELU (the general lower-conv-transpose pass turns
                           each transposed conv into a matmul + depth-to-space)
`mlp_heads`                the hypernetwork MLPs (one per mask token) and the
                           IoU head (3-layer MLPs with ReLU)
`mask_product`             hypernetwork weights @ upscaled features
=========================  ====================================================

Image-sized tensors travel in token layout ``[B, g*g, C]`` between the
transformer pieces (that is what the attention consumes) and in NCHW only
where a convolution needs it. Weight names are Meta's state-dict names, so
one `WeightStore` binds every graph.
"""

from __future__ import annotations

import math
from typing import Tuple

from rlx.ir import Graph, GraphBuilder
from rlx.ir.graph import Value

from .config import SamConfig, get_config

__all__ = [
    "PROMPT_MASK_DOWNSCALE",
    "TWO_WAY_TRANSFORMER",
    "UPSCALE",
    "MLP_HEADS",
    "mask_downscale",
    "dense_positional_encoding",
    "no_mask_embedding",
    "output_tokens",
    "two_way_transformer",
    "upscale",
    "mlp_heads",
    "mask_product",
    "build_prompt_mask_downscale",
    "build_two_way_transformer",
    "build_upscale",
    "build_mlp_heads",
    "DECODER_SUBGRAPHS",
]

PE = "prompt_encoder"
MD = "mask_decoder"
PROMPT_MASK_DOWNSCALE = "prompt_mask_downscale"
TWO_WAY_TRANSFORMER = "two_way_transformer"
UPSCALE = "upscale"
MLP_HEADS = "mlp_heads"

#: sparse tokens of the standalone subgraphs: one click plus the padding point
DEFAULT_SPARSE_TOKENS = 2


def _check_config(c: SamConfig) -> None:
    """Refuse configs whose activations the builders do not implement."""
    wanted = {"mask_downscaling_activation": "gelu", "decoder_mlp_activation": "relu",
              "upscaling_activation": "gelu"}
    for field_name, value in wanted.items():
        if getattr(c, field_name) != value:
            raise ValueError(f"config {c.name!r}: {field_name}={getattr(c, field_name)!r} is not "
                             f"supported (SAM uses {value!r})")


def _layer_norm_2d(b: GraphBuilder, x: Value, prefix: str, channels: int, eps: float) -> Value:
    return b.layer_norm(x, b.weight(f"{prefix}.weight", (channels,)),
                        b.weight(f"{prefix}.bias", (channels,)), axis=1, eps=eps)


def _linear(b: GraphBuilder, x: Value, prefix: str, n_in: int, n_out: int) -> Value:
    return b.linear(x, b.weight(f"{prefix}.weight", (n_out, n_in)),
                    b.weight(f"{prefix}.bias", (n_out,)))


# ---- prompt encoder: dense side ----------------------------------------------------------


def mask_downscale(b: GraphBuilder, config, mask: Value) -> Value:
    """Mask prompt ``[B, 1, 4g, 4g]`` -> dense embedding ``[B, C, g, g]``."""
    c = get_config(config)
    _check_config(c)
    m4, m, d = c.mask_in_chans // 4, c.mask_in_chans, c.prompt_embed_dim
    eps = c.layer_norm_2d_eps
    p = f"{PE}.mask_downscaling"
    with b.scope("mask_downscaling"):
        x = b.conv2d(mask, b.weight(f"{p}.0.weight", (m4, 1, 2, 2)),
                     b.weight(f"{p}.0.bias", (m4,)), stride=2)
        x = b.gelu(_layer_norm_2d(b, x, f"{p}.1", m4, eps), approximate="none")
        x = b.conv2d(x, b.weight(f"{p}.3.weight", (m, m4, 2, 2)),
                     b.weight(f"{p}.3.bias", (m,)), stride=2)
        x = b.gelu(_layer_norm_2d(b, x, f"{p}.4", m, eps), approximate="none")
        return b.conv2d(x, b.weight(f"{p}.6.weight", (d, m, 1, 1)), b.weight(f"{p}.6.bias", (d,)))


def dense_positional_encoding(b: GraphBuilder, config) -> Value:
    """Fourier encoding of every image-embedding cell: ``[1, g*g, C]`` (token layout).

    Built from the gaussian matrix with arange / matmul / sin / cos so that it
    depends on weights only: fold-constants turns it into a derived weight
    computed once at bind time. Cell centres are ``(i + 1 - 0.5) / g`` like
    the official cumsum-based grid; x varies fastest, matching
    ``flatten(2).permute(0, 2, 1)`` of the official ``[1, C, g, g]`` map.
    """
    c = get_config(config)
    g, half = c.image_embedding_size, c.num_pos_feats
    gauss = b.weight(f"{PE}.pe_layer.positional_encoding_gaussian_matrix", (2, half))
    with b.scope("dense_pe"):
        centres = b.div(b.sub(b.arange(start=1, stop=g + 1, dtype="f32"), 0.5), float(g))
        xs = b.broadcast_to(b.reshape(centres, shape=(1, g, 1)), shape=(g, g, 1))
        ys = b.broadcast_to(b.reshape(centres, shape=(g, 1, 1)), shape=(g, g, 1))
        coords = b.reshape(b.concat(xs, ys, axis=2), shape=(g * g, 2))
        proj = b.matmul(b.sub(b.mul(coords, 2.0), 1.0), gauss)
        proj = b.mul(proj, 2.0 * math.pi)
        pe = b.concat(b.sin(proj), b.cos(proj), axis=1)
        return b.reshape(pe, shape=(1, g * g, 2 * half))


def no_mask_embedding(b: GraphBuilder, config) -> Value:
    """The learned "no mask prompt" embedding as a ``[1, 1, C]`` row (adds to every token)."""
    d = get_config(config).prompt_embed_dim
    return b.reshape(b.weight(f"{PE}.no_mask_embed.weight", (1, d)), shape=(1, 1, d))


# ---- mask decoder ------------------------------------------------------------------------


def output_tokens(b: GraphBuilder, config) -> Value:
    """IoU token then mask tokens: ``[1, 1 + M, C]`` (weights only)."""
    c = get_config(config)
    d, m = c.prompt_embed_dim, c.num_mask_tokens
    iou = b.weight(f"{MD}.iou_token.weight", (1, d))
    masks = b.weight(f"{MD}.mask_tokens.weight", (m, d))
    return b.reshape(b.concat(iou, masks, axis=0), shape=(1, 1 + m, d))


def _attention(b: GraphBuilder, c: SamConfig, prefix: str, q: Value, k: Value, v: Value,
               internal: int) -> Value:
    """The decoder's Attention: project to ``internal`` width, multi-head SDPA, project back."""
    d, heads = c.prompt_embed_dim, c.decoder_num_heads
    hd = internal // heads
    bsz, nq, nk = q.shape[0], q.shape[1], k.shape[1]

    def heads_of(x: Value, n: int) -> Value:
        # [B, n, heads*hd] -> [B*heads, n, hd]
        x = b.transpose(b.reshape(x, shape=(bsz, n, heads, hd)), perm=(0, 2, 1, 3))
        return b.reshape(x, shape=(bsz * heads, n, hd))

    qh = heads_of(_linear(b, q, f"{prefix}.q_proj", d, internal), nq)
    kh = heads_of(_linear(b, k, f"{prefix}.k_proj", d, internal), nk)
    vh = heads_of(_linear(b, v, f"{prefix}.v_proj", d, internal), nk)
    o = b.attention(qh, kh, vh, scale=1.0 / math.sqrt(hd))
    o = b.transpose(b.reshape(o, shape=(bsz, heads, nq, hd)), perm=(0, 2, 1, 3))
    o = b.reshape(o, shape=(bsz, nq, internal))
    return _linear(b, o, f"{prefix}.out_proj", internal, d)


def _norm(b: GraphBuilder, c: SamConfig, x: Value, prefix: str) -> Value:
    d = c.prompt_embed_dim
    return b.layer_norm(x, b.weight(f"{prefix}.weight", (d,)), b.weight(f"{prefix}.bias", (d,)),
                        axis=-1, eps=c.decoder_layer_norm_eps)


def _two_way_block(b: GraphBuilder, c: SamConfig, i: int, queries: Value, keys: Value,
                   query_pe: Value, key_pe: Value) -> Tuple[Value, Value]:
    p = f"{MD}.transformer.layers.{i}"
    d, cross = c.prompt_embed_dim, c.decoder_cross_attn_dim
    with b.scope(f"layers.{i}"):
        # (1) self-attention of the tokens; the first block sees no PE and has no residual
        if i == 0:
            queries = _attention(b, c, f"{p}.self_attn", queries, queries, queries, d)
        else:
            q = b.add(queries, query_pe)
            queries = b.add(queries, _attention(b, c, f"{p}.self_attn", q, q, queries, d))
        queries = _norm(b, c, queries, f"{p}.norm1")
        # (2) tokens attend to the image
        q = b.add(queries, query_pe)
        k = b.add(keys, key_pe)
        queries = b.add(queries, _attention(b, c, f"{p}.cross_attn_token_to_image", q, k, keys,
                                            cross))
        queries = _norm(b, c, queries, f"{p}.norm2")
        # (3) MLP on the tokens
        h = b.relu(_linear(b, queries, f"{p}.mlp.lin1", d, c.decoder_mlp_dim))
        queries = b.add(queries, _linear(b, h, f"{p}.mlp.lin2", c.decoder_mlp_dim, d))
        queries = _norm(b, c, queries, f"{p}.norm3")
        # (4) the image attends to the tokens
        q = b.add(queries, query_pe)
        k = b.add(keys, key_pe)
        keys = b.add(keys, _attention(b, c, f"{p}.cross_attn_image_to_token", k, q, queries,
                                      cross))
        keys = _norm(b, c, keys, f"{p}.norm4")
    return queries, keys


def two_way_transformer(b: GraphBuilder, config, image_tokens: Value, image_pe: Value,
                        point_embedding: Value) -> Tuple[Value, Value]:
    """``TwoWayTransformer.forward`` on token-layout tensors.

    ``image_tokens`` ``[B, g*g, C]`` (embedding + dense prompt), ``image_pe``
    ``[1 or B, g*g, C]``, ``point_embedding`` ``[B, N, C]`` (output tokens +
    sparse prompt). Returns ``(queries [B, N, C], keys [B, g*g, C])``.
    """
    c = get_config(config)
    _check_config(c)
    queries, keys = point_embedding, image_tokens
    with b.scope("transformer"):
        for i in range(c.decoder_depth):
            queries, keys = _two_way_block(b, c, i, queries, keys, point_embedding, image_pe)
        p = f"{MD}.transformer"
        q = b.add(queries, point_embedding)
        k = b.add(keys, image_pe)
        queries = b.add(queries, _attention(b, c, f"{p}.final_attn_token_to_image", q, k, keys,
                                            c.decoder_cross_attn_dim))
        queries = _norm(b, c, queries, f"{p}.norm_final_attn")
    return queries, keys


def upscale(b: GraphBuilder, config, keys: Value) -> Value:
    """Transformer image tokens ``[B, g*g, C]`` -> mask features ``[B, C/8, 4g, 4g]``."""
    c = get_config(config)
    _check_config(c)
    d, g = c.prompt_embed_dim, c.image_embedding_size
    p = f"{MD}.output_upscaling"
    bsz = keys.shape[0]
    with b.scope("output_upscaling"):
        x = b.reshape(b.transpose(keys, perm=(0, 2, 1)), shape=(bsz, d, g, g))
        x = b.conv_transpose2d(x, b.weight(f"{p}.0.weight", (d, d // 4, 2, 2)),
                               b.weight(f"{p}.0.bias", (d // 4,)), stride=2)
        x = b.gelu(_layer_norm_2d(b, x, f"{p}.1", d // 4, c.layer_norm_2d_eps),
                   approximate="none")
        x = b.conv_transpose2d(x, b.weight(f"{p}.3.weight", (d // 4, d // 8, 2, 2)),
                               b.weight(f"{p}.3.bias", (d // 8,)), stride=2)
        return b.gelu(x, approximate="none")


def _mlp(b: GraphBuilder, x: Value, prefix: str, n_in: int, hidden: int, n_out: int,
         depth: int) -> Value:
    dims = [n_in] + [hidden] * (depth - 1) + [n_out]
    for i in range(depth):
        x = _linear(b, x, f"{prefix}.layers.{i}", dims[i], dims[i + 1])
        if i < depth - 1:
            x = b.relu(x)
    return x


def mlp_heads(b: GraphBuilder, config, tokens: Value) -> Tuple[Value, Value]:
    """Transformer output tokens ``[B, N, C]`` -> (hypernetwork weights ``[B, M, C/8]``, IoU ``[B, M]``).

    Token 0 is the IoU token, tokens 1..M the mask tokens (N >= 1 + M).
    """
    c = get_config(config)
    _check_config(c)
    d, m = c.prompt_embed_dim, c.num_mask_tokens
    bsz = tokens.shape[0]

    def token(j: int) -> Value:
        return b.reshape(b.slice_axis(tokens, 1, j, j + 1), shape=(bsz, d))

    with b.scope("heads"):
        hyper = []
        for i in range(m):
            with b.scope(f"hyper.{i}"):
                h = _mlp(b, token(1 + i), f"{MD}.output_hypernetworks_mlps.{i}", d, d, d // 8,
                         c.hypernetwork_mlp_depth)
            hyper.append(b.reshape(h, shape=(bsz, 1, d // 8)))
        hyper_in = b.concat(*hyper, axis=1)
        with b.scope("iou"):
            iou = _mlp(b, token(0), f"{MD}.iou_prediction_head", d, c.iou_head_hidden_dim, m,
                       c.iou_head_depth)
    return hyper_in, iou


def mask_product(b: GraphBuilder, hyper_in: Value, features: Value) -> Value:
    """``[B, M, K] @ [B, K, H*W]`` -> mask logits ``[B, M, H, W]``."""
    bsz, k, h, w = features.shape
    m = hyper_in.shape[1]
    masks = b.matmul(hyper_in, b.reshape(features, shape=(bsz, k, h * w)))
    return b.reshape(masks, shape=(bsz, m, h, w))


# ---- standalone subgraphs ------------------------------------------------------------------


def build_prompt_mask_downscale(config, batch: int = 1) -> Graph:
    """``%mask [B, 1, 4g, 4g]`` -> ``%dense [B, C, g, g]``."""
    c = get_config(config)
    b = GraphBuilder(PROMPT_MASK_DOWNSCALE)
    s = c.mask_input_size
    x = b.input("mask", (batch, 1, s, s))
    b.output(mask_downscale(b, c, x))
    return b.build()


def build_two_way_transformer(config, num_tokens: int = None, batch: int = 1) -> Graph:
    """The official ``TwoWayTransformer`` signature in NCHW, outputs in token layout.

    Inputs ``%image_embedding [B, C, g, g]``, ``%image_pe [B, C, g, g]``,
    ``%point_embedding [B, N, C]`` (N defaults to the 1 + M output tokens plus
    one click and its padding point); outputs ``queries [B, N, C]`` and
    ``keys [B, g*g, C]``.
    """
    c = get_config(config)
    d, g = c.prompt_embed_dim, c.image_embedding_size
    n = num_tokens if num_tokens is not None else 1 + c.num_mask_tokens + DEFAULT_SPARSE_TOKENS
    b = GraphBuilder(TWO_WAY_TRANSFORMER)
    emb = b.input("image_embedding", (batch, d, g, g))
    pe = b.input("image_pe", (batch, d, g, g))
    points = b.input("point_embedding", (batch, n, d))

    def tokens(x: Value) -> Value:
        return b.transpose(b.reshape(x, shape=(batch, d, g * g)), perm=(0, 2, 1))

    queries, keys = two_way_transformer(b, c, tokens(emb), tokens(pe), points)
    b.output(queries, keys)
    return b.build()


def build_upscale(config, batch: int = 1) -> Graph:
    """``%image_embedding [B, C, g, g]`` -> ``[B, C/8, 4g, 4g]`` (``output_upscaling``)."""
    c = get_config(config)
    d, g = c.prompt_embed_dim, c.image_embedding_size
    b = GraphBuilder(UPSCALE)
    x = b.input("image_embedding", (batch, d, g, g))
    keys = b.transpose(b.reshape(x, shape=(batch, d, g * g)), perm=(0, 2, 1))
    b.output(upscale(b, c, keys))
    return b.build()


def build_mlp_heads(config, batch: int = 1) -> Graph:
    """``%tokens [B, 1 + M, C]`` (IoU token, mask tokens) -> hypernetwork weights, IoU."""
    c = get_config(config)
    b = GraphBuilder(MLP_HEADS)
    x = b.input("tokens", (batch, 1 + c.num_mask_tokens, c.prompt_embed_dim))
    hyper_in, iou = mlp_heads(b, c, x)
    b.output(hyper_in, iou)
    return b.build()


#: subgraph name -> builder(config, debug) (the encoder debug switches do not apply here)
DECODER_SUBGRAPHS = {
    PROMPT_MASK_DOWNSCALE: lambda config, debug=None: build_prompt_mask_downscale(config),
    TWO_WAY_TRANSFORMER: lambda config, debug=None: build_two_way_transformer(config),
    UPSCALE: lambda config, debug=None: build_upscale(config),
    MLP_HEADS: lambda config, debug=None: build_mlp_heads(config),
}
