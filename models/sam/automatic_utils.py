"""Host-side pieces of segment-everything: point grids, crops, RLE, small-region cleanup.

Each follows the definition of Meta's ``segment_anything.utils.amg`` so the
generator's output matches the official one record for record:

* a grid of ``n x n`` points at the cell centres of ``[0, 1]^2`` (x varies
  fastest); crop layer ``i`` uses ``int(n / factor**i)`` points per side;
* crop boxes: the whole image, then for layer ``i`` a ``2^i x 2^i`` grid of
  overlapping crops (overlap ``ratio * short side * 2 / 2^i`` pixels), XYXY;
* uncompressed RLE: run lengths of the column-major (Fortran) flattening,
  starting with a run of zeros (``0`` if the first pixel is set);
  COCO RLE is pycocotools' compressed form of the same runs;
* small-region cleanup: holes (background components) and islands (mask
  components) below an area are filled / removed, 8-connected, with
  ``scipy.ndimage`` labelling; if every island is small, the largest stays.
"""

from __future__ import annotations

import math
from itertools import product
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from rlx.errors import InputError

__all__ = ["EVERYTHING_EXTRA", "build_point_grid", "build_all_layer_point_grids",
           "generate_crop_boxes", "box_near_crop_edge", "mask_to_box", "mask_to_rle",
           "coco_rle", "rle_area", "rle_to_mask", "remove_small_regions", "require_scipy"]

#: the install extra that brings scipy (connected components for min_mask_region_area)
EVERYTHING_EXTRA = "pip install 'rlx[everything]'"


def build_point_grid(n_per_side: int) -> np.ndarray:
    """``[n*n, 2]`` float64 (x, y) points at the cell centres of the unit square."""
    offset = 1.0 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int
                                ) -> List[np.ndarray]:
    """One grid per crop layer: ``int(n_per_side / scale_per_layer**i)`` points per side."""
    return [build_point_grid(int(n_per_side / (scale_per_layer ** i)))
            for i in range(n_layers + 1)]


def generate_crop_boxes(im_size: Tuple[int, int], n_layers: int, overlap_ratio: float
                        ) -> Tuple[List[List[int]], List[int]]:
    """(crop boxes XYXY, layer of each): the image, then ``(2^i)^2`` crops per layer i."""
    im_h, im_w = im_size
    short_side = min(im_h, im_w)
    boxes, layers = [[0, 0, im_w, im_h]], [0]

    def crop_len(orig_len, n_crops, overlap):
        return int(math.ceil((overlap * (n_crops - 1) + orig_len) / n_crops))

    for i_layer in range(n_layers):
        n_side = 2 ** (i_layer + 1)
        overlap = int(overlap_ratio * short_side * (2 / n_side))
        crop_w = crop_len(im_w, n_side, overlap)
        crop_h = crop_len(im_h, n_side, overlap)
        xs = [int((crop_w - overlap) * i) for i in range(n_side)]
        ys = [int((crop_h - overlap) * i) for i in range(n_side)]
        for x0, y0 in product(xs, ys):
            boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layers.append(i_layer + 1)
    return boxes, layers


def box_near_crop_edge(boxes: np.ndarray, crop_box: Sequence[int], orig_box: Sequence[int],
                       atol: float = 20.0) -> np.ndarray:
    """Boxes (crop frame, XYXY) within ``atol`` of a crop edge that is not an image edge."""
    x0, y0 = crop_box[0], crop_box[1]
    b = (np.asarray(boxes, np.float64) + np.array([x0, y0, x0, y0], np.float64)).astype(np.float32)
    crop = np.asarray(crop_box, np.float32)[None]
    orig = np.asarray(orig_box, np.float32)[None]
    near_crop = np.abs(b - crop) <= atol
    near_image = np.abs(b - orig) <= atol
    return np.any(near_crop & ~near_image, axis=1)


def mask_to_box(mask: np.ndarray) -> List[int]:
    """XYXY box with inclusive ends around a bool mask; ``[0, 0, 0, 0]`` when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return [0, 0, 0, 0]
    cols = np.flatnonzero(mask.any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])]


def mask_to_rle(mask: np.ndarray) -> Dict[str, Any]:
    """Uncompressed RLE ``{"size": [h, w], "counts": [...]}`` of a bool mask."""
    h, w = mask.shape
    flat = np.ascontiguousarray(mask.T).reshape(-1)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate([[0], change, [h * w]])
    counts = np.diff(edges).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"size": [h, w], "counts": counts}


def coco_rle(mask: np.ndarray) -> Dict[str, Any]:
    """COCO (compressed) RLE of a bool mask, counts as str: pycocotools' encoding."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask[:, :, None], dtype=np.uint8))[0]
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("utf-8")}


def rle_area(rle: Dict[str, Any]) -> int:
    """Pixels set in an uncompressed RLE."""
    return int(sum(rle["counts"][1::2]))


def rle_to_mask(rle: Dict[str, Any]) -> np.ndarray:
    """Bool ``[h, w]`` mask of an uncompressed RLE."""
    h, w = rle["size"]
    flat = np.zeros(h * w, bool)
    pos, value = 0, False
    for count in rle["counts"]:
        if value:
            flat[pos:pos + count] = True
        pos += count
        value = not value
    return flat.reshape(w, h).T


def require_scipy():
    """``scipy.ndimage``, or one clear error naming the install extra."""
    try:
        from scipy import ndimage
    except ImportError:
        raise InputError("min_mask_region_area > 0 needs scipy (connected components); "
                         f"install it with {EVERYTHING_EXTRA}") from None
    return ndimage


_EIGHT = np.ones((3, 3), bool)


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str
                         ) -> Tuple[np.ndarray, bool]:
    """Fill holes (``mode="holes"``) or drop islands (``"islands"``) smaller than the area.

    Returns (mask, changed). 8-connected components (`scipy.ndimage.label`).
    """
    ndimage = require_scipy()
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    holes = mode == "holes"
    working = ~mask if holes else mask
    labels, n = ndimage.label(working, structure=_EIGHT)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    small = np.flatnonzero(sizes < area_thresh) + 1
    if small.size == 0:
        return mask, False
    if holes:
        fill = np.zeros(n + 1, bool)
        fill[0] = True  # label 0 of the background's components: the mask itself
        fill[small] = True
    else:
        fill = np.ones(n + 1, bool)
        fill[0] = False
        fill[small] = False
        if not fill.any():  # every island is small: keep the largest
            fill[int(np.argmax(sizes)) + 1] = True
    return fill[labels], True
