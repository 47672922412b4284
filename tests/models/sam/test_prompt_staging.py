"""Prompt buckets run staged: image-only work once per image, the rest per click.

Parity of the staged buckets with the official predictor is covered by
`test_predict_parity` (every prompt kind runs through `PromptDecoder`); here:
what lands in the per-image stage, that it runs once per image (and again for
a new one), and that the predictor's embedding is the read-only array that
makes the "same image" check free.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from models.sam.config import small_config
from models.sam.model import SamPredictor, build_sam
from models.sam.predict import predict, set_image_embedding
from models.sam.prompt_graph import IMAGE_INPUT, PromptDecoder, build_prompt_to_masks, decoder_for
from rlx.runtime.compiler import compile_graph
from tests.models.sam.decoder_fixtures import small_weights
from tests.support import synthetic_images


@pytest.mark.parametrize("has_mask", [False, True], ids=["no_mask", "mask"])
def test_per_image_stage_holds_the_image_only_work(has_mask):
    c = small_config()
    staged = PromptDecoder(c, small_weights(), "numba").bucket(2, has_mask)
    fast = staged.split.fast_graph
    # The fast stage never sees the embedding itself, only what was derived from it.
    assert IMAGE_INPUT not in [v.name for v in fast.inputs]
    assert [v.name for v in staged.slow.hir.inputs] == [IMAGE_INPUT]
    ops = staged.slow.hir.op_counts()
    if has_mask:
        # the dense embedding comes from the mask, which varies per click: only the
        # embedding in token layout is kept
        assert set(ops) <= {"reshape", "transpose"} and len(staged.split.boundary) == 1
    else:
        # layer 0's image-side projections (token->image keys and values, image->token
        # queries: the small config's attention is the standard form) read only the image
        assert ops["linear"] == 3
    # same numbers as the graph compiled in one piece
    rng = np.random.default_rng(3)
    graph = build_prompt_to_masks(c, 2, has_mask)
    inputs = [rng.standard_normal(v.shape).astype(np.float32) for v in graph.inputs]
    whole = compile_graph(graph, "numba", small_weights())(*inputs)
    for got, want in zip(staged(*inputs), whole):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_clicks_on_one_image_run_the_image_stage_once():
    c = small_config()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sam = build_sam(c, profile="numba")
    predictor = SamPredictor(sam)
    image = synthetic_images.make_image(300, 400, seed=2)
    predictor.set_image(image)
    emb = predictor.get_image_embedding()
    assert not emb.flags.writeable
    with pytest.raises(ValueError):
        emb[0, 0, 0, 0] = 1.0
    clicks = [([[50.0, 60.0]], [1]), ([[200.0, 100.0]], [0]), ([[10.0, 290.0]], [1])]
    first = [predict(predictor, point_coords=np.array(p), point_labels=np.array(lbl))
             for p, lbl in clicks]
    bucket = decoder_for(sam).buckets[(2, False)]
    assert bucket.slow_runs == 1
    # A box is the same bucket: still the kept image stage.
    predict(predictor, box=np.array([10.0, 20.0, 200.0, 250.0]))
    assert bucket.slow_runs == 1
    # A new image: recomputed, and the first image's masks come back when it returns.
    predictor.set_image(synthetic_images.make_image(300, 400, seed=3))
    other = predict(predictor, point_coords=np.array(clicks[0][0]),
                    point_labels=np.array(clicks[0][1]))
    assert bucket.slow_runs == 2
    assert not np.array_equal(other[2], first[0][2])
    set_image_embedding(predictor, emb, image.shape[:2])
    again = predict(predictor, point_coords=np.array(clicks[0][0]),
                    point_labels=np.array(clicks[0][1]))
    assert bucket.slow_runs == 3
    for a, b in zip(again, first[0]):
        np.testing.assert_array_equal(a, b)


def test_set_image_embedding_keeps_its_own_read_only_copy():
    c = small_config()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sam = build_sam(c, profile="reference")
    predictor = SamPredictor(sam)
    d, g = c.prompt_embed_dim, c.image_embedding_size
    mine = np.random.default_rng(0).standard_normal((1, d, g, g)).astype(np.float32)
    set_image_embedding(predictor, mine, (300, 400))
    got = predictor.get_image_embedding()
    assert got is not mine and mine.flags.writeable and not got.flags.writeable
    np.testing.assert_array_equal(got, mine)


def test_vit_b_image_stage_keeps_the_first_layers_image_side():
    """At ViT-B width the image stage keeps the first layer's image-side projections
    (token->image keys and values, image->token queries, split into heads) and the
    embedding in token layout (the residual); later layers use the few-token forms."""
    from models.sam.config import CONFIGS
    from rlx.passes.split_stages import split_stages

    c = CONFIGS["vit_b"]
    split = split_stages(build_prompt_to_masks(c, 2, False), [IMAGE_INPUT])
    shapes = sorted(v.shape for v in split.slow_graph.outputs)
    assert shapes == [(1, 8, 16, 4096)] * 2 + [(1, 8, 4096, 16)] + [(1, 4096, 256)]
    assert split.slow_graph.op_counts()["linear"] == 3
    # with a mask prompt the image side varies per click: only the token layout is kept
    split = split_stages(build_prompt_to_masks(c, 2, True), [IMAGE_INPUT])
    assert [v.shape for v in split.slow_graph.outputs] == [(1, 4096, 256)]
