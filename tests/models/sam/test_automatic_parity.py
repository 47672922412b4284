"""Segment-everything against Meta's ``SamAutomaticMaskGenerator`` on re-drawn weights.

Both generators run on the same small-config SAM (the official model with
every parameter re-drawn, saved as a Meta ``.pth`` and loaded by rlx's own
loader) and the same image. Random weights give masks of random quality,
so the filters are loosened until dozens of masks survive: the predicted-IoU
filter off, a smaller stability offset (the random decoder's logits are
small), a stability threshold that keeps about half of the masks, and the
NMS thresholds at 1.0 (random masks cover most of the image, so their boxes
are all nearly the image and any lower threshold leaves one mask; greedy
NMS itself is tested box for box in tests/utils/test_nms.py).

A mask's partner on the other side is a mask of the same click
(``point_coords``) with mask IoU >= 0.9; every mask of each side must have
one, with predicted IoU and stability score equal to 1e-3, the same box
(within a pixel) and area (within 0.1 %). Each output mode is compared with
the official generator's own output in that mode; RLEs must also decode
(pycocotools) to our binary masks.

``torchvision`` is not installable here (tests/support/torchvision_shim.py);
the official generator's two box ops come from `tests.support.torch_box_ops`.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from models.sam.automatic import SamAutomaticMaskGenerator
from models.sam.config import small_config
from models.sam.model import build_sam
from tests.support import official_sam, synthetic_images, torch_box_ops

import segment_anything.automatic_mask_generator as official_amg  # noqa: E402  (after the shim)

#: seed of the re-drawn small model: one whose random masks are varied enough
SEED = 11
IMAGE_HW = (300, 400)
LOOSE = dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.6,
             stability_score_offset=0.05, box_nms_thresh=1.0, crop_nms_thresh=1.0)
IOU_TOL = 1e-3
MIN_MASK_IOU = 0.9


@pytest.fixture(autouse=True)
def official_box_ops(monkeypatch):
    monkeypatch.setattr(official_amg, "batched_nms", torch_box_ops.batched_nms)
    monkeypatch.setattr(official_amg, "box_area", torch_box_ops.box_area)


@functools.lru_cache(maxsize=None)
def _official_model():
    return official_sam.build_official(small_config(), seed=SEED)


@functools.lru_cache(maxsize=None)
def _image():
    return synthetic_images.make_image(*IMAGE_HW, seed=4)


@functools.lru_cache(maxsize=None)
def _official_records(output_mode: str, crop_n_layers: int):
    with torch.no_grad():
        gen = official_amg.SamAutomaticMaskGenerator(
            _official_model(), output_mode=output_mode, crop_n_layers=crop_n_layers, **LOOSE)
        return gen.generate(_image())


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("amg") / "sam_small.pth")
    official_sam.save_official_checkpoint(_official_model(), path)
    return build_sam(small_config(), checkpoint=path, profile="default")


def _decode(seg) -> np.ndarray:
    if isinstance(seg, np.ndarray):
        return seg
    rle = seg
    if isinstance(rle["counts"], list):
        rle = mask_utils.frPyObjects(rle, *rle["size"])
    return mask_utils.decode(rle).astype(bool)


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def _check_partners(side, other, what: str) -> None:
    masks_other = [_decode(r["segmentation"]) for r in other]
    for r in side:
        m = _decode(r["segmentation"])
        same_click = [i for i, o in enumerate(other)
                      if np.allclose(o["point_coords"], r["point_coords"], atol=1e-6)
                      and o["crop_box"] == r["crop_box"]]
        assert same_click, f"{what}: no mask of click {r['point_coords']} on the other side"
        ious = [_mask_iou(m, masks_other[i]) for i in same_click]
        best = same_click[int(np.argmax(ious))]
        o = other[best]
        assert max(ious) >= MIN_MASK_IOU, f"{what}: best mask IoU {max(ious):.4f}"
        assert abs(r["predicted_iou"] - o["predicted_iou"]) <= IOU_TOL
        assert abs(r["stability_score"] - o["stability_score"]) <= IOU_TOL
        assert np.abs(np.subtract(r["bbox"], o["bbox"])).max() <= 1
        assert abs(r["area"] - o["area"]) <= max(2, 1e-3 * o["area"])


CASES = [("binary_mask", 0), ("uncompressed_rle", 0), ("coco_rle", 0), ("binary_mask", 1)]


@pytest.mark.parametrize("output_mode,crop_n_layers", CASES)
def test_matches_official_generator(ours, output_mode, crop_n_layers):
    ref = _official_records(output_mode, crop_n_layers)
    got = SamAutomaticMaskGenerator(ours, output_mode=output_mode, crop_n_layers=crop_n_layers,
                                    progress=False, **LOOSE).generate(_image())
    assert len(ref) >= 24, f"loosened thresholds should keep dozens of masks, got {len(ref)}"
    assert abs(len(got) - len(ref)) <= max(1, len(ref) // 50)
    assert set(got[0]) == set(ref[0])
    for r in got:
        seg = r["segmentation"]
        if output_mode == "binary_mask":
            assert seg.dtype == np.bool_ and seg.shape == IMAGE_HW
        elif output_mode == "coco_rle":
            assert isinstance(seg["counts"], str) and seg["size"] == list(IMAGE_HW)
        else:
            assert isinstance(seg["counts"], list) and seg["size"] == list(IMAGE_HW)
    _check_partners(got, ref, "rlx -> official")
    _check_partners(ref, got, "official -> rlx")
    # the records are sorted like the official ones: by predicted IoU within the crop NMS
    if crop_n_layers == 0:
        ious = [r["predicted_iou"] for r in got]
        assert ious == sorted(ious, reverse=True)
    else:
        crops = {tuple(r["crop_box"]) for r in got}
        assert len(crops) >= 1


def test_rle_modes_decode_to_the_binary_masks(ours):
    kw = dict(LOOSE, progress=False)
    binary = SamAutomaticMaskGenerator(ours, output_mode="binary_mask", **kw).generate(_image())
    for mode in ("uncompressed_rle", "coco_rle"):
        rles = SamAutomaticMaskGenerator(ours, output_mode=mode, **kw).generate(_image())
        assert len(rles) == len(binary)
        for a, b in zip(binary, rles):
            decoded = _decode(b["segmentation"])
            assert np.array_equal(decoded, a["segmentation"])
            assert b["area"] == a["area"] == int(decoded.sum())
    # uncompressed RLE counts: exactly the official encoder's on the same mask
    from segment_anything.utils.amg import coco_encode_rle, mask_to_rle_pytorch

    unc = SamAutomaticMaskGenerator(ours, output_mode="uncompressed_rle", **kw).generate(_image())
    coco = SamAutomaticMaskGenerator(ours, output_mode="coco_rle", **kw).generate(_image())
    for a, u, c in zip(binary[:8], unc[:8], coco[:8]):
        ref = mask_to_rle_pytorch(torch.from_numpy(a["segmentation"])[None])[0]
        assert u["segmentation"] == ref
        assert c["segmentation"] == coco_encode_rle(ref)
