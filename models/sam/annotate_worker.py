"""The per-image work of ``rlx annotate``: one SAM per worker, masks -> COCO annotations.

`AnnotatorSpec` is everything a worker needs, small and picklable (it
travels to spawned processes and Ray actors); `SamAnnotator(spec, threads)`
builds the model once and is then called per image (`rlx.datasets` calls
``functools.partial(SamAnnotator, spec)`` with the worker's thread count).

Two modes:

* ``prompts``: the image's prompts (the item payload), each run through
  `SamPredictor.predict` with logits, so the stability score can be
  computed like Meta's automatic mask generator does (IoU of the mask
  thresholded at ``t + 1`` and at ``t - 1``);
* ``everything``: `models.sam.automatic.SamAutomaticMaskGenerator` with
  ``output_mode="coco_rle"``.

Masks become COCO RLE with pycocotools (the format's reference
implementation). ``bbox`` and ``area`` are taken from the RLE
(``toBbox``: ``w = x1 - x0 + 1``), the COCO convention, in both modes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from rlx.errors import InputError

__all__ = ["AnnotatorSpec", "SamAnnotator", "mask_to_rle", "rle_annotation",
           "stability_score"]


@dataclass(frozen=True)
class AnnotatorSpec:
    model: str                                  # config name (vit_b, ..., or "small" in tests)
    checkpoint: Optional[str]                   # None: synthetic weights (seed)
    profile: Any                                # a resolved CompileProfile
    mode: str                                   # "prompts" | "everything"
    seed: int = 0
    mask_threshold: Optional[float] = None
    generator_params: Tuple[Tuple[str, Any], ...] = field(default=())


def mask_to_rle(mask: np.ndarray) -> Dict[str, Any]:
    """An HxW bool mask -> COCO RLE ``{"size": [h, w], "counts": str}``."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def rle_annotation(rle: Dict[str, Any], **fields) -> Dict[str, Any]:
    """A COCO annotation body: segmentation, area and bbox from the RLE, then ``fields``."""
    from pycocotools import mask as mask_utils

    coded = {"size": list(rle["size"]), "counts": rle["counts"]}
    enc = dict(coded, counts=coded["counts"].encode("ascii")
               if isinstance(coded["counts"], str) else coded["counts"])
    area = int(mask_utils.area(enc))
    bbox = [float(v) for v in mask_utils.toBbox(enc)]
    return {"segmentation": coded, "area": area, "bbox": bbox, **fields}


def stability_score(logits: np.ndarray, threshold: float, offset: float = 1.0) -> float:
    """IoU of the masks ``logits > t + offset`` and ``logits > t - offset`` (0 if both empty)."""
    inter = int(np.count_nonzero(logits > threshold + offset))
    union = int(np.count_nonzero(logits > threshold - offset))
    return inter / union if union else 0.0


class SamAnnotator:
    """Built once per worker (loads and compiles SAM); called once per image."""

    def __init__(self, spec: AnnotatorSpec, threads: int):
        from .config import get_config
        from .model import SamPredictor, build_sam
        from .weights import SyntheticWeightsWarning

        self.spec = spec
        config = get_config(spec.model)
        profile = spec.profile.replace(threads=threads)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntheticWeightsWarning)  # the command says so once
            self.sam = build_sam(config, checkpoint=spec.checkpoint, profile=profile,
                                 seed=spec.seed)
        self.threshold = (float(config.mask_threshold) if spec.mask_threshold is None
                          else spec.mask_threshold)
        self.predictor = SamPredictor(self.sam)
        self.generator = None
        if spec.mode == "everything":
            from .annotate_everything import make_generator

            self.generator = make_generator(self.sam, dict(spec.generator_params))

    def __call__(self, item) -> Dict[str, Any]:
        from .image import load_image

        image = load_image(item.path)
        h, w = image.shape[:2]
        if self.spec.mode == "everything":
            annotations = self._everything(image)
        else:
            annotations = self._prompts(image, (item.payload or {}).get("prompts", []))
        return {"height": int(h), "width": int(w), "annotations": annotations}

    def _prompts(self, image: np.ndarray, prompts: List[Dict[str, Any]]) -> List[Dict]:
        if not prompts:
            return []
        self.predictor.set_image(image)
        out = []
        for i, p in enumerate(prompts):
            coords = np.array(p["points"], dtype=np.float64) if "points" in p else None
            labels = np.array(p["labels"], dtype=np.int64) if "points" in p else None
            box = np.array(p["box"], dtype=np.float64) if "box" in p else None
            single_click = coords is not None and len(coords) == 1 and box is None
            try:
                logits, iou, _ = self.predictor.predict(
                    coords, labels, box, multimask_output=single_click, return_logits=True)
            except InputError as e:
                raise InputError(f"prompt {i}: {e}") from None
            best = int(np.argmax(iou))
            mask = logits[best] > self.threshold
            score = float(iou[best])
            out.append(rle_annotation(
                mask_to_rle(mask), score=score, predicted_iou=score,
                stability_score=stability_score(logits[best], self.threshold),
                prompt_index=i, prompt=p))
        return out

    def _everything(self, image: np.ndarray) -> List[Dict]:
        out = []
        for r in self.generator.generate(image):
            seg = r["segmentation"]
            rle = seg if isinstance(seg, dict) else mask_to_rle(np.asarray(seg, dtype=bool))
            counts = rle["counts"]
            rle = {"size": list(rle["size"]),
                   "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}
            extra = {k: _plain(r[k]) for k in ("point_coords", "crop_box") if k in r}
            score = float(r["predicted_iou"])
            out.append(rle_annotation(rle, score=score, predicted_iou=score,
                                      stability_score=float(r["stability_score"]), **extra))
        return out


def _plain(v):
    """numpy values -> JSON-able Python values."""
    return np.asarray(v).tolist() if isinstance(v, (np.ndarray, np.generic)) else v
