"""Host-side part of SAM's prompt encoder, in numpy float32.

Why on the host: points and boxes are a handful of coordinates per click.
Their random-Fourier positional encoding plus a learned per-label offset is a
few hundred flops, not worth a compiled kernel, and doing it here lets the
compiled mask decoder take ready-made sparse embeddings of a fixed bucket
shape. The dense positional encoding of the image grid is a constant per
gaussian matrix and grid size, so it is computed once and cached.

Weights are looked up by Meta's state-dict names, e.g.
``prompt_encoder.pe_layer.positional_encoding_gaussian_matrix``; any mapping
(dict, weight store) of those names to arrays works.

Semantics reproduced from the reference PromptEncoder:
  * a point is shifted by +0.5 to the pixel centre, divided by the encoder
    input size (x by width, y by height), mapped to [-1, 1], projected by the
    gaussian matrix, scaled by 2*pi, and encoded as [sin, cos];
  * label 1 adds point_embeddings.1, label 0 adds point_embeddings.0, label -1
    (padding / not a point) replaces the encoding with not_a_point_embed;
  * without a box, one padding point at (0, 0) with label -1 is appended;
  * a box is two corner points with point_embeddings.2 / .3 added.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Mapping, Optional, Tuple, Union

import numpy as np

from rlx.errors import CheckpointError, InputError

__all__ = [
    "GAUSSIAN_KEY",
    "fourier_encode",
    "dense_pe",
    "embed_points",
    "embed_boxes",
    "sparse_embeddings",
    "no_mask_dense",
]

PREFIX = "prompt_encoder."
GAUSSIAN_KEY = PREFIX + "pe_layer.positional_encoding_gaussian_matrix"
_TWO_PI = 2 * np.pi  # a Python float: multiplies float32 arrays in float32

SizeLike = Union[int, Tuple[int, int]]


def _weight(weights: Mapping, name: str, shape=None) -> np.ndarray:
    key = PREFIX + name if not name.startswith(PREFIX) else name
    try:
        value = weights[key]
    except KeyError:
        raise CheckpointError(f"missing prompt-encoder weight {key!r}") from None
    arr = np.asarray(value, dtype=np.float32)
    if shape is not None and arr.shape != tuple(shape):
        raise CheckpointError(f"weight {key!r} has shape {arr.shape}, expected {tuple(shape)}")
    return arr


def _gaussian(weights_or_matrix) -> np.ndarray:
    """Accept the [2, C/2] matrix itself (array-like) or a weight mapping."""
    x = weights_or_matrix
    if isinstance(x, (np.ndarray, list, tuple)) or hasattr(x, "__array__"):
        g = np.asarray(x, dtype=np.float32)
    else:
        g = _weight(x, GAUSSIAN_KEY)
    if g.ndim != 2 or g.shape[0] != 2:
        raise CheckpointError(
            f"{GAUSSIAN_KEY!r} must have shape [2, C/2], got {g.shape}"
        )
    return g


def _embed_dim(weights: Mapping) -> int:
    return 2 * _gaussian(weights).shape[1]


def _image_size(input_image_size: SizeLike) -> Tuple[int, int]:
    if isinstance(input_image_size, (int, np.integer)):
        return int(input_image_size), int(input_image_size)
    h, w = input_image_size
    return int(h), int(w)


def fourier_encode(coords_normalized: np.ndarray, gaussian_matrix: np.ndarray) -> np.ndarray:
    """Random-Fourier features of coordinates in [0, 1]^2: [..., 2] -> [..., C].

    C = 2 * gaussian_matrix.shape[1]; the first half are sines, the second cosines.
    """
    g = _gaussian(gaussian_matrix)
    c = np.asarray(coords_normalized, dtype=np.float32)
    if c.ndim == 0 or c.shape[-1] != 2:
        raise InputError(f"coordinates must have 2 values in the last axis, got shape {c.shape}")
    proj = (2 * c - 1) @ g
    proj = _TWO_PI * proj
    return np.concatenate([np.sin(proj), np.cos(proj)], axis=-1).astype(np.float32, copy=False)


_DENSE_CACHE: "OrderedDict[tuple, np.ndarray]" = OrderedDict()
_DENSE_CACHE_SIZE = 8


def dense_pe(gaussian_matrix: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Positional encoding of every cell centre of an h x w grid: [1, C, h, w].

    Cached per (gaussian matrix contents, size); the returned array is
    read-only (copy it before writing).
    """
    g = _gaussian(gaussian_matrix)
    h, w = (int(v) for v in size)
    if h <= 0 or w <= 0:
        raise InputError(f"dense_pe size must be positive, got {size!r}")
    key = (g.tobytes(), g.shape, h, w)
    hit = _DENSE_CACHE.get(key)
    if hit is not None:
        _DENSE_CACHE.move_to_end(key)
        return hit
    # Cell centres, computed as the reference does: (index + 1) - 0.5, then / size.
    ys = (np.arange(1, h + 1, dtype=np.float32) - np.float32(0.5)) / np.float32(h)
    xs = (np.arange(1, w + 1, dtype=np.float32) - np.float32(0.5)) / np.float32(w)
    grid = np.empty((h, w, 2), dtype=np.float32)
    grid[..., 0] = xs[None, :]
    grid[..., 1] = ys[:, None]
    pe = fourier_encode(grid, g).transpose(2, 0, 1)[None]
    pe = np.ascontiguousarray(pe)
    pe.setflags(write=False)
    _DENSE_CACHE[key] = pe
    if len(_DENSE_CACHE) > _DENSE_CACHE_SIZE:
        _DENSE_CACHE.popitem(last=False)
    return pe


def _encode_in_frame(coords: np.ndarray, g: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Fourier-encode [B, N, 2] coordinates given in input-frame pixels."""
    h, w = size
    norm = np.empty_like(coords)
    norm[..., 0] = coords[..., 0] / np.float32(w)
    norm[..., 1] = coords[..., 1] / np.float32(h)
    return fourier_encode(norm, g)


def _check_points(coords, labels) -> Tuple[np.ndarray, np.ndarray]:
    c = np.asarray(coords)
    lab = np.asarray(labels)
    if c.dtype.kind not in "iuf":
        raise InputError(f"point coordinates must be numeric, got dtype {c.dtype}")
    if c.ndim != 3 or c.shape[2] != 2:
        raise InputError(f"point coordinates must be [B, N, 2], got shape {c.shape}")
    if lab.dtype.kind not in "iuf" or lab.shape != c.shape[:2]:
        raise InputError(
            f"point labels must be numeric [B, N] = {list(c.shape[:2])}, "
            f"got shape {lab.shape} dtype {lab.dtype}"
        )
    c = c.astype(np.float32)
    if not np.all(np.isfinite(c)):
        raise InputError("point coordinates contain NaN or infinite values")
    bad = ~np.isin(lab, (-1, 0, 1))
    if np.any(bad):
        raise InputError(
            f"point labels must be 1 (foreground), 0 (background) or -1 (not a point); "
            f"got {np.unique(lab[bad]).tolist()}"
        )
    return c, lab.astype(np.int64)


def embed_points(
    coords: np.ndarray,
    labels: np.ndarray,
    pad: bool,
    weights: Mapping,
    *,
    input_image_size: SizeLike = 1024,
) -> np.ndarray:
    """Sparse embeddings of points given in input-frame pixels: [B, N(+1), C] float32.

    ``coords`` [B, N, 2] are (x, y) after :func:`models.sam.transforms.apply_coords`;
    ``labels`` [B, N] in {1, 0, -1}. ``pad`` appends the (0, 0) / -1 padding
    point the reference adds when no box is given.
    """
    c, lab = _check_points(coords, labels)
    g = _gaussian(weights)
    dim = 2 * g.shape[1]
    c = c + np.float32(0.5)
    if pad:
        b = c.shape[0]
        c = np.concatenate([c, np.zeros((b, 1, 2), np.float32)], axis=1)
        lab = np.concatenate([lab, -np.ones((b, 1), np.int64)], axis=1)
    emb = _encode_in_frame(c, g, _image_size(input_image_size))
    not_a_point = _weight(weights, "not_a_point_embed.weight", (1, dim))[0]
    neg = _weight(weights, "point_embeddings.0.weight", (1, dim))[0]
    pos = _weight(weights, "point_embeddings.1.weight", (1, dim))[0]
    lab = lab[..., None]
    emb = np.where(lab == -1, not_a_point, emb)
    emb = np.where(lab == 0, emb + neg, emb)
    emb = np.where(lab == 1, emb + pos, emb)
    return emb.astype(np.float32, copy=False)


def _check_boxes(boxes) -> np.ndarray:
    b = np.asarray(boxes)
    if b.dtype.kind not in "iuf":
        raise InputError(f"boxes must be numeric, got dtype {b.dtype}")
    if b.ndim == 3 and b.shape[1:] == (1, 4):
        b = b[:, 0]
    if b.ndim != 2 or b.shape[1] != 4:
        raise InputError(f"boxes must be [B, 4] (x0, y0, x1, y1), got shape {b.shape}")
    b = b.astype(np.float32)
    if not np.all(np.isfinite(b)):
        raise InputError("boxes contain NaN or infinite values")
    return b


def embed_boxes(
    boxes: np.ndarray, weights: Mapping, *, input_image_size: SizeLike = 1024
) -> np.ndarray:
    """Sparse embeddings of XYXY boxes in input-frame pixels: [B, 2, C] float32."""
    b = _check_boxes(boxes)
    g = _gaussian(weights)
    dim = 2 * g.shape[1]
    corners = (b + np.float32(0.5)).reshape(-1, 2, 2)
    emb = _encode_in_frame(corners, g, _image_size(input_image_size))
    emb[:, 0, :] += _weight(weights, "point_embeddings.2.weight", (1, dim))[0]
    emb[:, 1, :] += _weight(weights, "point_embeddings.3.weight", (1, dim))[0]
    return emb


def sparse_embeddings(
    points: Optional[np.ndarray],
    labels: Optional[np.ndarray],
    boxes: Optional[np.ndarray],
    weights: Mapping,
    *,
    input_image_size: SizeLike = 1024,
) -> np.ndarray:
    """The sparse output of the reference ``PromptEncoder.forward``: [B, N, C].

    Points (with one padding point if there is no box) come first, then the
    two box corners. With neither, the result is an empty [1, 0, C] array.
    """
    if (points is None) != (labels is None):
        raise InputError("point coordinates and point labels must be given together")
    dim = _embed_dim(weights)
    parts = []
    if points is not None:
        parts.append(
            embed_points(points, labels, boxes is None, weights, input_image_size=input_image_size)
        )
    if boxes is not None:
        parts.append(embed_boxes(boxes, weights, input_image_size=input_image_size))
    if not parts:
        return np.zeros((1, 0, dim), dtype=np.float32)
    if len(parts) == 2 and parts[0].shape[0] != parts[1].shape[0]:
        raise InputError(
            f"points have batch {parts[0].shape[0]} but boxes have batch {parts[1].shape[0]}"
        )
    return np.concatenate(parts, axis=1)


def no_mask_dense(weights: Mapping, size: Tuple[int, int], batch: int = 1) -> np.ndarray:
    """Dense embedding used when no mask prompt is given: [batch, C, h, w] float32."""
    dim = _embed_dim(weights)
    h, w = (int(v) for v in size)
    emb = _weight(weights, "no_mask_embed.weight", (1, dim))[0]
    return np.ascontiguousarray(
        np.broadcast_to(emb[None, :, None, None], (int(batch), dim, h, w)), dtype=np.float32
    )
