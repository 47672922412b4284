"""Per-image instance annotations -> one COCO instance-segmentation dict.

Each successful item's result is ``{"height", "width", "annotations": [...]}``
with annotations carrying at least ``segmentation`` (RLE ``{"size",
"counts"}``), ``area`` and ``bbox``; this module numbers images and
annotations (1-based, in item order, so the same inputs give the same ids),
adds ``image_id`` / ``category_id`` / ``iscrowd`` and lists failed items
under ``errors`` (an extra top-level key pycocotools ignores).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Sequence

from .outcome import Item

__all__ = ["build_coco"]


def build_coco(items: Sequence[Item], outcomes: Sequence[Mapping[str, Any]],
               category: str = "object", info: Mapping[str, Any] | None = None) -> Dict:
    images, annotations, errors = [], [], []
    for item, outcome in zip(items, outcomes):
        if not outcome.get("ok"):
            errors.append({"file_name": item.key, "path": item.path,
                           "error": outcome.get("error", "unknown error")})
            continue
        result = outcome["result"]
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": item.key,
                       "height": int(result["height"]), "width": int(result["width"])})
        for ann in result["annotations"]:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": 1, "iscrowd": 0, **ann})
    return {
        "info": dict(info or {}),
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": category, "supercategory": category}],
        "errors": errors,
    }
