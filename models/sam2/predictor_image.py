"""SAM 2's image preprocessing on the host: square resize with antialiasing, then normalize.

The official ``SAM2Transforms`` does ``ToTensor`` (uint8 -> float in [0, 1]),
``Resize((S, S))`` on that float tensor -- torchvision's tensor resize, i.e.
bilinear interpolation with ``antialias=True`` -- and ``Normalize`` with the
ImageNet mean / std. Unlike SAM v1 the aspect ratio is not kept: every image
is stretched to the square model input, so prompts map with x * S / W,
y * S / H and masks come back with one resize.

The antialiased bilinear resize is separable: per axis, output sample i
reads the inputs under a triangle filter centred at ``(i + 0.5) * scale``
and widened by the scale when shrinking (support ``max(scale, 1)``), with its
weights normalised to sum to one (the scheme of Pillow and PyTorch's
``_upsample_bilinear2d_aa``). Each axis is a handful of taps per output, so
the resize is a few gathers and multiply-adds instead of a dense matrix.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Tuple

import numpy as np

from rlx.errors import InputError

from models.sam.image import load_image

__all__ = ["aa_taps", "resize_antialias", "preprocess", "load_image"]


@lru_cache(maxsize=16)
def aa_taps(n_in: int, n_out: int) -> Tuple[np.ndarray, np.ndarray]:
    """(index [n_out, K], weight [n_out, K] float32) of a 1-D antialiased bilinear resize."""
    if n_in <= 0 or n_out <= 0:
        raise InputError(f"cannot resize between sizes {n_in} and {n_out}")
    scale = n_in / n_out
    support = scale if scale >= 1.0 else 1.0
    inv = 1.0 / scale if scale >= 1.0 else 1.0
    centre = scale * (np.arange(n_out, dtype=np.float64) + 0.5)
    lo = np.maximum((centre - support + 0.5).astype(np.int64), 0)
    hi = np.minimum((centre + support + 0.5).astype(np.int64), n_in)
    k = int((hi - lo).max())
    offs = np.arange(k)
    idx = lo[:, None] + offs[None, :]
    x = (idx - centre[:, None] + 0.5) * inv
    w = np.clip(1.0 - np.abs(x), 0.0, None)
    w[offs[None, :] >= (hi - lo)[:, None]] = 0.0
    w /= w.sum(axis=1, keepdims=True)
    idx = np.minimum(idx, n_in - 1)
    for a in (idx, w):
        a.setflags(write=False)
    return idx, w.astype(np.float32)


def _resize_axis(x: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    idx, w = aa_taps(x.shape[axis], n_out)
    shape = [1] * x.ndim
    shape[axis] = n_out
    out = None
    for k in range(idx.shape[1]):
        term = np.take(x, idx[:, k], axis=axis) * w[:, k].reshape(shape)
        out = term if out is None else np.add(out, term, out=out)
    return out


def resize_antialias(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Float ``[H, W, C]`` -> ``[h, w, C]`` float32 (torchvision's antialiased bilinear resize)."""
    h, w = size
    x = np.asarray(image, dtype=np.float32)
    if x.shape[1] != w:
        x = _resize_axis(x, w, 1)
    if x.shape[0] != h:
        x = _resize_axis(x, h, 0)
    return x


def preprocess(image, image_size: int, mean, std) -> Tuple[np.ndarray, Tuple[int, int]]:
    """An image (array, PIL image or path) -> (model input ``[1, 3, S, S]`` float32, (H, W))."""
    array = load_image(image)
    h, w = array.shape[:2]
    x = array.astype(np.float32) / np.float32(255.0)
    x = resize_antialias(x, (image_size, image_size))
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None]), (int(h), int(w))
