"""Host side of SAM 2's prompt encoder: prompts -> sparse embeddings, in numpy float32.

SAM 2 encodes points exactly like SAM v1 (`models.sam.prompt_encoding`: the
random-Fourier encoding of the pixel centre plus a learned per-label row),
so this module reuses it; what differs is how the image predictor assembles
a prompt (``SAM2ImagePredictor._predict``):

* a box is passed to the prompt encoder as two *points* with labels 2 and 3
  (its corners), placed **before** the clicks, and the prompt encoder is
  called with ``boxes=None`` -- so the (0, 0) / label -1 padding point is
  appended to every point prompt, with or without a box. A box alone is
  three tokens (two corners and the padding point), one click two;
* coordinates are mapped to the model frame by a square resize: x / W * S,
  y / H * S (``SAM2Transforms.transform_coords``), or just * S when the caller
  gives them normalized to [0, 1] (``normalize_coords=False``);
* the weights are named ``sam_prompt_encoder.*`` (v1: ``prompt_encoder.*``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional, Tuple

import numpy as np

from models.sam import prompt_encoding as v1

from .decoder import PE

__all__ = ["Sam2PromptWeights", "transform_coords", "sparse_embeddings"]


class Sam2PromptWeights(Mapping):
    """SAM 2's weights seen under SAM v1's prompt-encoder names (for the reused v1 code)."""

    def __init__(self, weights: Mapping):
        self._weights = weights

    def _key(self, key: str) -> str:
        if key.startswith("prompt_encoder."):
            return f"{PE}." + key[len("prompt_encoder."):]
        return key

    def __getitem__(self, key):
        return self._weights[self._key(key)]

    def __contains__(self, key):
        return self._key(key) in self._weights

    def __iter__(self):
        prefix = f"{PE}."
        return ("prompt_encoder." + k[len(prefix):] for k in self._weights if k.startswith(prefix))

    def __len__(self):
        return sum(1 for _ in self)


def transform_coords(coords: np.ndarray, original_size: Tuple[int, int], image_size: int,
                     normalize: bool = True) -> np.ndarray:
    """(x, y) [..., 2] -> the square model frame, float32 (``SAM2Transforms.transform_coords``).

    ``normalize``: the coordinates are pixels of the original image (divided by
    its width / height first); else they are already in [0, 1].
    """
    out = np.array(coords, dtype=np.float32, copy=True)
    if normalize:
        h, w = original_size
        out[..., 0] = out[..., 0] / np.float32(w)
        out[..., 1] = out[..., 1] / np.float32(h)
    return out * np.float32(image_size)


def sparse_embeddings(weights: Mapping, image_size: int, coords: Optional[np.ndarray] = None,
                      labels: Optional[np.ndarray] = None,
                      box: Optional[np.ndarray] = None) -> np.ndarray:
    """The sparse prompt embedding the SAM 2 image predictor feeds its decoder: ``[1, T, C]``.

    ``coords`` ``[N, 2]`` and ``labels`` ``[N]`` (1, 0 or -1) and ``box``
    ``[2, 2]`` (corners) are already in the model frame (`transform_coords`).
    Order: box corners (point labels 2, 3), clicks, the padding point. No
    points and no box: ``[1, 0, C]`` (a mask prompt alone).
    """
    w = weights if isinstance(weights, Sam2PromptWeights) else Sam2PromptWeights(weights)
    if coords is None and box is None:
        return v1.sparse_embeddings(None, None, None, w, input_image_size=image_size)
    parts = []
    if box is not None:
        corners = np.asarray(box, dtype=np.float32).reshape(1, 4)
        parts.append(v1.embed_boxes(corners, w, input_image_size=image_size))
    if coords is None:
        pts, lab = np.zeros((1, 0, 2), np.float32), np.zeros((1, 0), np.int64)
    else:
        pts = np.asarray(coords, dtype=np.float32).reshape(1, -1, 2)
        lab = np.asarray(labels).reshape(1, -1)
    parts.append(v1.embed_points(pts, lab, True, w, input_image_size=image_size))
    return np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)
