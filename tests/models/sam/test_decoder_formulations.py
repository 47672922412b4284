"""The re-associated forms the decoder builds, against the official PyTorch modules.

* `_attention` picks, by shape, the standard form (projections + one
  attention op), the few-keys form (image tokens attending to a handful of
  prompt tokens) or the few-queries form (prompt tokens attending to the
  image); with a static image side (the first layer) it projects that side
  instead (standard form, or the static-queries form). Each is checked against the official ``Attention`` module at the
  real decoder width (256, 8 heads, downsample 2), with token counts on both
  sides of the switch-over (T < head width 16 and T >= 16).
* `upscale_tokens` + `mask_product_tokens` (token layout, what the bucket
  graph runs) against ``output_upscaling`` followed by the hypernetwork
  product in NCHW, as in ``MaskDecoder.predict_masks``.

Every backend; the graphs are small, so this runs in seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.sam import decoder as dec
from models.sam.config import CONFIGS
from rlx.ir import GraphBuilder
from rlx.runtime.compiler import compile_graph
from tests.models.sam.decoder_fixtures import PROFILES, assert_close, random_inputs, t

N_IMAGE = 4096  # 64 x 64 image tokens


@pytest.fixture(scope="module")
def official(vit_b_build):
    return vit_b_build[0].mask_decoder


@pytest.fixture(scope="module")
def weights(vit_b_build):
    return {k: v.detach().numpy().copy() for k, v in vit_b_build[0].state_dict().items()
            if k.startswith("mask_decoder.")}


def _attention_graph(prefix: str, nq: int, nk: int, internal: int, static=None):
    c = CONFIGS["vit_b"]
    d = c.prompt_embed_dim
    b = GraphBuilder("attention")
    q, k, v = (b.input(n, (1, s, d)) for n, s in (("q", nq), ("k", nk), ("v", nk)))
    b.output(dec._attention(b, c, f"mask_decoder.{prefix}", q, k, v, internal, static=static))
    return b.build()


def _ops(graph):
    return {n.op for n in graph.nodes}


# (module, queries, keys, static side, form): token->image with T prompt tokens as queries,
# image->token with T prompt tokens as keys; T = 7 (one click) and 20 (above the head width
# of 16); the first layer's image side is static (projected, kept per image when staged).
CASES = [
    ("transformer.layers.0.cross_attn_token_to_image", 7, N_IMAGE, None, "few_queries"),
    ("transformer.layers.0.cross_attn_image_to_token", N_IMAGE, 7, None, "few_keys"),
    ("transformer.final_attn_token_to_image", 20, N_IMAGE, None, "standard"),
    ("transformer.layers.1.cross_attn_image_to_token", N_IMAGE, 20, None, "standard"),
    ("transformer.layers.1.self_attn", 7, 7, None, "standard"),
    ("transformer.layers.0.cross_attn_token_to_image", 7, N_IMAGE, "keys", "static_keys"),
    ("transformer.layers.0.cross_attn_image_to_token", N_IMAGE, 7, "queries", "static_queries"),
]


def _image_side_width(graph, big: int, internal: int) -> bool:
    """Is any [.., N, .., internal] value computed (a projection of the image side)?"""
    return any(big in out.shape and internal in out.shape
               for node in graph.nodes for out in node.outputs)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("module,nq,nk,static,form", CASES,
                         ids=[f"{m.split('.')[-1]}-{f}-{nq}x{nk}" for m, nq, nk, _, f in CASES])
@torch.no_grad()
def test_attention_forms_match_the_official_module(official, weights, profile, module, nq,
                                                   nk, static, form):
    mod = official.get_submodule(module)
    internal = mod.internal_dim
    graph = _attention_graph(module, nq, nk, internal, static)
    # The form is chosen by shape (and the static side): only the standard form has an
    # attention op; the few-token forms never project the image side.
    assert ("attention" in _ops(graph)) == (form == "standard")
    if form in ("few_keys", "few_queries"):
        assert not _image_side_width(graph, max(nq, nk), internal)
    if static is not None:
        assert _image_side_width(graph, max(nq, nk), internal)
    d = CONFIGS["vit_b"].prompt_embed_dim
    q, k, v = random_inputs([(1, nq, d), (1, nk, d), (1, nk, d)], seed=11)
    (got,) = compile_graph(graph, profile, weights)(q, k, v)
    ref = mod(t(q), t(k), t(v)).numpy()
    assert_close(got, ref, f"{module} {form} {nq}x{nk} [{profile}]")


@pytest.mark.parametrize("profile", PROFILES)
@torch.no_grad()
def test_token_layout_upscale_and_mask_product_match_nchw(official, weights, profile):
    c = CONFIGS["vit_b"]
    d, g, m = c.prompt_embed_dim, c.image_embedding_size, c.num_mask_tokens
    keys, hyper = random_inputs([(1, g * g, d), (1, m, d // 8)], seed=12)
    b = GraphBuilder("upscale_tokens")
    k_in, h_in = b.input("keys", keys.shape), b.input("hyper", hyper.shape)
    b.output(dec.mask_product_tokens(b, c, h_in, dec.upscale_tokens(b, c, k_in)))
    graph = b.build()
    assert "conv_transpose2d" not in _ops(graph)
    # Only the final M-channel result is shuffled into image order.
    moves = [n for n in graph.nodes if n.op == "transpose" and n.inputs[0].kind != "weight"]
    assert [n.output.shape[1] for n in moves] == [m]
    (got,) = compile_graph(graph, profile, weights)(keys, hyper)
    x = t(keys).transpose(1, 2).reshape(1, d, g, g)
    up = official.output_upscaling(x)  # [1, C/8, 4g, 4g]
    ref = (t(hyper) @ up.reshape(1, d // 8, -1)).reshape(1, m, 4 * g, 4 * g).numpy()
    assert_close(got, ref, f"token-layout upscale + mask product [{profile}]")


@torch.no_grad()
def test_out_tokens_returns_the_leading_queries_of_the_full_transformer(official, weights):
    """The bucket graph asks only for the IoU and mask tokens after the final attention."""
    c = CONFIGS["vit_b"]
    d, g = c.prompt_embed_dim, c.image_embedding_size
    keep = 1 + c.num_mask_tokens
    emb, pe, points = random_inputs([(1, g * g, d), (1, g * g, d), (1, keep + 3, d)], seed=13)
    outs = []
    for out_tokens in (None, keep):
        b = GraphBuilder("twt")
        ins = [b.input(n, x.shape) for n, x in (("emb", emb), ("pe", pe), ("points", points))]
        q, k = dec.two_way_transformer(b, c, *ins, out_tokens=out_tokens)
        b.output(q, k)
        outs.append(compile_graph(b.build(), "numba", weights)(emb, pe, points))
    (q_all, k_all), (q_keep, k_keep) = outs
    assert q_keep.shape == (1, keep, d) and q_all.shape == (1, keep + 3, d)
    np.testing.assert_allclose(q_keep, q_all[:, :keep], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(k_keep, k_all)
    ref_q, _ = official.transformer(t(emb).transpose(1, 2).reshape(1, d, g, g),
                                    t(pe).transpose(1, 2).reshape(1, d, g, g), t(points))
    assert_close(q_keep, ref_q[:, :keep].numpy(), "two-way transformer, leading tokens")
