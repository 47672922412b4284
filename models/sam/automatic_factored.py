"""Segment-everything's decoder with the image side kept *factored*: shared part + low rank.

Every prompt of a segment-everything grid meets the same image tokens ``X``
(``N = g*g`` rows of width ``d``). The plain batched graph
(`automatic_graph`) shares the first layer's projections of ``X``, but from
the first image->token update on it carries a dense ``[N, d]`` image per
prompt: ~0.35 GMAC and a dozen ``[N, d]`` passes per prompt. Yet what a
prompt adds to the image is small. With ``T`` prompt tokens and ``H`` heads:

* layer 0's image->token attention adds ``sum_h P_h (V_h Wo_hᵀ)``: the
  softmax weights ``P0`` (``H*T`` numbers per pixel) times a per-prompt
  ``[H*T, d]`` factor ``U0``. Before norm4 the image is ``X + bo + P0ᵀ U0``.
* LayerNorm of that is ``diag(s1) (Xc + P0ᵀ U0c) Γ + β`` (``c``: rows
  centred, which centring the factors gives for free): its per-pixel
  variance is ``|Xc|² + 2 P0·(Xc U0cᵀ) + P0ᵀ (U0c U0cᵀ) P0``, all from
  per-image products and ``[H*T, H*T]`` matrices. ``Xc U0cᵀ`` itself is
  ``(Xc Wo) Vᵀ`` per head: a per-image ``[N, internal]`` product, then
  ``hd``-wide per-prompt work.
* every later use of the image goes through a linear map, so the shared
  part is mapped once per image (a slow-stage product) and the low-rank
  part by ``[H*T, H*T]`` coefficient matrices per prompt: the scores of
  both layer-1 cross-attentions are ``s1 ⊙ (q Wx_hᵀ + C P0) + q Wpe_hᵀ``,
  the token->image values ``(P s1) X Wv + ((P s1) P0ᵀ) (U0c Γ Wv)``.
* layer 1's image->token update adds a second low-rank term ``P1ᵀ U1``;
  norm4's statistics come from the stacked coefficients
  ``Y = [s1 ⊙ P0; P1]`` (``2*H*T`` rows) and the Gram matrix of the stacked
  factors ``E = [U0c Γ C; U1 C]``; its output is
  ``diag(s2) (s1 ⊙ XK + Yᵀ E + bc) Γ1 + β1`` -- never formed.
* the final token->image attention reads it the same way; the mask
  upscaling's first ConvTranspose2d (kernel = stride 2: a per-pixel linear
  map) commutes with the per-pixel scale ``s2``, so
  `build_factored_masks` applies it to the factors directly.

Per ViT-B prompt (N = 4096, d = 256, 8 heads, T = 7): the largest products
are ``[H*T, H*T] @ [H*T, N]`` (12.8 M MAC) instead of ``[N, d] @ [d, H*T]``
(58.7 M), about 0.17 GMAC in all instead of 0.35, and no per-prompt tensor
is wider than ``[2*H*T, N]``. Exact math: only float32 reassociation (the
biases that add a constant to every score of a softmax row are left out,
as the softmax cancels them). The tests compare both halves with the plain
graphs and with the official decoder.

Layout: per-prompt image-side tensors are ``[B, H*T, N]`` (pixels
contiguous; the softmax over the N pixels runs along rows, the one over a
head's T tokens down columns) or ``[B, H, T, N]`` views of them.
Only the SAM decoder's layout (2 blocks) is factored; `factored_supported`
says whether a config qualifies.
"""

from __future__ import annotations

import math

from rlx.errors import InputError
from rlx.ir import Graph, GraphBuilder
from rlx.ir.graph import Value

from .automatic_graph import SPARSE_INPUT, TOKENS_PER_PROMPT
from .config import SamConfig, get_config
from .decoder import (
    _attention,
    _linear,
    _mm,
    _norm,
    _split_heads,
    _weight_heads,
    dense_positional_encoding,
    mask_product_tokens,
    mlp_heads,
    no_mask_embedding,
    output_tokens,
)
from .prompt_graph import IMAGE_INPUT

__all__ = ["FACTORED_TOKENS", "FACTORED_MASKS", "SCALE1_INPUT", "SCALE2_INPUT", "COEFF0_INPUT",
           "COEFF1_INPUT", "FACTORS0_INPUT", "FACTORS1_INPUT", "HYPER_INPUT",
           "FACTOR_INPUTS", "factored_supported",
           "build_factored_tokens", "build_factored_masks"]

FACTORED_TOKENS = "points_to_factors"
FACTORED_MASKS = "factors_to_masks"
SCALE1_INPUT = "scale1"     # [B, N]: layer 0 norm4's per-pixel 1/std
SCALE2_INPUT = "scale2"     # [B, N]: layer 1 norm4's per-pixel 1/std
COEFF0_INPUT = "coeff0"     # [B, H*T, N]: s1 * P0 (layer 0 image->token softmax)
COEFF1_INPUT = "coeff1"     # [B, H*T, N]: P1 (layer 1 image->token softmax)
FACTORS0_INPUT = "factors0"  # [B, H*T, d]: centred factor rows of P0, times norm4 weight
FACTORS1_INPUT = "factors1"  # [B, H*T, d]: the same for P1
HYPER_INPUT = "hyper_in"
#: batched inputs of `build_factored_masks`, in the order `build_factored_tokens` outputs them
FACTOR_INPUTS = (SCALE1_INPUT, SCALE2_INPUT, COEFF0_INPUT, COEFF1_INPUT, FACTORS0_INPUT,
                 FACTORS1_INPUT)

MD = "mask_decoder"
TR = f"{MD}.transformer"


def factored_supported(config) -> bool:
    """True for SAM's decoder layout (two two-way blocks), which the builders factor."""
    return get_config(config).decoder_depth == 2


def _check(c: SamConfig, batch: int) -> None:
    if not factored_supported(c):
        raise InputError(f"the factored decoder needs decoder_depth=2, got {c.decoder_depth}")
    if int(batch) < 1:
        raise InputError(f"batch must be at least 1, got {batch}")


# ---- small helpers -------------------------------------------------------------------------


def _vec(b: GraphBuilder, name: str, n: int) -> Value:
    return b.weight(name, (n,))


def _centre(b: GraphBuilder, x: Value) -> Value:
    """Rows (last axis) minus their mean."""
    return b.sub(x, b.reduce_mean(x, axes=(len(x.shape) - 1,), keepdims=True))


def _proj(b: GraphBuilder, x: Value, w: Value, bias: Value = None) -> Value:
    """``x @ wᵀ (+ bias)`` for a weight in PyTorch's ``[out, in]`` layout (any leading dims)."""
    return b.linear(x, w, bias) if bias is not None else b.linear(x, w)


def _heads_t(b: GraphBuilder, x: Value, heads: int) -> Value:
    """Shared ``[1, N, heads*hd]`` -> ``[1, H, hd, N]`` (per-head, pixels contiguous)."""
    one, n, width = x.shape
    return b.transpose(b.reshape(x, shape=(one, n, heads, width // heads)), perm=(0, 2, 3, 1))


def _w(b: GraphBuilder, prefix: str, c: SamConfig, internal: int) -> Value:
    return b.weight(f"{prefix}.weight", (internal, c.prompt_embed_dim))


def _wo_heads(b: GraphBuilder, prefix: str, heads: int, hd: int, d: int) -> Value:
    """out_proj weight ``[d, H*hd]`` as ``[H, hd, d]``: row block h maps head h's output to d."""
    wo = b.weight(f"{prefix}.out_proj.weight", (d, heads * hd))
    return b.reshape(b.transpose(wo, perm=(1, 0)), shape=(heads, hd, d))


def _per_head(b: GraphBuilder, a: Value, x_t: Value) -> Value:
    """``a [B, H, T, hd] @ x_t [1, H, hd, N]`` -> ``[B, H, T, N]``, the batch stacked into rows.

    The right operand is the same for every prompt: one ``[B*T, hd] @ [hd, N]``
    product per head packs it once, where B*H products of T rows would each
    pack it again.
    """
    bsz, heads, t, hd = a.shape
    n = x_t.shape[3]
    rows = b.reshape(b.transpose(a, perm=(1, 0, 2, 3)), shape=(heads, bsz * t, hd))
    out = b.matmul(rows, b.reshape(x_t, shape=(heads, hd, n)))  # [H, B*T, N]
    return b.transpose(b.reshape(out, shape=(heads, bsz, t, n)), perm=(1, 0, 2, 3))


def _factored_scores(b: GraphBuilder, qh: Value, w_heads: Value, f: Value, p0: Value,
                     s1_4: Value, x_t: Value, pe_t: Value) -> Value:
    """``q_h · W_h(s1 ⊙ (X + Fᵀ P0) + PE)`` for every head, token and pixel: ``[B, H, T, N]``.

    ``qh [B, H, T, hd]`` (scaled queries or keys of the token side),
    ``w_heads [H, hd, d]`` the image side's projection, ``x_t`` / ``pe_t``
    the shared parts already projected (``[1, H, hd, N]``). The low-rank part
    costs one ``[H*T, d] @ [d, H*T0]`` coefficient product and one
    ``[H*T, H*T0] @ [H*T0, N]`` per prompt.
    """
    bsz, heads, t, _ = qh.shape
    n = p0.shape[2]
    a = b.reshape(b.matmul(qh, w_heads), shape=(bsz, heads * t, w_heads.shape[2]))
    coef = b.matmul(a, f, transpose_b=True)  # [B, H*T, H*T0]
    low = b.reshape(b.matmul(coef, p0), shape=(bsz, heads, t, n))
    return b.add(b.mul(b.add(_per_head(b, qh, x_t), low), s1_4), _per_head(b, qh, pe_t))


class _Shared:
    """Image-only tensors (a slow stage computes them once per image)."""

    def __init__(self, b: GraphBuilder, c: SamConfig):
        d, g = c.prompt_embed_dim, c.image_embedding_size
        p0 = f"{TR}.layers.0"
        p1 = f"{TR}.layers.1"
        self.emb = b.input(IMAGE_INPUT, (1, d, g, g))
        image = b.transpose(b.reshape(self.emb, shape=(1, d, g * g)), perm=(0, 2, 1))
        self.x0 = b.add(image, no_mask_embedding(b, c))  # [1, N, d]
        self.pe = dense_positional_encoding(b, c)        # [1, N, d]
        bo0 = _vec(b, f"{p0}.cross_attn_image_to_token.out_proj.bias", d)
        self.xc = _centre(b, b.add(self.x0, bo0))        # layer 0 norm4 input, centred part
        self.gamma0 = _vec(b, f"{p0}.norm4.weight", d)
        self.beta0 = _vec(b, f"{p0}.norm4.bias", d)
        self.gamma1 = _vec(b, f"{p1}.norm4.weight", d)
        self.beta1 = _vec(b, f"{p1}.norm4.bias", d)
        self.xg0 = b.mul(self.xc, self.gamma0)           # keys1 = s1 * (xg0 + P0ᵀ F) + beta0
        self.xk = _centre(b, self.xg0)                   # its centred rows (layer 1 norm4)
        bo1 = _vec(b, f"{p1}.cross_attn_image_to_token.out_proj.bias", d)
        # the constant row of layer 1 norm4's input, centred (weights only)
        self.bc = _centre(b, b.reshape(b.add(self.beta0, bo1), shape=(1, d)))  # [1, d]


# ---- prompts -> factors ----------------------------------------------------------------------


def build_factored_tokens(config, batch: int) -> Graph:
    """B single-click prompts -> IoU, hypernetwork inputs and the factors of the image side.

    Inputs ``image_embedding [1, C, g, g]`` (slow), ``sparse [B, 2, C]``.
    Outputs ``hyper_in [B, M-1, C/8]``, ``iou [B, M-1]`` (multimask tokens,
    like `automatic_graph.build_points_to_tokens`) and what
    `build_factored_masks` needs for the mask logits: ``scale1 [B, N]``,
    ``scale2 [B, N]``, ``coeff0`` / ``coeff1 [B, HT, N]``, ``factors0`` /
    ``factors1 [B, HT, C]`` (`FACTOR_INPUTS`).
    """
    c = get_config(config)
    _check(c, batch)
    d, g, m = c.prompt_embed_dim, c.image_embedding_size, c.num_mask_tokens
    heads, cross = c.decoder_num_heads, c.decoder_cross_attn_dim
    hd, n, bsz = cross // heads, g * g, int(batch)
    scale = 1.0 / math.sqrt(hd)
    eps = c.decoder_layer_norm_eps
    b = GraphBuilder(f"{FACTORED_TOKENS}_b{bsz}")
    sh = _Shared(b, c)
    sparse = b.input(SPARSE_INPUT, (bsz, TOKENS_PER_PROMPT, d))
    tokens = b.broadcast_to(output_tokens(b, c), shape=(bsz, 1 + m, d))
    qpe = b.concat(tokens, sparse, axis=1)  # [B, T, d]: the tokens' "positional encoding"
    t = qpe.shape[1]
    ht = heads * t

    def mlp(q: Value, p: str) -> Value:
        h = b.relu(_linear(b, q, f"{p}.mlp.lin1", d, c.decoder_mlp_dim))
        return _norm(b, c, b.add(q, _linear(b, h, f"{p}.mlp.lin2", c.decoder_mlp_dim, d)),
                     f"{p}.norm3")

    def token_kv(q: Value, pre: str):
        kh = _split_heads(b, b.mul(_linear(b, b.add(q, qpe), f"{pre}.k_proj", d, cross), scale),
                          heads)
        vh = _split_heads(b, _linear(b, q, f"{pre}.v_proj", d, cross), heads)
        return kh, vh  # [B, H, T, hd] each

    def s_4d(s: Value) -> Value:
        return b.reshape(s, shape=(bsz, 1, 1, n))

    # ---- layer 0: the image side is the same for every prompt
    p = f"{TR}.layers.0"
    with b.scope("layers.0"):
        q = _norm(b, c, _attention(b, c, f"{p}.self_attn", qpe, qpe, qpe, d), f"{p}.norm1")
        k_img = b.add(sh.x0, sh.pe)
        q = b.add(q, _attention(b, c, f"{p}.cross_attn_token_to_image", b.add(q, qpe), k_img,
                                sh.x0, cross, static="keys"))
        q = mlp(_norm(b, c, q, f"{p}.norm2"), p)
        pre = f"{p}.cross_attn_image_to_token"
        q_img_t = _heads_t(b, _linear(b, k_img, f"{pre}.q_proj", d, cross), heads)
        kh0, vh0 = token_kv(q, pre)
        p0 = b.reshape(b.softmax(_per_head(b, kh0, q_img_t), axis=2), shape=(bsz, ht, n))
        u0 = b.reshape(b.matmul(vh0, _wo_heads(b, pre, heads, hd, d)), shape=(bsz, ht, d))
        u0c = _centre(b, u0)
        # norm4 statistics: |Xc + P0ᵀ U0c|² = |Xc|² + P0·(2 Xc U0cᵀ + G P0)
        wo0 = b.weight(f"{pre}.out_proj.weight", (d, cross))
        xw0_t = _heads_t(b, _mm(b, sh.xc, wo0), heads)  # Xc U0cᵀ = (Xc Wo) Vᵀ per head
        cross0 = b.reshape(_per_head(b, vh0, xw0_t), shape=(bsz, ht, n))
        gram0 = b.matmul(u0c, u0c, transpose_b=True)
        inner = b.add(b.matmul(gram0, p0), b.mul(cross0, 2.0))
        sq = b.add(b.reduce_sum(b.mul(p0, inner), axes=(1,)),
                   b.reduce_sum(b.mul(sh.xc, sh.xc), axes=(2,)))  # [B, N]
        var1 = b.maximum(b.div(sq, float(d)), 0.0)
        s1 = b.rsqrt(b.add(var1, eps))  # [B, N]
        f0 = b.mul(u0c, sh.gamma0)      # keys1 = s1 * (xg0 + P0ᵀ F0) + beta0
    s1_4 = s_4d(s1)

    # ---- layer 1
    p = f"{TR}.layers.1"
    with b.scope("layers.1"):
        qq = b.add(q, qpe)
        q = _norm(b, c, b.add(q, _attention(b, c, f"{p}.self_attn", qq, qq, q, d)),
                  f"{p}.norm1")
        # token -> image, keys = keys1 + pe, values = keys1
        pre = f"{p}.cross_attn_token_to_image"
        wk, wv = _w(b, f"{pre}.k_proj", c, cross), _w(b, f"{pre}.v_proj", c, cross)
        qh = _split_heads(b, b.mul(_linear(b, b.add(q, qpe), f"{pre}.q_proj", d, cross), scale),
                          heads)
        scores = _factored_scores(b, qh, _weight_heads(b, f"{pre}.k_proj", heads, hd, d), f0, p0,
                                  s1_4, _heads_t(b, _proj(b, sh.xg0, wk), heads),
                                  _heads_t(b, _proj(b, sh.pe, wk), heads))
        r = b.mul(b.softmax(scores, axis=3), s1_4)  # [B, H, T, N]: P * s1
        o = b.matmul(r, _split_heads(b, _proj(b, sh.xg0, wv), heads))
        rp = b.matmul(b.reshape(r, shape=(bsz, ht, n)), p0, transpose_b=True)  # [B, HT, HT0]
        fv = _split_heads(b, _proj(b, f0, wv), heads)  # [B, H, HT0, hd]
        o = b.add(o, b.matmul(b.reshape(rp, shape=(bsz, heads, t, ht)), fv))
        bv = _proj(b, b.reshape(sh.beta0, shape=(1, d)), wv, _vec(b, f"{pre}.v_proj.bias", cross))
        o = b.add(o, b.reshape(bv, shape=(heads, 1, hd)))
        o = b.reshape(b.transpose(o, perm=(0, 2, 1, 3)), shape=(bsz, t, cross))
        q = b.add(q, _linear(b, o, f"{pre}.out_proj", cross, d))
        q = mlp(_norm(b, c, q, f"{p}.norm2"), p)
        # image -> token: queries = keys1 + pe
        pre = f"{p}.cross_attn_image_to_token"
        wq = _w(b, f"{pre}.q_proj", c, cross)
        kh1, vh1 = token_kv(q, pre)
        qp = _proj(b, b.add(sh.pe, sh.beta0), wq, _vec(b, f"{pre}.q_proj.bias", cross))
        scores = _factored_scores(b, kh1, _weight_heads(b, f"{pre}.q_proj", heads, hd, d), f0, p0,
                                  s1_4, _heads_t(b, _proj(b, sh.xg0, wq), heads),
                                  _heads_t(b, qp, heads))
        p1 = b.reshape(b.softmax(scores, axis=2), shape=(bsz, ht, n))
        u1 = b.reshape(b.matmul(vh1, _wo_heads(b, pre, heads, hd, d)), shape=(bsz, ht, d))
        # norm4: centred input s1 * (xk + P0ᵀ FC) + bc + P1ᵀ U1c = s1 * xk + Yᵀ E + bc
        fc, u1c = _centre(b, f0), _centre(b, u1)                 # E = [fc; u1c]
        s1_3 = b.reshape(s1, shape=(bsz, 1, n))
        y0 = b.mul(p0, s1_3)                                     # Y = [y0; p1]
        wo0 = b.weight(f"{TR}.layers.0.cross_attn_image_to_token.out_proj.weight", (d, cross))
        wo1 = b.weight(f"{pre}.out_proj.weight", (d, cross))
        xf_t = _heads_t(b, _mm(b, _centre(b, b.mul(sh.xk, sh.gamma0)), wo0), heads)
        xu_t = _heads_t(b, _mm(b, sh.xk, wo1), heads)
        lin0 = b.reshape(_per_head(b, vh0, xf_t), shape=(bsz, ht, n))  # xk · fc rows
        lin1 = b.reshape(_per_head(b, vh1, xu_t), shape=(bsz, ht, n))  # xk · u1c rows
        bc_col = b.reshape(sh.bc, shape=(d, 1))
        # |y2c|² = s1²|xk|² + 2 s1 xk·bc + |bc|² + Yᵀ (E Eᵀ) Y + 2 Y·(s1 xk Eᵀ + E bc)
        in0 = b.add(b.matmul(b.matmul(fc, fc, transpose_b=True), y0),
                    b.mul(b.add(b.add(b.matmul(b.matmul(fc, u1c, transpose_b=True), p1),
                                      b.mul(lin0, s1_3)), b.matmul(fc, bc_col)), 2.0))
        in1 = b.add(b.matmul(b.matmul(u1c, u1c, transpose_b=True), p1),
                    b.mul(b.add(b.mul(lin1, s1_3), b.matmul(u1c, bc_col)), 2.0))
        xx = b.reduce_sum(b.mul(sh.xk, sh.xk), axes=(2,))        # [1, N]
        xb = b.reduce_sum(b.mul(sh.xk, sh.bc), axes=(2,))        # [1, N]
        bb = b.reduce_sum(b.mul(sh.bc, sh.bc), axes=(1,))        # [1]
        sq = b.add(b.add(b.reduce_sum(b.mul(y0, in0), axes=(1,)),
                         b.reduce_sum(b.mul(p1, in1), axes=(1,))),
                   b.add(b.mul(b.mul(s1, s1), xx), b.add(b.mul(b.mul(s1, xb), 2.0), bb)))
        s2 = b.rsqrt(b.add(b.maximum(b.div(sq, float(d)), 0.0), eps))  # [B, N]
        # keys2 = s2 * (s1 * xk + y0ᵀ eg0 + p1ᵀ eg1 + bc) * gamma1 + beta1, eg = E * gamma1
        eg0, eg1 = b.mul(fc, sh.gamma1), b.mul(u1c, sh.gamma1)
    s2_4 = s_4d(s2)

    # ---- final token -> image attention (the IoU and mask tokens only)
    pre = f"{TR}.final_attn_token_to_image"
    tf = 1 + m
    with b.scope("final"):
        qs = b.slice_axis(q, 1, 0, tf)
        qf = _split_heads(b, b.mul(_linear(b, b.slice_axis(b.add(q, qpe), 1, 0, tf),
                                           f"{pre}.q_proj", d, cross), scale), heads)
        wk, wv = _w(b, f"{pre}.k_proj", c, cross), _w(b, f"{pre}.v_proj", c, cross)
        g1 = b.reshape(sh.gamma1, shape=(1, d))
        kx_t = _heads_t(b, _proj(b, sh.xk, b.mul(wk, g1)), heads)
        kp_t = _heads_t(b, _proj(b, sh.pe, wk), heads)
        a = b.reshape(b.matmul(qf, _weight_heads(b, f"{pre}.k_proj", heads, hd, d)),
                      shape=(bsz, heads * tf, d))
        low = b.add(b.matmul(b.matmul(a, eg0, transpose_b=True), y0),
                    b.matmul(b.matmul(a, eg1, transpose_b=True), p1))
        low = b.reshape(low, shape=(bsz, heads, tf, n))
        # bc's term is scaled by s2 like the rest (only beta1's is constant per row)
        abc = b.reshape(b.matmul(a, b.reshape(b.mul(sh.bc, g1), shape=(d, 1))),
                        shape=(bsz, heads, tf, 1))
        inner = b.add(b.add(b.mul(_per_head(b, qf, kx_t), s1_4), low), abc)
        scores = b.add(b.mul(inner, s2_4), _per_head(b, qf, kp_t))
        rf = b.mul(b.softmax(scores, axis=3), s2_4)  # [B, H, tf, N]: P * s2
        o = b.matmul(b.mul(rf, s1_4), _split_heads(b, _proj(b, sh.xk, b.mul(wv, g1)), heads))
        rf2 = b.reshape(rf, shape=(bsz, heads * tf, n))
        for yk, egk in ((y0, eg0), (p1, eg1)):
            ry = b.reshape(b.matmul(rf2, yk, transpose_b=True), shape=(bsz, heads, tf, ht))
            o = b.add(o, b.matmul(ry, _split_heads(b, _proj(b, egk, wv), heads)))
        bcv = b.reshape(_proj(b, b.mul(sh.bc, g1), wv), shape=(heads, 1, hd))
        o = b.add(o, b.mul(b.reduce_sum(rf, axes=(3,), keepdims=True), bcv))
        bv = _proj(b, b.reshape(sh.beta1, shape=(1, d)), wv, _vec(b, f"{pre}.v_proj.bias", cross))
        o = b.add(o, b.reshape(bv, shape=(heads, 1, hd)))
        o = b.reshape(b.transpose(o, perm=(0, 2, 1, 3)), shape=(bsz, tf, cross))
        q = b.add(qs, _linear(b, o, f"{pre}.out_proj", cross, d))
        q = _norm(b, c, q, f"{TR}.norm_final_attn")
    hyper_in, iou = mlp_heads(b, c, q)
    b.output(b.slice_axis(hyper_in, 1, 1, m), b.slice_axis(iou, 1, 1, m), s1, s2, y0, p1,
             eg0, eg1)
    return b.build()


# ---- factors -> mask logits -------------------------------------------------------------------


def build_factored_masks(config, batch: int) -> Graph:
    """The factors of `build_factored_tokens` -> mask logits ``[B, M-1, 4g, 4g]``.

    Inputs ``image_embedding`` (slow), ``hyper_in`` and `FACTOR_INPUTS` (batched). The first ConvTranspose2d of the
    upscaling maps each pixel's ``d`` channels linearly to its 2x2 block, so
    on ``keys2 = s2 ⊙ (s1 ⊙ XK + Yᵀ E + bc) Γ1 + β1`` it is
    ``s2 ⊙ (s1 ⊙ (XK Γ1 W) + Yᵀ (E Γ1 W) + ...)``: a per-image product and a
    ``[N, 2HT] @ [2HT, 4 C/4]`` one per prompt instead of ``[N, C] @ [C, C]``.
    The rest is `decoder.upscale_tokens`' (norm, GELU, second transposed
    convolution) and `decoder.mask_product_tokens`.
    """
    c = get_config(config)
    _check(c, batch)
    d, g, m = c.prompt_embed_dim, c.image_embedding_size, c.num_mask_tokens
    heads = c.decoder_num_heads
    n, bsz, k = g * g, int(batch), heads * (1 + m + TOKENS_PER_PROMPT)
    c1, c2 = d // 4, d // 8
    b = GraphBuilder(f"{FACTORED_MASKS}_b{bsz}")
    sh = _Shared(b, c)
    hyper = b.input(HYPER_INPUT, (bsz, m - 1, c2))
    s1 = b.input(SCALE1_INPUT, (bsz, n))
    s2 = b.input(SCALE2_INPUT, (bsz, n))
    ys = [b.input(name, (bsz, k, n)) for name in (COEFF0_INPUT, COEFF1_INPUT)]
    egs = [b.input(name, (bsz, k, d)) for name in (FACTORS0_INPUT, FACTORS1_INPUT)]
    p = f"{MD}.output_upscaling"

    def deconv_weight(prefix: str, cin: int, cout: int):
        # [Cin, Cout, 2, 2] -> [Cin, (kh, kw, Cout)], bias tiled per (kh, kw, Cout)
        w = b.weight(f"{prefix}.weight", (cin, cout, 2, 2))
        wm = b.reshape(b.transpose(w, perm=(0, 2, 3, 1)), shape=(cin, 4 * cout))
        bias = b.reshape(b.broadcast_to(b.reshape(b.weight(f"{prefix}.bias", (cout,)),
                                                  shape=(1, cout)), shape=(4, cout)),
                         shape=(4 * cout,))
        return wm, bias

    with b.scope("output_upscaling"):
        wm, bias = deconv_weight(f"{p}.0", d, c1)
        g1 = b.reshape(sh.gamma1, shape=(d, 1))
        wg = b.mul(wm, g1)                                   # Γ1 W
        shared = _mm(b, sh.xk, wg)                           # [1, N, 4 c1]
        const = b.add(_mm(b, b.reshape(sh.beta1, shape=(1, 1, d)), wm), bias)
        bcw = _mm(b, b.reshape(sh.bc, shape=(1, 1, d)), wg)  # [1, 1, 4 c1]
        low = b.add(*[b.matmul(y, b.matmul(eg, wm), transpose_a=True)  # [B, N, 4 c1]
                      for y, eg in zip(ys, egs)])
        x = b.add(b.mul(b.reshape(s1, shape=(bsz, n, 1)), shared), b.add(low, bcw))
        x = b.add(b.mul(x, b.reshape(s2, shape=(bsz, n, 1))), const)
        x = b.reshape(x, shape=(bsz, 4 * n, c1))
        x = b.layer_norm(x, b.weight(f"{p}.1.weight", (c1,)), b.weight(f"{p}.1.bias", (c1,)),
                         axis=2, eps=c.layer_norm_2d_eps)
        x = b.gelu(x, approximate="none")
        wm2, bias2 = deconv_weight(f"{p}.3", c1, c2)
        x = b.gelu(b.add(_mm(b, x, wm2), bias2), approximate="none")  # [B, 4N, 4 c2]
        feats = b.reshape(x, shape=(bsz, 16 * n, c2))
    b.output(mask_product_tokens(b, c, hyper, feats))
    return b.build()
