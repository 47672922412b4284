"""The batched "points -> low-res masks" graph of segment-everything.

Segment-everything decodes a grid of single-click prompts (1024 for the
default 32 x 32 grid) against one image embedding. Meta's generator repeats
the embedding once per prompt (``repeat_interleave``) and runs the decoder
on batches of 64 copies. Here one graph takes a batch of B prompts and the
embedding **once**:

    inputs : image_embedding [1, C, g, g]   (shared by the batch; a slow input)
             sparse          [B, 2, C]      (one click + its padding point each)
    outputs: low_res_masks   [B, M-1, 4g, 4g] (the multimask tokens 1..M-1)
             iou_predictions [B, M-1]

Everything that depends on the image alone stays batch-free: the token
layout, the no-mask embedding, the dense positional encoding, and the first
transformer layer's projections of the image side (its keys and values for
token->image, its queries for image->token; see ``decoder._attention``).
The graph is compiled staged with the embedding as the slow input
(`rlx.runtime.staged`), so those run once per image, not once per batch.
Batch broadcasting does the sharing: the first image->token update adds a
``[B, N, C]`` per-prompt term to the ``[1, N, C]`` image tokens, and only
from there on does the image side carry a batch axis -- which SAM's
architecture makes unavoidable, because every prompt rewrites the image
tokens through that update.

The generator runs it in two halves (`build_points_to_tokens`, then
`build_tokens_to_masks` for the prompts whose predicted IoU passes the
filter): the upscaling that turns the image tokens into mask features is
about half of a prompt's work, and most prompts need none of it.

Only the multimask tokens are decoded into masks (segment-everything always
asks for ``multimask_output=True``), so the single-mask token's hypernetwork
product is not computed.
"""

from __future__ import annotations

from typing import Optional

from rlx.errors import InputError
from rlx.ir import Graph, GraphBuilder

from .config import get_config
from .decoder import (
    dense_positional_encoding,
    mask_product_tokens,
    mlp_heads,
    no_mask_embedding,
    output_tokens,
    two_way_transformer,
    upscale_tokens,
)
from .prompt_graph import IMAGE_INPUT

__all__ = ["EVERYTHING_GRAPH", "SPARSE_INPUT", "KEYS_INPUT", "HYPER_INPUT",
           "build_points_to_masks", "build_points_to_tokens", "build_tokens_to_masks"]

EVERYTHING_GRAPH = "points_to_masks"
EVERYTHING_TOKENS = "points_to_tokens"
EVERYTHING_MASKS = "tokens_to_masks"
SPARSE_INPUT = "sparse"
KEYS_INPUT = "keys"
HYPER_INPUT = "hyper_in"
#: sparse tokens per prompt: the click and the padding point the prompt encoder appends
TOKENS_PER_PROMPT = 2


def _points_side(b: GraphBuilder, c, batch: int):
    """Inputs, transformer and heads: keys [B, N, C], hyper_in [B, M-1, C/8], IoU [B, M-1]."""
    d, g = c.prompt_embed_dim, c.image_embedding_size
    m = c.num_mask_tokens
    emb = b.input(IMAGE_INPUT, (1, d, g, g))
    sparse = b.input(SPARSE_INPUT, (batch, TOKENS_PER_PROMPT, d))
    image = b.transpose(b.reshape(emb, shape=(1, d, g * g)), perm=(0, 2, 1))  # [1, N, C]
    src = b.add(image, no_mask_embedding(b, c))
    pe = dense_positional_encoding(b, c)
    tokens = b.broadcast_to(output_tokens(b, c), shape=(batch, 1 + m, d))
    points = b.concat(tokens, sparse, axis=1)  # [B, 1 + M + 2, C]
    queries, keys = two_way_transformer(b, c, src, pe, points, static_image=True,
                                        out_tokens=1 + m)
    hyper_in, iou = mlp_heads(b, c, queries)
    return keys, b.slice_axis(hyper_in, 1, 1, m), b.slice_axis(iou, 1, 1, m)  # tokens 1..M-1


def build_points_to_masks(config, batch: int, name: Optional[str] = None) -> Graph:
    """B single-click prompts against one shared embedding (see the module docstring)."""
    c = get_config(config)
    if int(batch) < 1:
        raise InputError(f"batch must be at least 1, got {batch}")
    b = GraphBuilder(name or f"{EVERYTHING_GRAPH}_b{batch}")
    keys, hyper, iou = _points_side(b, c, batch)
    b.output(mask_product_tokens(b, c, hyper, upscale_tokens(b, c, keys)), iou)
    return b.build()


def build_points_to_tokens(config, batch: int) -> Graph:
    """The first half of `build_points_to_masks`: everything up to the IoU scores.

    Outputs ``keys [B, N, C]`` (the image tokens after the transformer),
    ``hyper_in [B, M-1, C/8]`` and ``iou [B, M-1]``. The generator decodes
    masks (`build_tokens_to_masks`) only for prompts with an IoU above the
    filter's threshold: the upscaling is about half of a prompt's work.
    """
    c = get_config(config)
    if int(batch) < 1:
        raise InputError(f"batch must be at least 1, got {batch}")
    b = GraphBuilder(f"{EVERYTHING_TOKENS}_b{batch}")
    b.output(*_points_side(b, c, batch))
    return b.build()


def build_tokens_to_masks(config, batch: int) -> Graph:
    """The second half: ``keys [B, N, C]``, ``hyper_in [B, M-1, C/8]`` -> logits.

    Logits ``[B, M-1, 4g, 4g]``, the same as `build_points_to_masks`'s first output.
    """
    c = get_config(config)
    if int(batch) < 1:
        raise InputError(f"batch must be at least 1, got {batch}")
    d, g, m = c.prompt_embed_dim, c.image_embedding_size, c.num_mask_tokens
    b = GraphBuilder(f"{EVERYTHING_MASKS}_b{batch}")
    keys = b.input(KEYS_INPUT, (batch, g * g, d))
    hyper = b.input(HYPER_INPUT, (batch, m - 1, d // 8))
    b.output(mask_product_tokens(b, c, hyper, upscale_tokens(b, c, keys)))
    return b.build()
