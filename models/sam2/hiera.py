"""HIR builder for SAM 2's Hiera trunk: image -> the four stage features.

Hiera (Ryali et al. 2023, as used by SAM 2) is a ViT that shrinks as it goes:
a 7x7 / stride-4 patch embedding, then four stages of pre-norm transformer
blocks. The first block of stages 2-4 doubles the width and the heads and
*pools its queries* 2x2 (so attention itself halves the grid) while its
shortcut goes through a linear projection and the same max-pool. Blocks
attend inside windows (zero-padded up to a multiple of the window) except a
few global ones. The position embedding is "windowed" (Bolya et al. 2023): a
small background table resized bicubically to the patch grid plus one
window-sized table tiled over it.

Layout: tokens stay NHWC ``[B, H, W, C]`` throughout, as in the official
code, so every linear layer is a GEMM over contiguous channels and window
partitioning is a movement op the passes turn into strided views. The
position embedding depends on weights only: its bicubic resize, tiling and
transpose fold into one derived weight at bind time, leaving one add per
image. Query pooling is written as the elementwise maximum of the four
strided 2x2 phases of the grid, so the fusion pass makes it one kernel that
reads the projection in place (no reduction, no copy).

Weights keep Meta's state-dict names (``image_encoder.trunk.blocks.3.attn.qkv.weight``).
"""

from __future__ import annotations

from typing import List

from rlx.errors import ShapeError
from rlx.ir import Graph, GraphBuilder
from rlx.ir.graph import Value

from .config import BlockSpec, Sam2Config, get_config

__all__ = ["PREFIX", "TRUNK", "hiera_trunk", "build_hiera", "pool_2x2"]

#: state-dict prefix of the trunk
PREFIX = "image_encoder.trunk"
#: subgraph name of the trunk alone (tests; the model compiles it inside image_features)
TRUNK = "hiera"


def pool_2x2(b: GraphBuilder, x: Value, rows: int, cols: int, row_axis: int) -> Value:
    """Max-pool 2x2 / stride 2 over two adjacent axes ``row_axis, row_axis + 1`` of size rows, cols.

    Matches ``nn.MaxPool2d(2, 2)`` on even sizes, the only ones Hiera pools (every
    valid image size gives even grids and every window size is even). Written as
    the maximum of the four phases (strided views), which fuses into one kernel.
    """
    shape = x.shape
    if rows % 2 or cols % 2:
        raise ShapeError(f"query pooling needs even sizes, got {rows}x{cols}")
    pre, post = shape[:row_axis], shape[row_axis + 2:]
    t = b.reshape(x, shape=pre + (rows // 2, 2, cols // 2, 2) + post)
    ra, ca = row_axis + 1, row_axis + 3
    phases = [b.slice_axis(b.slice_axis(t, ra, i, i + 1), ca, j, j + 1)
              for i in (0, 1) for j in (0, 1)]
    m = b.maximum(b.maximum(phases[0], phases[1]), b.maximum(phases[2], phases[3]))
    return b.reshape(m, shape=pre + (rows // 2, cols // 2) + post)


def _linear(b: GraphBuilder, x: Value, name: str, n_out: int, n_in: int) -> Value:
    return b.linear(x, b.weight(f"{name}.weight", (n_out, n_in)), b.weight(f"{name}.bias", (n_out,)))


def _attention(b: GraphBuilder, s: BlockSpec, x: Value) -> Value:
    """MultiScaleAttention on ``x`` [B, h, w, dim] (B images or windows) -> [B, h', w', dim_out]."""
    p = f"{PREFIX}.blocks.{s.index}.attn"
    bsz, h, w, _ = x.shape
    nh, hd = s.num_heads, s.head_dim
    qkv = _linear(b, x, f"{p}.qkv", 3 * s.dim_out, s.dim)
    # [B, h, w, 3*dim_out] -> (B, h, w, q|k|v, heads, head_dim); q, k, v stay views of it
    qkv = b.reshape(qkv, shape=(bsz, h, w, 3, nh, hd))
    q, k, v = (b.slice_axis(qkv, 3, j, j + 1) for j in range(3))  # [B, h, w, 1, nh, hd]
    if s.q_stride:
        q = pool_2x2(b, q, h, w, row_axis=1)
        h, w = q.shape[1], q.shape[2]

    def heads_first(t: Value) -> Value:  # [B, y, x, 1, nh, hd] -> [B*nh, y*x, hd]
        n = t.shape[1] * t.shape[2]
        t = b.transpose(b.reshape(t, shape=(bsz, n, nh, hd)), perm=(0, 2, 1, 3))
        return b.reshape(t, shape=(bsz * nh, n, hd))

    o = b.attention(heads_first(q), heads_first(k), heads_first(v), scale=hd ** -0.5)
    o = b.transpose(b.reshape(o, shape=(bsz, nh, h * w, hd)), perm=(0, 2, 1, 3))
    o = b.reshape(o, shape=(bsz, h, w, s.dim_out))
    return _linear(b, o, f"{p}.proj", s.dim_out, s.dim_out)


def _block(b: GraphBuilder, c: Sam2Config, s: BlockSpec, x: Value) -> Value:
    """One MultiScaleBlock on ``x`` [B, H, W, dim] -> [B, H', W', dim_out]."""
    p = f"{PREFIX}.blocks.{s.index}"
    eps = c.layer_norm_eps
    _, height, width, _ = x.shape
    with b.scope(f"blocks.{s.index}"):
        h = b.layer_norm(x, b.weight(f"{p}.norm1.weight", (s.dim,)),
                         b.weight(f"{p}.norm1.bias", (s.dim,)), axis=-1, eps=eps)
        shortcut = x
        if s.has_proj:  # the width changes: the shortcut is projected (and pooled) too
            shortcut = _linear(b, h, f"{p}.proj", s.dim_out, s.dim)
            if s.q_stride:
                shortcut = pool_2x2(b, shortcut, height, width, row_axis=1)
        if s.window > 0:
            h = b.window_partition(h, window=s.window)
        h = _attention(b, s, h)
        if s.window > 0:
            # after query pooling the windows (and the grid) are half as wide
            win = s.window // s.q_stride if s.q_stride else s.window
            h = b.window_unpartition(h, window=win, height=shortcut.shape[1],
                                     width=shortcut.shape[2])
        x = b.add(shortcut, h)
        hidden = int(s.dim_out * c.mlp_ratio)
        h = b.layer_norm(x, b.weight(f"{p}.norm2.weight", (s.dim_out,)),
                         b.weight(f"{p}.norm2.bias", (s.dim_out,)), axis=-1, eps=eps)
        h = b.gelu(_linear(b, h, f"{p}.mlp.layers.0", hidden, s.dim_out), approximate="none")
        h = _linear(b, h, f"{p}.mlp.layers.1", s.dim_out, hidden)
        return b.add(x, h)


def _position_embedding(b: GraphBuilder, c: Sam2Config, side: int) -> Value:
    """``[1, side, side, C]``: bicubic(pos_embed) + tiled pos_embed_window (weights only)."""
    e, w0 = c.embed_dim, c.window_spec[0]
    bh, bw = c.window_pos_embed_bkg_spatial_size
    with b.scope("pos_embed"):
        table = b.resize_bicubic(b.weight(f"{PREFIX}.pos_embed", (1, e, bh, bw)),
                                 size=(side, side), align_corners=False)
        window = b.weight(f"{PREFIX}.pos_embed_window", (1, e, w0, w0))
        n = side // w0
        tiled = b.add(b.reshape(table, shape=(1, e, n, w0, n, w0)),
                      b.reshape(window, shape=(1, e, 1, w0, 1, w0)))
        return b.transpose(b.reshape(tiled, shape=(1, e, side, side)), perm=(0, 2, 3, 1))


def hiera_trunk(b: GraphBuilder, c: Sam2Config, image: Value) -> List[Value]:
    """Emit the trunk on ``image`` [B, 3, S, S]; the stage features NHWC, highest resolution first."""
    e, k = c.embed_dim, c.patch_kernel
    with b.scope("patch_embed"):
        x = b.conv2d(image, b.weight(f"{PREFIX}.patch_embed.proj.weight", (e, c.in_chans, k, k)),
                     b.weight(f"{PREFIX}.patch_embed.proj.bias", (e,)),
                     stride=c.patch_stride, padding=c.patch_padding)
        x = b.transpose(x, perm=(0, 2, 3, 1))  # NCHW -> NHWC tokens
    x = b.add(x, _position_embedding(b, c, x.shape[1]))
    outputs = []
    for spec in c.blocks():
        x = _block(b, c, spec, x)
        if spec.index in c.stage_ends:
            outputs.append(x)
    return outputs


def build_hiera(config, image_size: int | None = None, batch: int = 1) -> Graph:
    """The trunk alone: ``%image [batch, 3, S, S]`` -> the four stage features ``[batch, h, w, C]``.

    Outputs are NHWC (the official trunk returns them permuted to NCHW).
    """
    c = get_config(config, image_size)
    b = GraphBuilder(TRUNK)
    image = b.input("image", (batch, c.in_chans, c.image_size, c.image_size))
    b.output(*hiera_trunk(b, c, image))
    return b.build()
