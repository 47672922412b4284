"""SAM 2 prompt-side graphs against the official ``PromptEncoder`` / ``MaskDecoder`` modules.

The official modules come from the re-drawn official model
(`tests.support.official_sam2`); the image features fed to both sides are
random (the decoder must match for any features). Every bucket kind the
predictor uses is compared on all four mask tokens, the IoU (after the
sigmoid) and the object score.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.sam2.config import get_config
from models.sam2.decoder import IMAGE_INPUTS, build_prompt_to_masks, skip_tokens
from models.sam2.decoder_buckets import Sam2PromptDecoder
from models.sam2.predictor import stability_scores
from models.sam2.prompt import sparse_embeddings
from rlx.backends.reference import run_graph
from rlx.ir import GraphBuilder
from tests.support.official_sam2 import official_sam2, state_dict_numpy

NAME, SIZE = "sam2.1_hiera_t", 256


@pytest.fixture(scope="module")
def official():
    return official_sam2(NAME, seed=3, image_size=SIZE)


@pytest.fixture(scope="module")
def weights(official):
    return state_dict_numpy(official)


@pytest.fixture(scope="module")
def decoder(weights):
    return Sam2PromptDecoder(get_config(NAME, SIZE), weights, "default")


@pytest.fixture(scope="module")
def features():
    rng = np.random.default_rng(7)
    g = SIZE // 16
    return {"image_embed": rng.standard_normal((1, 256, g, g)).astype(np.float32),
            "high_res_0": rng.standard_normal((1, 32, 4 * g, 4 * g)).astype(np.float32),
            "high_res_1": rng.standard_normal((1, 64, 2 * g, 2 * g)).astype(np.float32)}


POINTS = np.array([[31.0, 47.5], [200.0, 121.0], [5.0, 250.0]], np.float32)
LABELS = np.array([1, 0, 1])
BOX = np.array([[12.0, 20.0], [180.0, 230.0]], np.float32)

PROMPTS = {
    "points": dict(coords=POINTS, labels=LABELS),
    "box": dict(box=BOX),
    "points+box": dict(coords=POINTS[:2], labels=LABELS[:2], box=BOX),
    "mask+points": dict(coords=POINTS[:1], labels=LABELS[:1], mask=True),
    "mask": dict(mask=True),
}


def _official(model, features, coords=None, labels=None, box=None, mask=None):
    """What ``SAM2ImagePredictor._predict`` feeds the decoder, and all its token outputs."""
    pts = None
    if coords is not None:
        pts = (torch.from_numpy(coords)[None], torch.from_numpy(labels)[None].int())
    if box is not None:
        bc, bl = torch.from_numpy(box)[None], torch.tensor([[2, 3]], dtype=torch.int)
        pts = (torch.cat([bc, pts[0]], 1), torch.cat([bl, pts[1]], 1)) if pts else (bc, bl)
    with torch.no_grad():
        sparse, dense = model.sam_prompt_encoder(
            points=pts, boxes=None, masks=None if mask is None else torch.from_numpy(mask))
        masks, iou, _, obj = model.sam_mask_decoder.predict_masks(
            torch.from_numpy(features["image_embed"]), model.sam_prompt_encoder.get_dense_pe(),
            sparse, dense, repeat_image=False,
            high_res_features=[torch.from_numpy(features["high_res_0"]),
                               torch.from_numpy(features["high_res_1"])])
    return sparse.numpy(), masks.numpy(), iou.numpy(), obj.numpy()


@pytest.mark.parametrize("kind", list(PROMPTS))
def test_bucket_matches_official_decoder(kind, official, weights, decoder, features):
    p = dict(PROMPTS[kind])
    mask = None
    if p.pop("mask", False):
        mask = np.random.default_rng(1).standard_normal((1, 1, SIZE // 4, SIZE // 4)) \
            .astype(np.float32) * 4
    ref_sparse, ref_masks, ref_iou, ref_obj = _official(official, features, mask=mask, **p)
    sparse = sparse_embeddings(weights, SIZE, p.get("coords"), p.get("labels"), p.get("box"))
    np.testing.assert_allclose(sparse, ref_sparse, atol=2e-6, rtol=0)
    masks, iou, obj = decoder.run(features, sparse, mask)
    assert masks.shape == ref_masks.shape == (1, 4, SIZE // 4, SIZE // 4)
    assert np.abs(masks - ref_masks).max() <= 1e-4
    assert np.abs(iou - ref_iou).max() <= 1e-5
    assert np.abs(obj - ref_obj).max() <= 1e-4
    assert ((masks > 0) == (ref_masks > 0)).mean() >= 0.9999


def test_reference_interpreter_matches_official(official, weights, features):
    """The HIR as built (no passes, numpy interpreter) already computes the official decoder."""
    p = PROMPTS["points+box"]
    _, ref_masks, ref_iou, ref_obj = _official(official, features, **p)
    sparse = sparse_embeddings(weights, SIZE, p["coords"], p["labels"], p["box"])
    graph = build_prompt_to_masks(get_config(NAME, SIZE), sparse.shape[1])
    names = {v.name for v in graph.inputs}
    feeds = {n: features[n] for n in IMAGE_INPUTS if n in names}
    feeds["sparse"] = sparse
    masks, iou, obj = run_graph(graph, feeds, weights)
    assert np.abs(masks - ref_masks).max() <= 1e-4
    assert np.abs(iou - ref_iou).max() <= 1e-5
    assert np.abs(obj - ref_obj).max() <= 1e-4


def test_graph_weights_are_official_names(weights):
    """Every weight the bucket graphs read is in the official state dict, shape for shape."""
    for num, has_mask in ((2, False), (3, True)):
        graph = build_prompt_to_masks(get_config(NAME, SIZE), num, has_mask)
        for name, value in graph.source_weights().items():
            assert name in weights, name
            assert tuple(value.shape) == weights[name].shape, name


@pytest.mark.parametrize("levels", [1, 2])
def test_skip_tokens_row_order(levels):
    """Row (h, w, kh1, kw1, ..) of the result holds pixel (2^L h + .., 2^L w + ..)."""
    g, ch = 3, 5
    side = g * 2 ** levels
    feat = np.random.default_rng(0).standard_normal((1, ch, side, side)).astype(np.float32)
    b = GraphBuilder("skips")
    x = b.input("x", feat.shape)
    b.output(skip_tokens(b, x, g, levels))
    (out,) = run_graph(b.build(), {"x": feat}, {})
    digits = np.indices((g, g) + (2, 2) * levels).reshape(2 + 2 * levels, -1).T
    for row, d in enumerate(digits):
        r, c = d[0], d[1]
        for lv in range(levels):
            r = 2 * r + d[2 + 2 * lv]
            c = 2 * c + d[3 + 2 * lv]
        np.testing.assert_array_equal(out[0, row], feat[0, :, r, c])


def test_stability_fallback_matches_official(official):
    """Single-mask output: token 0 unless unstable, then the best multimask token."""
    from models.sam2.predictor import SAM2ImagePredictor

    rng = np.random.default_rng(5)
    logits = rng.standard_normal((2, 4, 16, 16)).astype(np.float32) * 5
    logits[1, 0] = rng.uniform(-0.06, 0.06, (16, 16))  # object 1: token 0 unstable
    iou = rng.uniform(0, 1, (2, 4)).astype(np.float32)
    dec = official.sam_mask_decoder
    ref_l, ref_i = dec._dynamic_multimask_via_stability(torch.from_numpy(logits),
                                                        torch.from_numpy(iou))
    ref_scores = dec._get_stability_scores(torch.from_numpy(logits[:, :1]))
    np.testing.assert_allclose(stability_scores(logits[:, 0], 0.05), ref_scores.numpy()[:, 0])
    cfg = get_config(NAME)

    class _Model:  # just what _select reads
        config = cfg

    sel = SAM2ImagePredictor.__new__(SAM2ImagePredictor)
    sel.model = _Model()
    for obj in range(2):
        low, score = sel._select(logits[obj:obj + 1], iou[obj:obj + 1], False)
        np.testing.assert_array_equal(low, ref_l.numpy()[obj:obj + 1])
        np.testing.assert_array_equal(score, ref_i.numpy()[obj:obj + 1])
    assert not np.array_equal(ref_l.numpy()[1], logits[1, :1])  # the fallback was taken
