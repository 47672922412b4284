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
`upscale_tokens`,          the same upscaling in token layout (no depth-to-
`mask_product_tokens`      space shuffles) and hypernetwork weights @ upscaled
                           features: what the bucket graph uses
=========================  ====================================================

Image-sized tensors travel in token layout ``[B, g*g, C]`` between the
transformer pieces (that is what the attention consumes) and in NCHW only
where a convolution needs it. The cross-attentions between a few prompt
tokens and the image are re-associated by shape (see `_attention`) so the
image side never meets an ``[N, internal]`` projection. Weight names are Meta's state-dict names, so
one `WeightStore` binds every graph.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

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
    "upscale_tokens",
    "mask_product_tokens",
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


def _mm(b: GraphBuilder, x: Value, y: Value, transpose_a: bool = False,
        transpose_b: bool = False) -> Value:
    """``x @ y`` (either operand transposed); a batch of one is multiplied as 2-D matrices.

    A ``[1, m, k] @ [1, k, n]`` product is one matrix product, but a batched
    matmul is split over its batch entries, so with one entry it would run on
    one thread: reshaping to 2-D (free views) lets the backend split the rows.
    """
    if x.shape[:-2] == (1,) and y.shape[:-2] == (1,):
        x2 = b.reshape(x, shape=x.shape[1:])
        y2 = b.reshape(y, shape=y.shape[1:])
        out = b.matmul(x2, y2, transpose_a=transpose_a, transpose_b=transpose_b)
        return b.reshape(out, shape=(1,) + out.shape)
    return b.matmul(x, y, transpose_a=transpose_a, transpose_b=transpose_b)


def _weight_heads(b: GraphBuilder, prefix: str, heads: int, hd: int, d: int) -> Value:
    """A projection weight ``[heads*hd, d]`` as ``[heads, hd, d]`` (row block h = head h)."""
    return b.reshape(b.weight(f"{prefix}.weight", (heads * hd, d)), shape=(heads, hd, d))


def _split_heads(b: GraphBuilder, x: Value, heads: int) -> Value:
    """``[B, n, heads*hd]`` -> ``[B, heads, n, hd]``."""
    bsz, n, width = x.shape
    x = b.reshape(x, shape=(bsz, n, heads, width // heads))
    return b.transpose(x, perm=(0, 2, 1, 3))


def _attention(b: GraphBuilder, c: SamConfig, prefix: str, q: Value, k: Value, v: Value,
               internal: int, static: Optional[str] = None) -> Value:
    """The decoder's Attention: project to ``internal`` width, multi-head SDPA, project back.

    SAM's cross-attentions are between a handful of prompt tokens (T, about
    7) and the g*g image tokens (N = 4096). Computed literally, the two
    projections on the image side dominate the whole prompt path: 2 * N*d*D
    multiply-adds. When T is below the head width, the same function is
    cheaper with the products re-associated so that the image side meets
    per-prompt matrices of only heads*T columns (see `_attention_few_keys`
    and `_attention_few_queries`): 2 * N*d*heads*T. Both are exact
    rewrites (up to float rounding); the choice depends on shapes only.

    ``static`` names the side ("keys" or "queries") that does not depend on
    the prompt -- the first layer's image tokens. Its projections are then
    worth computing: a staged graph keeps them per image, and per click only
    products with the T prompt tokens remain (`_attention_static_keys`,
    `_attention_static_queries`).
    """
    heads = c.decoder_num_heads
    hd = internal // heads
    nq, nk = q.shape[1], k.shape[1]
    if static == "keys" and nq < nk:
        return _attention_static_keys(b, c, prefix, q, k, v, internal)
    if static == "queries" and nk < nq:
        return _attention_static_queries(b, c, prefix, q, k, v, internal)
    if nk < hd and nk < nq:
        return _attention_few_keys(b, c, prefix, q, k, v, internal)
    if nq < hd and nq < nk:
        return _attention_few_queries(b, c, prefix, q, k, v, internal)
    return _attention_standard(b, c, prefix, q, k, v, internal)


def _attention_standard(b: GraphBuilder, c: SamConfig, prefix: str, q: Value, k: Value,
                        v: Value, internal: int) -> Value:
    """Projections, one `attention` op over ``[B*heads, n, hd]``, output projection."""
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


def _attention_few_keys(b: GraphBuilder, c: SamConfig, prefix: str, q: Value, k: Value,
                        v: Value, internal: int) -> Value:
    """Many queries (N image tokens) attending to few keys (T prompt tokens).

    With ``K_h``/``V_h`` the projected keys/values of head h (``[T, hd]``)
    and ``Wq_h``/``Wo_h`` head h's rows of the query / columns of the output
    projection:

        scores_h = (x Wq_hᵀ + bq_h) K_hᵀ s = x (K_h Wq_h)ᵀ s + (K_h bq_h) s
        out      = Σ_h P_h V_h Wo_hᵀ + bo  = [P_1 .. P_H] @ [V_h Wo_hᵀ]_h + bo

    so the image side takes two GEMMs with ``heads*T`` columns/rows (the
    ``[heads*T, d]`` matrices are a few tiny per-prompt products), and the
    ``[N, internal]`` query projection and attention output never exist.
    Scores are kept transposed, ``[heads*T, N]``, so the softmax over each
    head's T keys runs down columns with the N image tokens contiguous
    (rows of T ~ 7 numbers would be too short to vectorize).
    """
    d, heads = c.prompt_embed_dim, c.decoder_num_heads
    hd = internal // heads
    bsz, n, t = q.shape[0], q.shape[1], k.shape[1]
    scale = 1.0 / math.sqrt(hd)
    kh = _split_heads(b, b.mul(_linear(b, k, f"{prefix}.k_proj", d, internal), scale), heads)
    vh = _split_heads(b, _linear(b, v, f"{prefix}.v_proj", d, internal), heads)
    # [B, H, T, hd] @ [H, hd, d] -> [B, H, T, d]: query weights seen through each key.
    g = b.matmul(kh, _weight_heads(b, f"{prefix}.q_proj", heads, hd, d))
    g = b.reshape(g, shape=(bsz, heads * t, d))
    bq = b.reshape(b.weight(f"{prefix}.q_proj.bias", (internal,)), shape=(heads, hd, 1))
    bias = b.reshape(b.matmul(kh, bq), shape=(bsz, heads * t, 1))
    scores = b.add(_mm(b, g, q, transpose_b=True), bias)  # [B, H*T, N]
    p = b.softmax(b.reshape(scores, shape=(bsz, heads, t, n)), axis=2)
    p = b.reshape(p, shape=(bsz, heads * t, n))
    # Values pushed through the output projection: [B, H, T, hd] @ [H, hd, d].
    wo = b.weight(f"{prefix}.out_proj.weight", (d, internal))
    wo_heads = b.reshape(b.transpose(wo, perm=(1, 0)), shape=(heads, hd, d))
    u = b.reshape(b.matmul(vh, wo_heads), shape=(bsz, heads * t, d))
    out = _mm(b, p, u, transpose_a=True)  # [B, N, d]
    return b.add(out, b.weight(f"{prefix}.out_proj.bias", (d,)))


def _attention_static_keys(b: GraphBuilder, c: SamConfig, prefix: str, q: Value, k: Value,
                           v: Value, internal: int) -> Value:
    """Few (T) prompt queries attending to many keys that do not change per prompt.

    The key and value projections read only the static side (kept per image
    by a staged graph; the keys already transposed per head, ``[B, H, hd, N]``,
    so the per-click score product is a plain ``[T, hd] @ [hd, N]`` per head).
    Per click: the T queries' projection, ``heads x [T, N]`` scores, softmax
    along the N image tokens, ``P @ V``, the output projection.
    """
    d, heads = c.prompt_embed_dim, c.decoder_num_heads
    hd = internal // heads
    bsz, t, n = q.shape[0], q.shape[1], k.shape[1]
    scale = 1.0 / math.sqrt(hd)
    # the static side may have a batch of one shared by B prompts (segment-everything)
    kh_t = b.transpose(b.reshape(_linear(b, k, f"{prefix}.k_proj", d, internal),
                                 shape=(k.shape[0], n, heads, hd)), perm=(0, 2, 3, 1))
    vh = _split_heads(b, _linear(b, v, f"{prefix}.v_proj", d, internal), heads)  # [B,H,N,hd]
    qh = _split_heads(b, b.mul(_linear(b, q, f"{prefix}.q_proj", d, internal), scale), heads)
    p = b.softmax(b.matmul(qh, kh_t), axis=3)  # [B, H, T, N]
    o = b.matmul(p, vh)  # [B, H, T, hd]
    o = b.reshape(b.transpose(o, perm=(0, 2, 1, 3)), shape=(bsz, t, internal))
    return _linear(b, o, f"{prefix}.out_proj", internal, d)


def _attention_static_queries(b: GraphBuilder, c: SamConfig, prefix: str, q: Value,
                              k: Value, v: Value, internal: int) -> Value:
    """Many queries that do not change per prompt attending to few (T) prompt keys.

    The query projection reads only the static side (kept per image by a
    staged graph, transposed per head: ``[B, H, hd, N]``); scores are
    ``[heads, T, N]`` products with head width ``hd``, softmax down the T
    keys of each column (image tokens contiguous),
    and the output goes through the values pushed through the output
    projection as in `_attention_few_keys`: ``[P_1 .. P_H] @ [V_h Wo_hᵀ]_h``.
    """
    d, heads = c.prompt_embed_dim, c.decoder_num_heads
    hd = internal // heads
    bsz, n, t = max(q.shape[0], k.shape[0]), q.shape[1], k.shape[1]
    scale = 1.0 / math.sqrt(hd)
    # the static side may have a batch of one shared by B prompts (segment-everything)
    qh_t = b.transpose(b.reshape(_linear(b, q, f"{prefix}.q_proj", d, internal),
                                 shape=(q.shape[0], n, heads, hd)), perm=(0, 2, 3, 1))
    kh = _split_heads(b, b.mul(_linear(b, k, f"{prefix}.k_proj", d, internal), scale), heads)
    vh = _split_heads(b, _linear(b, v, f"{prefix}.v_proj", d, internal), heads)
    p = b.softmax(b.matmul(kh, qh_t), axis=2)  # [B, H, T, N]
    p = b.reshape(p, shape=(bsz, heads * t, n))
    wo = b.weight(f"{prefix}.out_proj.weight", (d, internal))
    wo_heads = b.reshape(b.transpose(wo, perm=(1, 0)), shape=(heads, hd, d))
    u = b.reshape(b.matmul(vh, wo_heads), shape=(bsz, heads * t, d))
    out = _mm(b, p, u, transpose_a=True)  # [B, N, d]
    return b.add(out, b.weight(f"{prefix}.out_proj.bias", (d,)))


def _attention_few_queries(b: GraphBuilder, c: SamConfig, prefix: str, q: Value, k: Value,
                           v: Value, internal: int) -> Value:
    """Few queries (T prompt tokens) attending to many keys (N image tokens).

    With ``Q_h`` the projected, scaled queries of head h (``[T, hd]``):

        scores_h = Q_h (y Wk_hᵀ + bk_h)ᵀ = (Q_h Wk_h) yᵀ + (Q_h bk_h) 1ᵀ
        P_h (x Wv_hᵀ + bv_h)             = (P_h x) Wv_hᵀ + bv_h

    The ``Q_h bk_h`` term adds the same number to every score of a row,
    which the softmax cancels exactly, so it is left out; ``bv_h`` passes
    through because every row of ``P_h`` sums to one. The image side takes
    two GEMMs with ``heads*T`` rows instead of the ``[N, internal]`` key and
    value projections.
    """
    d, heads = c.prompt_embed_dim, c.decoder_num_heads
    hd = internal // heads
    bsz, t, n = q.shape[0], q.shape[1], k.shape[1]
    scale = 1.0 / math.sqrt(hd)
    qh = _split_heads(b, b.mul(_linear(b, q, f"{prefix}.q_proj", d, internal), scale), heads)
    a = b.matmul(qh, _weight_heads(b, f"{prefix}.k_proj", heads, hd, d))  # [B, H, T, d]
    a = b.reshape(a, shape=(bsz, heads * t, d))
    p = b.softmax(_mm(b, a, k, transpose_b=True), axis=2)  # [B, H*T, N]
    r = b.reshape(_mm(b, p, v), shape=(bsz, heads, t, d))  # [B, H, T, d]
    wv = b.transpose(_weight_heads(b, f"{prefix}.v_proj", heads, hd, d), perm=(0, 2, 1))
    bv = b.reshape(b.weight(f"{prefix}.v_proj.bias", (internal,)), shape=(heads, 1, hd))
    o = b.add(b.matmul(r, wv), bv)  # [B, H, T, hd]
    o = b.reshape(b.transpose(o, perm=(0, 2, 1, 3)), shape=(bsz, t, internal))
    return _linear(b, o, f"{prefix}.out_proj", internal, d)


def _norm(b: GraphBuilder, c: SamConfig, x: Value, prefix: str) -> Value:
    d = c.prompt_embed_dim
    return b.layer_norm(x, b.weight(f"{prefix}.weight", (d,)), b.weight(f"{prefix}.bias", (d,)),
                        axis=-1, eps=c.decoder_layer_norm_eps)


def _two_way_block(b: GraphBuilder, c: SamConfig, i: int, queries: Value, keys: Value,
                   query_pe: Value, key_pe: Value, static_keys: bool) -> Tuple[Value, Value]:
    """One TwoWayAttentionBlock; ``static_keys``: `keys` do not depend on the prompt."""
    p = f"{MD}.transformer.layers.{i}"
    static = "keys" if static_keys else None
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
                                            cross, static=static))
        queries = _norm(b, c, queries, f"{p}.norm2")
        # (3) MLP on the tokens
        h = b.relu(_linear(b, queries, f"{p}.mlp.lin1", d, c.decoder_mlp_dim))
        queries = b.add(queries, _linear(b, h, f"{p}.mlp.lin2", c.decoder_mlp_dim, d))
        queries = _norm(b, c, queries, f"{p}.norm3")
        # (4) the image attends to the tokens
        q = b.add(queries, query_pe)
        k = b.add(keys, key_pe)
        keys = b.add(keys, _attention(b, c, f"{p}.cross_attn_image_to_token", k, q, queries,
                                      cross, static="queries" if static_keys else None))
        keys = _norm(b, c, keys, f"{p}.norm4")
    return queries, keys


def two_way_transformer(b: GraphBuilder, config, image_tokens: Value, image_pe: Value,
                        point_embedding: Value, static_image: bool = True,
                        out_tokens: Optional[int] = None) -> Tuple[Value, Value]:
    """``TwoWayTransformer.forward`` on token-layout tensors.

    ``image_tokens`` ``[B, g*g, C]`` (embedding + dense prompt), ``image_pe``
    ``[1 or B, g*g, C]``, ``point_embedding`` ``[B, N, C]`` (output tokens +
    sparse prompt). Returns ``(queries [B, N, C], keys [B, g*g, C])``.
    ``static_image``: the image tokens do not change per prompt (no mask
    prompt in them), so the first layer projects them (see `_attention`);
    the result is the same either way. ``out_tokens``: only the first that
    many query tokens are returned (the final attention and norm act on each
    token on its own, so the others are not computed there; the mask heads
    read only the IoU and mask tokens).
    """
    c = get_config(config)
    _check_config(c)
    queries, keys = point_embedding, image_tokens
    with b.scope("transformer"):
        for i in range(c.decoder_depth):
            queries, keys = _two_way_block(b, c, i, queries, keys, point_embedding, image_pe,
                                           static_keys=static_image and i == 0)
        p = f"{MD}.transformer"
        q = b.add(queries, point_embedding)
        if out_tokens is not None and out_tokens < queries.shape[1]:
            q = b.slice_axis(q, 1, 0, out_tokens)
            queries = b.slice_axis(queries, 1, 0, out_tokens)
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


def upscale_tokens(b: GraphBuilder, config, keys: Value) -> Value:
    """`upscale` without leaving token layout: ``[B, g*g, C]`` -> ``[B, 16*g*g, C/8]``.

    A ConvTranspose2d with kernel == stride 2 maps every input pixel to its
    own 2x2 block of output pixels: one GEMM ``[pixels, Cin] @ [Cin, 2*2*Cout]``
    whose row (pixel) and column block (sub-pixel) say where each output
    goes. Keeping that order instead of scattering the blocks into an NCHW
    image (depth-to-space) saves two full-size shuffles; LayerNorm2d
    normalizes over channels, which is now the contiguous last axis, and
    GELU does not care about order. Rows of the result are ordered
    ``(h, w, kh, kw, kh2, kw2)`` -- pixel of the embedding grid, sub-pixel of
    the first, sub-pixel of the second transposed convolution;
    `mask_product_tokens` puts the mask logits into image order at the end.
    Same weights and math as `upscale` (which the standalone subgraph keeps).
    """
    c = get_config(config)
    _check_config(c)
    d = c.prompt_embed_dim
    c1, c2 = d // 4, d // 8
    p = f"{MD}.output_upscaling"
    bsz, n, _ = keys.shape

    def deconv(x: Value, prefix: str, cin: int, cout: int) -> Value:
        # weight [Cin, Cout, 2, 2] -> [Cin, (kh, kw, Cout)]: folded once at bind time
        w = b.weight(f"{prefix}.weight", (cin, cout, 2, 2))
        wm = b.reshape(b.transpose(w, perm=(0, 2, 3, 1)), shape=(cin, 4 * cout))
        # bias per (kh, kw, Cout) column (tiled at bind time), so it is added in the GEMM's
        # own output shape (the GEMM epilogue) before the rows split into sub-pixels
        bias = b.reshape(b.broadcast_to(b.reshape(b.weight(f"{prefix}.bias", (cout,)),
                                                  shape=(1, cout)), shape=(4, cout)),
                         shape=(4 * cout,))
        return b.add(_mm(b, x, wm), bias)  # [B, rows, 4 * Cout]

    with b.scope("output_upscaling"):
        x = b.reshape(deconv(keys, f"{p}.0", d, c1), shape=(bsz, 4 * n, c1))
        x = b.layer_norm(x, b.weight(f"{p}.1.weight", (c1,)), b.weight(f"{p}.1.bias", (c1,)),
                         axis=2, eps=c.layer_norm_2d_eps)
        x = b.gelu(x, approximate="none")
        x = b.gelu(deconv(x, f"{p}.3", c1, c2), approximate="none")  # [B, 4N, 4 * C/8]
        return b.reshape(x, shape=(bsz, 16 * n, c2))


def mask_product_tokens(b: GraphBuilder, config, hyper_in: Value, features: Value) -> Value:
    """Hypernetwork weights ``[B, M, C/8]`` x `upscale_tokens` features -> logits ``[B, M, 4g, 4g]``.

    One GEMM over the features' rows, then a single shuffle of the (small)
    M-channel result from ``(h, w, kh, kw, kh2, kw2)`` row order into image
    order: output row ``4h + 2kh + kh2``, column ``4w + 2kw + kw2``.
    """
    c = get_config(config)
    g = c.image_embedding_size
    bsz, m, _ = hyper_in.shape
    logits = _mm(b, features, hyper_in, transpose_b=True)  # [B, 16N, M]
    logits = b.reshape(logits, shape=(bsz, g, g, 2, 2, 2, 2, m))
    logits = b.transpose(logits, perm=(0, 7, 1, 3, 5, 2, 4, 6))
    return b.reshape(logits, shape=(bsz, m, 4 * g, 4 * g))


def _mlp(b: GraphBuilder, x: Value, prefix: str, n_in: int, hidden: int, n_out: int,
         depth: int) -> Value:
    dims = [n_in] + [hidden] * (depth - 1) + [n_out]
    for i in range(depth):
        x = _linear(b, x, f"{prefix}.layers.{i}", dims[i], dims[i + 1])
        if i < depth - 1:
            x = b.relu(x)
    return x


def _stacked_mlp(b: GraphBuilder, x: Value, prefixes, n_in: int, hidden: int, n_out: int,
                 depth: int) -> Value:
    """One MLP per entry of ``x [K, B, n_in]`` (MLP k = ``prefixes[k]``), as batched matmuls.

    The K MLPs have the same shapes, so each layer is one ``[K, B, in] @ [K, in, out]``
    product with the K weights stacked (weight-only: folded at bind time) instead
    of K separate small kernels.
    """
    dims = [n_in] + [hidden] * (depth - 1) + [n_out]
    for i in range(depth):
        w = b.concat(*[b.reshape(b.weight(f"{p}.layers.{i}.weight", (dims[i + 1], dims[i])),
                                 shape=(1, dims[i + 1], dims[i])) for p in prefixes], axis=0)
        bias = b.concat(*[b.reshape(b.weight(f"{p}.layers.{i}.bias", (dims[i + 1],)),
                                    shape=(1, 1, dims[i + 1])) for p in prefixes], axis=0)
        x = b.add(b.matmul(x, w, transpose_b=True), bias)
        if i < depth - 1:
            x = b.relu(x)
    return x


def mlp_heads(b: GraphBuilder, config, tokens: Value) -> Tuple[Value, Value]:
    """Transformer output tokens ``[B, N, C]`` -> (hypernetwork weights ``[B, M, C/8]``, IoU ``[B, M]``).

    Token 0 is the IoU token, tokens 1..M the mask tokens (N >= 1 + M). The M
    hypernetwork MLPs (one per mask token) run stacked, one batched product per layer.
    """
    c = get_config(config)
    _check_config(c)
    d, m = c.prompt_embed_dim, c.num_mask_tokens
    bsz = tokens.shape[0]

    with b.scope("heads"):
        with b.scope("hyper"):
            x = b.transpose(b.slice_axis(tokens, 1, 1, 1 + m), perm=(1, 0, 2))  # [M, B, C]
            prefixes = [f"{MD}.output_hypernetworks_mlps.{i}" for i in range(m)]
            h = _stacked_mlp(b, x, prefixes, d, d, d // 8, c.hypernetwork_mlp_depth)
            hyper_in = b.transpose(h, perm=(1, 0, 2))  # [B, M, C/8]
        with b.scope("iou"):
            token0 = b.reshape(b.slice_axis(tokens, 1, 0, 1), shape=(bsz, d))
            iou = _mlp(b, token0, f"{MD}.iou_prediction_head", d, c.iou_head_hidden_dim, m,
                       c.iou_head_depth)
    return hyper_in, iou


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
