"""The pieces of segment-everything, each against its reference.

* the batched points -> masks graph against the one-click bucket graph
  (`PromptDecoder`, itself parity-tested against the official decoder), on
  every backend, with the last bucket padded;
* the mask statistics kernel against counting on `postprocess_masks`;
* the host helpers against Meta's ``segment_anything.utils.amg``;
* small-region cleanup against a direct definition (scipy labelling);
* parameter checks (before any work), `generate_from_predictor`, the
  progress line.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch

from models.sam import automatic
from models.sam.automatic import SamAutomaticMaskGenerator
from models.sam.automatic_graph import (build_points_to_masks, build_points_to_tokens,
                                        build_tokens_to_masks)
from models.sam.automatic_kernels import mask_stats
from models.sam import automatic_utils as U
from models.sam.config import small_config
from models.sam.model import SamPredictor, build_sam
from models.sam.postprocess import postprocess_masks
from models.sam.prompt_graph import PromptDecoder
from rlx.errors import InputError
from rlx.runtime.buckets import BatchBuckets, bucket_sizes
from rlx.runtime.staged import compile_staged
from tests.models.sam.decoder_fixtures import PROFILES, small_weights
from tests.support import synthetic_images

from segment_anything.utils import amg as official_amg  # noqa: E402  (after the shim)


@pytest.fixture(scope="module")
def sam():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_sam(small_config(), checkpoint=None, seed=3)


# ---- the batched graph ----------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_batched_graphs_match_one_click_graph(profile):
    """points -> tokens -> masks (the generator's two halves, last bucket padded) and the
    one-graph form, against the one-click bucket graph of the predictor."""
    c = small_config()
    w = small_weights()
    rng = np.random.default_rng(0)
    g = c.image_embedding_size
    emb = rng.normal(size=(1, c.prompt_embed_dim, g, g)).astype(np.float32)
    sparse = rng.normal(size=(5, 2, c.prompt_embed_dim)).astype(np.float32)
    tokens = BatchBuckets(lambda n: build_points_to_tokens(c, n), 4, profile, w,
                          batched=["sparse"], slow=["image_embedding"])
    to_masks = BatchBuckets(lambda n: build_tokens_to_masks(c, n), 4, profile, w,
                            batched=["keys", "hyper_in"])
    whole = BatchBuckets(lambda n: build_points_to_masks(c, n), 4, profile, w,
                         batched=["sparse"], slow=["image_embedding"])
    one = PromptDecoder(c, w, profile)
    masks, iou, masks_whole = [], [], []
    for part in (sparse[:4], sparse[4:]):
        keys, hyper, s = tokens.run(len(part), image_embedding=emb, sparse=part)
        (m,) = to_masks.run(len(part), keys=keys, hyper_in=hyper)
        masks.append(m)
        iou.append(s)
        masks_whole.append(whole.run(len(part), image_embedding=emb, sparse=part)[0])
    masks, iou, masks_whole = map(np.concatenate, (masks, iou, masks_whole))
    assert masks.shape == (5, 3, 4 * g, 4 * g) and iou.shape == (5, 3)
    assert sorted(tokens.compiled) == [1, 4]
    for i in range(5):
        ref_m, ref_i = one.run(emb, sparse[i:i + 1])
        np.testing.assert_allclose(masks[i], ref_m[0, 1:], atol=1e-4, rtol=0)
        np.testing.assert_allclose(masks_whole[i], ref_m[0, 1:], atol=1e-4, rtol=0)
        np.testing.assert_allclose(iou[i], ref_i[0, 1:], atol=1e-5, rtol=0)


def test_bucket_padding_and_sizes():
    assert bucket_sizes(16) == [1, 2, 4, 8, 16]
    assert bucket_sizes(12) == [1, 2, 4, 8, 12]
    c = small_config()
    b = BatchBuckets(lambda n: build_points_to_masks(c, n), 8, "reference", small_weights(),
                     batched=["sparse"], slow=["image_embedding"])
    assert b.size_for(3) == 4 and b.size_for(8) == 8
    with pytest.raises(InputError):
        b.size_for(9)
    g = c.image_embedding_size
    emb = np.zeros((1, c.prompt_embed_dim, g, g), np.float32)
    with pytest.raises(InputError, match="3 rows"):
        b.run(3, image_embedding=emb, sparse=np.zeros((2, 2, c.prompt_embed_dim), np.float32))
    outs = b.run(3, image_embedding=emb, sparse=np.ones((3, 2, c.prompt_embed_dim), np.float32))
    assert outs[0].shape[0] == 3 and list(b.compiled) == [4]


def test_graph_keeps_the_image_side_batch_free():
    """The image embedding enters once; only the per-prompt update carries the batch."""
    c = small_config()
    graph = build_points_to_masks(c, 8)
    emb = next(v for v in graph.inputs if v.name == "image_embedding")
    assert emb.type.shape[0] == 1
    staged = compile_staged(graph, "reference", small_weights(), slow=["image_embedding"])
    assert staged.slow is not None  # the image-only work is its own stage, kept per image
    for v in staged.slow.hir.outputs:
        assert v.type.shape[0] == 1, v


# ---- statistics of upscaled masks -------------------------------------------------------


@pytest.mark.parametrize("orig,inp", [((300, 400), (192, 256)), ((450, 210), (256, 119))])
def test_mask_stats_count_the_upscaled_logits(orig, inp):
    rng = np.random.default_rng(1)
    low = rng.normal(scale=0.6, size=(6, 64, 64)).astype(np.float32)
    low[2] -= 3.0  # an empty mask
    low[3] += 5.0  # a full one
    counts, boxes = mask_stats(low, inp, orig, 256, 0.0, 0.5)
    up = postprocess_masks(low[:, None], inp, orig, 256)[:, 0]
    for i in range(6):
        m = up[i] > 0
        assert counts[i].tolist() == [int(m.sum()), int((up[i] > 0.5).sum()),
                                      int((up[i] > -0.5).sum())]
        ref = official_amg.batched_mask_to_box(torch.from_numpy(m)[None])[0].tolist()
        assert boxes[i].tolist() == ref


# ---- host helpers against segment_anything.utils.amg ------------------------------------


def test_grids_and_crops_match_official():
    for n, layers, f in ((32, 0, 1), (16, 2, 2), (5, 1, 1)):
        ours = U.build_all_layer_point_grids(n, layers, f)
        ref = official_amg.build_all_layer_point_grids(n, layers, f)
        assert len(ours) == len(ref)
        for a, b in zip(ours, ref):
            np.testing.assert_array_equal(a, b)
    for size, layers, ratio in (((1500, 2000), 1, 512 / 1500), ((700, 300), 2, 0.2)):
        assert U.generate_crop_boxes(size, layers, ratio) == \
            official_amg.generate_crop_boxes(size, layers, ratio)


def test_crop_edge_and_rle_match_official():
    rng = np.random.default_rng(2)
    boxes = rng.integers(0, 300, size=(50, 4))
    boxes[:, 2:] += boxes[:, :2]
    crop, orig = [100, 50, 420, 380], [0, 0, 420, 600]
    ref = official_amg.is_box_near_crop_edge(torch.from_numpy(boxes), crop, orig).numpy()
    np.testing.assert_array_equal(U.box_near_crop_edge(boxes, crop, orig), ref)
    for m in (rng.random((37, 23)) > 0.5, np.zeros((5, 7), bool), np.ones((5, 7), bool)):
        ref_rle = official_amg.mask_to_rle_pytorch(torch.from_numpy(m)[None])[0]
        assert U.mask_to_rle(m) == ref_rle
        assert U.rle_area(U.mask_to_rle(m)) == int(m.sum())
        np.testing.assert_array_equal(U.rle_to_mask(ref_rle), m)
        assert U.coco_rle(m) == official_amg.coco_encode_rle(ref_rle)


def _components(mask):
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    return [int((labels == i).sum()) for i in range(1, n + 1)]


def test_remove_small_regions():
    m = np.zeros((60, 60), bool)
    m[5:40, 5:40] = True          # big island
    m[10:13, 10:13] = False       # small hole (9 px)
    m[20:35, 20:35] = False       # big hole (225 px)
    m[50:53, 50:52] = True        # small island (6 px)
    m[45, 5] = True               # 1-px island, diagonal neighbours only with nothing
    out, changed = U.remove_small_regions(m, 20, "holes")
    assert changed and out[10:13, 10:13].all() and not out[20:35, 20:35].any()
    out2, changed2 = U.remove_small_regions(out, 20, "islands")
    assert changed2 and not out2[50:53, 50:52].any() and not out2[45, 5]
    assert _components(out2) == [35 * 35 - 225]
    # nothing small: unchanged, same object
    same, changed3 = U.remove_small_regions(out2, 20, "islands")
    assert not changed3 and same is out2
    # every island small: the largest stays
    tiny = np.zeros((20, 20), bool)
    tiny[1:3, 1:3] = True
    tiny[10:13, 10:13] = True
    kept, _ = U.remove_small_regions(tiny, 100, "islands")
    assert kept.sum() == 9 and kept[10:13, 10:13].all()


def test_min_mask_region_area_cleans_every_mask(sam):
    image = synthetic_images.make_image(120, 160, seed=2)
    kw = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0,
              stability_score_offset=0.05, box_nms_thresh=1.0, progress=False)
    plain = SamAutomaticMaskGenerator(sam, **kw).generate(image)
    cleaned = SamAutomaticMaskGenerator(sam, min_mask_region_area=40, **kw).generate(image)
    assert plain and cleaned
    for r in cleaned:
        m = r["segmentation"]
        islands = _components(m)
        assert min(islands) >= 40 or len(islands) == 1
        holes = _components(~m)
        assert all(s >= 40 for s in holes)
        x, y, w, h = r["bbox"]
        assert U.mask_to_box(m) == [x, y, x + w, y + h]
        assert r["area"] == int(m.sum())


# ---- parameters, embedding reuse, progress -----------------------------------------------


BAD = [
    (dict(points_per_side=None), "exactly one of points_per_side and point_grids"),
    (dict(point_grids=[np.zeros((4, 2))]), "exactly one"),
    (dict(points_per_side=0), "points_per_side"),
    (dict(points_per_side=None, point_grids=[np.full((3, 2), 1.5)]), r"\[0, 1\]"),
    (dict(points_per_side=None, point_grids=[np.zeros((3, 2))], crop_n_layers=1),
     "one grid per crop layer"),
    (dict(pred_iou_thresh=1.5), "pred_iou_thresh"),
    (dict(stability_score_thresh=-0.1), "stability_score_thresh"),
    (dict(box_nms_thresh=float("nan")), "box_nms_thresh"),
    (dict(crop_overlap_ratio=1.0), "crop_overlap_ratio"),
    (dict(crop_n_layers=-1), "crop_n_layers"),
    (dict(points_per_batch=0), "points_per_batch"),
    (dict(crop_n_points_downscale_factor=2, points_per_side=2, crop_n_layers=2),
     "leaves no points"),
    (dict(output_mode="polygons"), "unknown output_mode"),
    (dict(min_mask_region_area=-3), "min_mask_region_area"),
]


@pytest.mark.parametrize("kwargs,match", BAD)
def test_bad_parameters_raise_before_any_work(sam, kwargs, match, monkeypatch):
    monkeypatch.setattr(automatic, "points_to_masks_for", lambda *a: pytest.fail("work done"))
    with pytest.raises(InputError, match=match):
        SamAutomaticMaskGenerator(sam, **kwargs)


def test_missing_scipy_names_the_extra(sam, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_scipy(name, *a, **k):
        if name == "scipy" or name.startswith("scipy."):
            raise ImportError("no scipy")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    with pytest.raises(InputError, match=r"pip install 'rlx\[everything\]'"):
        SamAutomaticMaskGenerator(sam, min_mask_region_area=10)


def test_generate_from_predictor_reuses_the_embedding(sam, monkeypatch):
    image = synthetic_images.make_image(120, 160, seed=2)
    kw = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0,
              stability_score_offset=0.05, box_nms_thresh=1.0, progress=False,
              output_mode="coco_rle")
    ref = SamAutomaticMaskGenerator(sam, **kw).generate(image)
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    gen = SamAutomaticMaskGenerator(sam, **kw)
    monkeypatch.setattr(gen.predictor, "set_image", lambda *a, **k: pytest.fail("encoded"))
    assert gen.generate_from_predictor(predictor) == ref
    assert gen.generate(image, predictor=predictor) == ref
    assert "encoder" not in gen.timings
    with pytest.raises(InputError, match="image is"):
        gen.generate(image[:60], predictor=predictor)
    crops = SamAutomaticMaskGenerator(sam, crop_n_layers=1, **kw)
    with pytest.raises(InputError, match="image="):
        crops.generate_from_predictor(predictor)


def test_progress_only_on_a_terminal(sam, monkeypatch):
    image = synthetic_images.make_image(64, 64, seed=1)

    class Tty(io.StringIO):
        def isatty(self):
            return True

    for stream, expect in ((io.StringIO(), False), (Tty(), True)):
        monkeypatch.setattr("sys.stderr", stream)
        SamAutomaticMaskGenerator(sam, points_per_side=2).generate(image)
        text = stream.getvalue()
        assert ("1/1 batches" in text) is expect, text


def test_warmup_grid_compiles_only_the_full_batch_buckets():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fresh = build_sam(small_config(), checkpoint=None, seed=3)
    grid = automatic.warmup_grid()
    dec = automatic.points_to_masks_for(fresh)
    assert grid.shape == (automatic.MAX_BATCH * dec.replicas, 2)
    assert grid.min() >= 0.0 and grid.max() <= 1.0
    SamAutomaticMaskGenerator(fresh, points_per_side=None, point_grids=[grid],
                              pred_iou_thresh=0.0, progress=False).generate(
                                  synthetic_images.make_image(60, 80, seed=1))
    assert sorted(dec.tokens.compiled) == [automatic.MAX_BATCH]
    assert sorted(dec.masks.compiled) == [automatic.MASKS_MAX_BATCH]
