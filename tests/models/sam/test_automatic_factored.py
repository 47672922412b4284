"""The factored segment-everything decoder against the plain graphs and the official decoder.

`models.sam.automatic_factored` rewrites the decoder's image side as a shared
part plus low-rank terms and per-pixel norm scales (exact up to float32
reassociation). Checked here:

* on every backend, both halves (points -> IoU / factors, factors -> low-res
  logits, the last bucket padded) against the plain batched graphs of
  `automatic_graph`, on the small config;
* against the official ``MaskDecoder.predict_masks`` run in float64 on
  re-drawn weights: the small config on every backend, and the real ViT-B
  decoder width (256 wide, 8 heads, 64 x 64 image tokens) on the reference
  interpreter -- IoU predictions and low-res logits of the multimask tokens;
* structurally: no per-prompt tensor of the graph is as large as a dense
  image (``N x d`` per prompt), and the image-only work is a slow stage.

A wrong term anywhere (a dropped bias, a missing scale, a transposed factor)
moves IoU or logits by 1e-3 or more, far beyond the bounds used here.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from models.sam.automatic_factored import (FACTOR_INPUTS, build_factored_masks,
                                           build_factored_tokens, factored_supported)
from models.sam.automatic_graph import build_points_to_tokens, build_tokens_to_masks
from models.sam.config import get_config, small_config
from models.sam.weights import synthetic_weights
from rlx.backends.reference.interpreter import run_graph
from rlx.errors import InputError
from rlx.runtime.buckets import BatchBuckets
from rlx.runtime.staged import compile_staged
from tests.models.sam.decoder_fixtures import PROFILES, assert_close, small_official, small_weights
from tests.support import official_sam


def _inputs(c, batch: int, seed: int):
    rng = np.random.default_rng(seed)
    g, d = c.image_embedding_size, c.prompt_embed_dim
    emb = rng.normal(size=(1, d, g, g)).astype(np.float32)
    sparse = rng.normal(size=(batch, 2, d)).astype(np.float32)
    return emb, sparse


def _factored(c, w, profile, emb, sparse, max_batch=4):
    """(iou, low-res logits) through the factored buckets, in batches of ``max_batch``."""
    tokens = BatchBuckets(lambda n: build_factored_tokens(c, n), max_batch, profile, w,
                          batched=["sparse"], slow=["image_embedding"])
    masks = BatchBuckets(lambda n: build_factored_masks(c, n), max_batch, profile, w,
                         batched=["hyper_in", *FACTOR_INPUTS], slow=["image_embedding"])
    ious, lows = [], []
    for start in range(0, len(sparse), max_batch):
        part = sparse[start:start + max_batch]
        hyper, iou, *state = tokens.run(len(part), image_embedding=emb, sparse=part)
        (low,) = masks.run(len(part), image_embedding=emb, hyper_in=hyper,
                           **dict(zip(FACTOR_INPUTS, state)))
        ious.append(iou)
        lows.append(low)
    return np.concatenate(ious), np.concatenate(lows)


def _official(model, emb, sparse):
    """The official decoder in float64: (iou, low-res logits) of the multimask tokens."""
    c_emb = torch.from_numpy(emb).double()
    with torch.no_grad():
        pe = model.prompt_encoder.get_dense_pe().double()  # float32 grid, as the official code
        dec = copy.deepcopy(model.mask_decoder).double()
        g = emb.shape[-1]
        dense = model.prompt_encoder.no_mask_embed.weight.double().reshape(1, -1, 1, 1)
        dense = dense.expand(len(sparse), -1, g, g)
        masks, iou = dec.predict_masks(c_emb, pe, torch.from_numpy(sparse).double(), dense)
    return iou.numpy()[:, 1:], masks.numpy()[:, 1:]


@pytest.mark.parametrize("profile", PROFILES)
def test_factored_halves_match_plain_graphs(profile):
    c = small_config()
    w = small_weights()
    emb, sparse = _inputs(c, 5, seed=0)
    iou, low = _factored(c, w, profile, emb, sparse)
    keys, hyper, ref_iou = run_graph(build_points_to_tokens(c, 5), {"image_embedding": emb,
                                                                    "sparse": sparse}, w)
    (ref_low,) = run_graph(build_tokens_to_masks(c, 5), {"keys": keys, "hyper_in": hyper}, w)
    assert iou.shape == ref_iou.shape == (5, 3)
    assert low.shape == ref_low.shape == (5, 3, 4 * c.image_embedding_size,
                                          4 * c.image_embedding_size)
    assert_close(iou, ref_iou, f"{profile} iou vs plain", rel=2e-5)
    assert_close(low, ref_low, f"{profile} low-res logits vs plain", rel=2e-5)


@pytest.mark.parametrize("profile", PROFILES)
def test_factored_matches_official_decoder_small(profile):
    c = small_config()
    emb, sparse = _inputs(c, 5, seed=1)
    iou, low = _factored(c, small_weights(), profile, emb, sparse)
    ref_iou, ref_low = _official(small_official(), emb, sparse)
    assert_close(iou, ref_iou, f"{profile} iou vs official", rel=2e-5)
    assert_close(low, ref_low, f"{profile} low-res logits vs official", rel=2e-5)


def test_factored_matches_official_decoder_vit_b_width(vit_b_build):
    """The real decoder width, where the factors' rank (8 heads x 7 tokens) is below d = 256."""
    model = vit_b_build[0]
    c = get_config("vit_b")
    w = {k: v for k, v in official_sam.state_dict_numpy(model).items()
         if k.startswith(("mask_decoder.", "prompt_encoder."))}
    emb, sparse = _inputs(c, 2, seed=2)
    hyper, iou, *state = run_graph(build_factored_tokens(c, 2),
                                   {"image_embedding": emb, "sparse": sparse}, w)
    (low,) = run_graph(build_factored_masks(c, 2), {"image_embedding": emb, "hyper_in": hyper,
                                                     **dict(zip(FACTOR_INPUTS, state))}, w)
    ref_iou, ref_low = _official(model, emb, sparse)
    assert_close(iou, ref_iou, "vit_b iou vs official", rel=2e-5)
    assert_close(low, ref_low, "vit_b low-res logits vs official", rel=2e-5)


def test_no_per_prompt_tensor_is_a_dense_image():
    """Per prompt, nothing of the graph reaches N x d: the image side stays factored."""
    c = get_config("vit_b")
    n, d, batch = c.image_embedding_size ** 2, c.prompt_embed_dim, 4
    graph = build_factored_tokens(c, batch)
    largest = 0
    for node in graph.nodes:
        for v in node.outputs:
            shape = v.type.shape
            if shape and shape[0] == batch:
                largest = max(largest, int(np.prod(shape[1:])))
    assert 0 < largest < n * d // 2, largest
    staged = compile_staged(build_factored_tokens(small_config(), 2), "reference",
                            synthetic_weights(small_config(), 0), slow=["image_embedding"])
    assert staged.slow is not None
    for v in staged.slow.hir.outputs:
        assert v.type.shape[0] == 1, v


def test_only_the_two_block_decoder_is_factored():
    deep = small_config(decoder_depth=3)
    assert factored_supported(small_config()) and not factored_supported(deep)
    with pytest.raises(InputError, match="decoder_depth=2"):
        build_factored_tokens(deep, 2)
    with pytest.raises(InputError, match="batch"):
        build_factored_masks(small_config(), 0)
