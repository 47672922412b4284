"""HIR builders for SAM's image encoder (the ViT backbone) and its neck.

Two subgraphs, compiled separately:

* ``encoder``: image ``[1, 3, S, S]`` -> tokens ``[1, g, g, E]`` (g = S/16):
  patch embedding (a conv with kernel == stride), absolute position
  embedding, then ``depth`` pre-norm transformer blocks. Windowed blocks
  attend within 14x14 windows (the 64x64 token grid is zero-padded to 70x70
  first); global blocks attend over the whole grid. Every block adds the
  decomposed relative position bias of MViTv2 and ends with an exact-erf
  GELU MLP.
* ``neck``: tokens -> image embedding ``[1, C, g, g]``: conv 1x1 ->
  LayerNorm2d -> conv 3x3 -> LayerNorm2d (no conv biases).

Weights keep the names of Meta's state dict (``image_encoder.blocks.0.attn.qkv.weight``),
so one `WeightStore` loaded from an official checkpoint binds every subgraph.

The relative-position tables are built in the graph from the learned
weights with ``arange`` index arithmetic, ``gather`` and (when a table's
length does not fit the attention size) a linear resize, all of which depend
on weights only: the fold-constants pass turns them into derived weights
computed once at bind time, so per-image work is just the two small matmuls
that produce ``rel_h`` / ``rel_w`` from the queries.
"""

from __future__ import annotations

from typing import Optional

from rlx.ir import Graph, GraphBuilder
from rlx.ir.graph import Value

from .config import SamConfig, get_config
from .debug import DebugOptions

__all__ = ["build_encoder", "build_neck", "rel_pos_table", "ENCODER", "NECK"]

#: state-dict prefix of the image encoder (backbone and neck)
PREFIX = "image_encoder"
ENCODER, NECK = "encoder", "neck"


def rel_pos_table(b: GraphBuilder, rel_pos: Value, q_size: int, k_size: int) -> Value:
    """``[q_size, k_size, C]`` table: the embedding for each (query, key) position pair.

    Follows the official ``get_rel_pos``: the learned table ``rel_pos``
    ``[L, C]`` is first resized to ``2 * max(q, k) - 1`` rows by 1-D linear
    interpolation (align_corners=False) if its length differs, then row
    ``(q_i * sq - k_j * sk) + (k - 1) * sk`` is taken for each pair, where
    ``sq = max(k / q, 1)`` and ``sk = max(q / k, 1)``.
    """
    length, channels = rel_pos.shape
    dist = 2 * max(q_size, k_size) - 1
    table = rel_pos
    if length != dist:
        # [L, C] -> [1, C, 1, L] -> resize the last axis -> [dist, C]
        t = b.reshape(b.transpose(table, perm=(1, 0)), shape=(1, channels, 1, length))
        t = b.resize_bilinear(t, size=(1, dist), align_corners=False)
        table = b.transpose(b.reshape(t, shape=(channels, dist)), perm=(1, 0))
    if q_size == k_size:
        # Integer arithmetic: index[i, j] = i - j + (k - 1).
        qc = b.reshape(b.arange(stop=q_size, dtype="i64"), shape=(q_size, 1))
        kc = b.reshape(b.arange(stop=k_size, dtype="i64"), shape=(1, k_size))
        index = b.add(b.sub(qc, kc), b.const(float(k_size - 1), dtype="i64"))
    else:
        # Scaled coordinates in float32 truncated to integers, as torch does.
        sq, sk = max(k_size / q_size, 1.0), max(q_size / k_size, 1.0)
        qc = b.mul(b.reshape(b.arange(stop=q_size, dtype="f32"), shape=(q_size, 1)), sq)
        kc = b.mul(b.reshape(b.arange(stop=k_size, dtype="f32"), shape=(1, k_size)), sk)
        index = b.cast(b.add(b.sub(qc, kc), (k_size - 1) * sk), dtype="i64")
    return b.gather(table, index, axis=0)


def _attention(b: GraphBuilder, c: SamConfig, x: Value, i: int, side: int,
               debug: DebugOptions) -> Value:
    """Multi-head self-attention over ``x`` [B, side, side, E] (B images or windows)."""
    p = f"{PREFIX}.blocks.{i}.attn"
    e, nh, hd = c.encoder_embed_dim, c.encoder_num_heads, c.encoder_head_dim
    bsz, n = x.shape[0], side * side
    qkv = b.linear(x, b.weight(f"{p}.qkv.weight", (3 * e, e)),
                   b.weight(f"{p}.qkv.bias", (3 * e,)) if c.qkv_bias else None)
    # [B, H, W, 3E] -> [3, B, nh, N, hd]: (q|k|v, images/windows, heads, tokens, channels).
    # Images and heads stay separate dims until the last reshape of each operand, so every
    # operand below is a strided view of the projection (kernels read it in place).
    qkv = b.reshape(qkv, shape=(bsz, n, 3, nh, hd))
    qkv = b.transpose(qkv, perm=(2, 0, 3, 1, 4))
    q, k, v = (b.slice_axis(qkv, 0, j, j + 1) for j in range(3))  # [1, B, nh, N, hd]
    bn = bsz * nh

    rel_h = rel_w = None
    if c.use_rel_pos and not debug.no_relpos:
        length = c.block_rel_pos_len(i)
        tab_h = b.weight(f"{p}.rel_pos_h", (length, hd))
        tab_w = b.weight(f"{p}.rel_pos_w", (length, hd))
        if debug.zero_relh:
            tab_h = b.mul(tab_h, 0.0)
        if debug.zero_relw:
            tab_w = b.mul(tab_w, 0.0)
        with b.scope("rel_pos"):
            r_h = rel_pos_table(b, tab_h, side, side)  # [qh, kh, hd]
            r_w = rel_pos_table(b, tab_w, side, side)  # [qw, kw, hd]
        # the tables as [q, hd, k]: weight-only, so transposed once at bind time, and the
        # products below read them row by row
        r_h = b.transpose(r_h, perm=(0, 2, 1))
        r_w = b.transpose(r_w, perm=(0, 2, 1))
        rq = b.reshape(q, shape=(bsz, nh, side, side, hd))  # [B, nh, y, x, hd]
        # rel_h[b, h, y, x, ky] = sum_c q[b, h, y, x, c] * Rh[y, ky, c]: batch (B, nh, y)
        rel_h = b.matmul(rq, r_h)
        # rel_w[b, h, y, x, kx] = sum_c q[b, h, y, x, c] * Rw[x, kx, c]: x next to the batch
        rq_t = b.transpose(rq, perm=(0, 1, 3, 2, 4))  # [B, nh, x, y, hd]
        rel_w = b.transpose(b.matmul(rq_t, r_w), perm=(0, 1, 3, 2, 4))
        rel_h = b.reshape(rel_h, shape=(bn, n, side))
        rel_w = b.reshape(rel_w, shape=(bn, n, side))
    q, k, v = (b.reshape(t, shape=(bn, n, hd)) for t in (q, k, v))

    o = b.attention(q, k, v, rel_h, rel_w, scale=hd ** -0.5)  # [B*nh, N, hd]
    o = b.reshape(o, shape=(bsz, nh, side, side, hd))
    o = b.transpose(o, perm=(0, 2, 3, 1, 4))
    o = b.reshape(o, shape=(bsz, side, side, e))
    return b.linear(o, b.weight(f"{p}.proj.weight", (e, e)), b.weight(f"{p}.proj.bias", (e,)))


def _block(b: GraphBuilder, c: SamConfig, x: Value, i: int, debug: DebugOptions) -> Value:
    p = f"{PREFIX}.blocks.{i}"
    e, g, m = c.encoder_embed_dim, c.image_embedding_size, c.encoder_mlp_dim
    eps = c.encoder_layer_norm_eps
    window = 0 if debug.force_global else c.block_window_size(i)
    with b.scope(f"blocks.{i}"):
        h = b.layer_norm(x, b.weight(f"{p}.norm1.weight", (e,)), b.weight(f"{p}.norm1.bias", (e,)),
                         axis=-1, eps=eps)
        if window > 0:
            h = b.window_partition(h, window=window)
            h = _attention(b, c, h, i, window, debug)
            h = b.window_unpartition(h, window=window, height=g, width=g)
        else:
            h = _attention(b, c, h, i, g, debug)
        x = b.add(x, h)
        h = b.layer_norm(x, b.weight(f"{p}.norm2.weight", (e,)), b.weight(f"{p}.norm2.bias", (e,)),
                         axis=-1, eps=eps)
        h = b.linear(h, b.weight(f"{p}.mlp.lin1.weight", (m, e)), b.weight(f"{p}.mlp.lin1.bias", (m,)))
        h = b.gelu(h, approximate="none")
        h = b.linear(h, b.weight(f"{p}.mlp.lin2.weight", (e, m)), b.weight(f"{p}.mlp.lin2.bias", (e,)))
        return b.add(x, h)


def build_encoder(config, debug: Optional[DebugOptions] = None, batch: int = 1) -> Graph:
    """The ViT backbone: ``%image [batch, 3, S, S]`` -> ``%tokens [batch, g, g, E]``.

    ``debug`` defaults to the RLX_SAM_DEBUG_* environment switches.
    """
    c = get_config(config)
    debug = DebugOptions.from_env() if debug is None else debug
    debug.check(c.encoder_depth)
    if c.encoder_activation != "gelu":
        raise ValueError(f"config {c.name!r}: encoder activation {c.encoder_activation!r} "
                         "is not supported (SAM uses exact GELU)")
    e, ps, g = c.encoder_embed_dim, c.patch_size, c.image_embedding_size
    b = GraphBuilder(ENCODER)
    x = b.input("image", (batch, c.in_chans, c.image_size, c.image_size))
    with b.scope("patch_embed"):
        x = b.conv2d(x, b.weight(f"{PREFIX}.patch_embed.proj.weight", (e, c.in_chans, ps, ps)),
                     b.weight(f"{PREFIX}.patch_embed.proj.bias", (e,)), stride=ps)
        x = b.transpose(x, perm=(0, 2, 3, 1))  # NCHW -> NHWC tokens
    if c.use_abs_pos:
        x = b.add(x, b.weight(f"{PREFIX}.pos_embed", (1, g, g, e)))
    depth = c.encoder_depth if debug.depth is None else debug.depth
    for i in range(depth):
        x = _block(b, c, x, i, debug)
    b.output(x)
    return b.build()


def build_neck(config, batch: int = 1) -> Graph:
    """``%tokens [batch, g, g, E]`` -> ``%embedding [batch, C, g, g]``."""
    c = get_config(config)
    e, o, g = c.encoder_embed_dim, c.out_chans, c.image_embedding_size
    eps = c.layer_norm_2d_eps
    p = f"{PREFIX}.neck"
    b = GraphBuilder(NECK)
    x = b.input("tokens", (batch, g, g, e))
    with b.scope("neck"):
        x = b.transpose(x, perm=(0, 3, 1, 2))
        x = b.conv2d(x, b.weight(f"{p}.0.weight", (o, e, 1, 1)))
        x = b.layer_norm(x, b.weight(f"{p}.1.weight", (o,)), b.weight(f"{p}.1.bias", (o,)),
                         axis=1, eps=eps)
        x = b.conv2d(x, b.weight(f"{p}.2.weight", (o, o, 3, 3)), padding=1)
        x = b.layer_norm(x, b.weight(f"{p}.3.weight", (o,)), b.weight(f"{p}.3.bias", (o,)),
                         axis=1, eps=eps)
    b.output(x)
    return b.build()
