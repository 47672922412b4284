"""Deterministic synthetic test images, and writers for common file formats.

Why synthetic: no photographs can be fetched here, and a test image needs
structure (smooth gradients that exercise bilinear resizing, hard edges and
shapes that give masks something to find, a little seeded texture so no two
neighbouring pixels are equal) more than realism. Sizes are non-square and
in both orientations so padding and the resize of the long side are both
covered.
"""

from __future__ import annotations

import os
from typing import Dict, Tuple

import numpy as np
from PIL import Image

__all__ = ["SIZES", "make_image", "write_image", "write_test_images"]

#: (height, width) of the standard test images: landscape and portrait.
SIZES: Tuple[Tuple[int, int], ...] = ((480, 640), (700, 300))


def make_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """An HxWx3 uint8 RGB image: colour gradients, a disc, a box, a stripe band."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = x / max(width - 1, 1), y / max(height - 1, 1)
    img = np.stack(
        [
            40 + 150 * u,
            30 + 170 * v,
            60 + 120 * (1 - u) * v + 40 * np.sin(6.0 * u + 3.0 * v),
        ],
        axis=-1,
    )
    # A bright disc in the upper left quarter.
    cy, cx, r = 0.3 * height, 0.3 * width, 0.15 * min(height, width)
    disc = (y - cy) ** 2 + (x - cx) ** 2 <= r * r
    img[disc] = (230, 60, 50)
    # A dark rectangle lower right.
    box = (y > 0.55 * height) & (y < 0.85 * height) & (x > 0.5 * width) & (x < 0.9 * width)
    img[box] = (20, 40, 110)
    # Thin diagonal stripes across the middle band.
    band = (v > 0.42) & (v < 0.5) & (((x + y) // 6) % 2 == 0)
    img[band] = (250, 250, 250)
    img += rng.normal(0.0, 4.0, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def write_image(path: str, array: np.ndarray, mode: str = None, **save_kwargs) -> str:
    """Write ``array`` to ``path``; the format follows the suffix (.png, .jpg, ...).

    ``mode`` optionally converts first (e.g. "L", "P", "RGBA", "LA").
    """
    img = Image.fromarray(np.ascontiguousarray(array))
    if mode is not None and img.mode != mode:
        img = img.convert(mode)
    img.save(path, **save_kwargs)
    return os.fspath(path)


def write_test_images(directory: str) -> Dict[str, str]:
    """Write a small zoo of image files into ``directory``; returns name -> path.

    Names: ``rgb_{h}x{w}.png`` and ``.jpg`` for each of :data:`SIZES`, and
    480x640 variants ``gray.png``, ``palette.png``, ``rgba.png``, ``la.png``.
    """
    os.makedirs(directory, exist_ok=True)
    out: Dict[str, str] = {}
    for h, w in SIZES:
        rgb = make_image(h, w, seed=h * 7 + w)
        for ext in ("png", "jpg"):
            name = f"rgb_{h}x{w}.{ext}"
            kwargs = {"quality": 90} if ext == "jpg" else {}
            out[name] = write_image(os.path.join(directory, name), rgb, **kwargs)
    base = make_image(*SIZES[0], seed=1)
    alpha = np.linspace(0, 255, base.shape[1], dtype=np.float64)
    alpha = np.broadcast_to(np.rint(alpha).astype(np.uint8), base.shape[:2])
    rgba = np.dstack([base, alpha])
    out["gray.png"] = write_image(os.path.join(directory, "gray.png"), base, mode="L")
    out["palette.png"] = write_image(os.path.join(directory, "palette.png"), base, mode="P")
    out["rgba.png"] = write_image(os.path.join(directory, "rgba.png"), rgba)
    out["la.png"] = write_image(os.path.join(directory, "la.png"), rgba, mode="LA")
    return out
