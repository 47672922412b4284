"""Resize-longest-side geometry: the image size SAM sees and prompt rescaling.

SAM resizes every image so its longest side equals the encoder input size
(1024) and pads the rest. Point and box prompts are given by users in
original-image pixels and must be rescaled into that resized frame. The
arithmetic here is kept bit-for-bit the same as the official
``ResizeLongestSide`` (Python floats for the scale, float64 arrays for the
coordinates, round-half-up for the size) because a one-pixel difference in
the resized size changes every downstream number.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from rlx.errors import InputError

__all__ = ["get_preprocess_shape", "apply_coords", "apply_boxes"]


def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> Tuple[int, int]:
    """(new_h, new_w) after scaling so that the longer side is ``long_side_length``."""
    oldh, oldw = int(oldh), int(oldw)
    if oldh <= 0 or oldw <= 0:
        raise InputError(f"image size must be positive, got {oldh}x{oldw}")
    scale = long_side_length * 1.0 / max(oldh, oldw)
    # int(x + 0.5): round half up, like the reference (not banker's rounding).
    return int(oldh * scale + 0.5), int(oldw * scale + 0.5)


def _check_size(original_size: Sequence[int]) -> Tuple[int, int]:
    try:
        h, w = (int(v) for v in original_size)
    except (TypeError, ValueError):
        raise InputError(f"original_size must be (height, width), got {original_size!r}") from None
    if h <= 0 or w <= 0:
        raise InputError(f"original_size must be positive, got {original_size!r}")
    return h, w


def _as_float64(values, what: str, last_dim: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind not in "iuf":
        raise InputError(f"{what} must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim == 0 or arr.shape[-1] != last_dim:
        raise InputError(f"{what} must have {last_dim} values in its last axis, got shape {arr.shape}")
    out = arr.astype(np.float64)  # always a copy: callers' arrays stay untouched
    if not np.all(np.isfinite(out)):
        raise InputError(f"{what} contains NaN or infinite values")
    return out


def apply_coords(coords, original_size: Sequence[int], target_length: int = 1024) -> np.ndarray:
    """Rescale (x, y) pixel coordinates [..., 2] from the original to the resized frame.

    Returns float64; the caller casts to float32 where the model wants it.
    """
    old_h, old_w = _check_size(original_size)
    new_h, new_w = get_preprocess_shape(old_h, old_w, target_length)
    out = _as_float64(coords, "point coordinates", 2)
    out[..., 0] = out[..., 0] * (new_w / old_w)
    out[..., 1] = out[..., 1] * (new_h / old_h)
    return out


def apply_boxes(boxes, original_size: Sequence[int], target_length: int = 1024) -> np.ndarray:
    """Rescale XYXY boxes [..., 4] into the resized frame; returns float64 [N, 4]."""
    arr = _as_float64(boxes, "boxes", 4)
    return apply_coords(arr.reshape(-1, 2, 2), original_size, target_length).reshape(-1, 4)
