"""Shared pieces of the SAM peers: model construction with re-drawn weights,
the benchmark inputs, and a torch-free host-side preprocessing (for ORT).

Benchmark inputs (documented in benchmarks/README.md):

* encoder: a ``[1, 3, 1024, 1024]`` float32 tensor, standard normal, seeded
  (what the encoder sees after SAM's normalisation + padding);
* prompt -> masks: a 1500x2000 (H x W) uint8 RGB image -- a 3 MP, 4:3
  landscape photo size, so both the resize to 768x1024 and the padding to
  1024x1024 are exercised -- with one foreground point at (x=1200, y=700),
  ``multimask_output=True``; the masks come back at 1500x2000.
"""

from __future__ import annotations

import math
import os

import numpy as np

MODEL_TYPES = ("vit_b", "vit_l", "vit_h")
IMG_SIZE = 1024
PROMPT_IMAGE_HW = (1500, 2000)  # (H, W) of the prompt->masks test image
PROMPT_POINT_XY = (1200.0, 700.0)  # one foreground click, (x, y) in pixels
PIXEL_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
PIXEL_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)


def check_model_type(model: str) -> str:
    if model not in MODEL_TYPES:
        raise ValueError(f"unknown SAM model type {model!r}; expected one of {MODEL_TYPES}")
    return model


def encoder_input(seed: int = 0) -> np.ndarray:
    """The encoder benchmark input: [1,3,1024,1024] float32, N(0,1), seeded."""
    rng = np.random.default_rng(seed + 1000)
    return rng.standard_normal((1, 3, IMG_SIZE, IMG_SIZE), dtype=np.float32)


def prompt_image(seed: int = 0) -> np.ndarray:
    """A deterministic 1500x2000x3 uint8 'photo': smooth gradients, a few
    discs and mild noise (so resizing works on non-trivial content)."""
    h, w = PROMPT_IMAGE_HW
    rng = np.random.default_rng(seed + 2000)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), dtype=np.float32)
    img[..., 0] = 128 + 100 * np.sin(xx / 173.0) * np.cos(yy / 211.0)
    img[..., 1] = 255 * (xx / w) * 0.6 + 40
    img[..., 2] = 255 * (yy / h) * 0.5 + 60
    for _ in range(6):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = rng.uniform(80, 300)
        colour = rng.uniform(0, 255, size=3)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        img[disc] = colour
    img += rng.normal(0, 6, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def prompt_point(points: int = 1):
    """``points`` clicks: the foreground click at PROMPT_POINT_XY first, then
    (for the decoder scaling table) further clicks on a fixed spiral around
    it, alternating background/foreground labels -- the same for every peer."""
    if points < 1:
        raise ValueError(f"points must be >= 1, got {points}")
    xy = [PROMPT_POINT_XY]
    labels = [1]
    h, w = PROMPT_IMAGE_HW
    for i in range(1, points):
        angle = 2.399963 * i  # golden angle: well spread, deterministic
        radius = 40.0 * math.sqrt(i)
        x = min(max(PROMPT_POINT_XY[0] + radius * math.cos(angle), 0.0), w - 1.0)
        y = min(max(PROMPT_POINT_XY[1] + radius * math.sin(angle), 0.0), h - 1.0)
        xy.append((x, y))
        labels.append(int(i % 2 == 0))
    return np.array(xy, dtype=np.float64), np.array(labels, dtype=np.int64)


# --------------------------------------------------------------------------
# torch side
# --------------------------------------------------------------------------


def import_segment_anything():
    """Import the official package with the torchvision shim installed first (the tests'
    stand-in: the two functions segment-anything calls, everything else raises)."""
    from tests.support import torchvision_shim

    torchvision_shim.install()
    import segment_anything  # noqa: F401

    return segment_anything


def redraw_weights(model, seed: int) -> None:
    """Re-draw every parameter of an official SAM from a seeded distribution.

    A freshly built SAM leaves rel-pos tables and pos_embed at zero and
    LayerNorms at exactly 1/0, which would leave some ops unexercised. Here:

    * Linear / Conv / ConvTranspose weights: N(0, 1/fan_in) (std 1/sqrt(fan_in));
    * every bias: N(0, 0.02^2);
    * LayerNorm / LayerNorm2d weight: 1 + N(0, 0.1^2), bias N(0, 0.02^2);
    * ``pos_embed``, ``rel_pos_h``, ``rel_pos_w``: N(0, 0.02^2) (small, non-zero);
    * embeddings (point / mask / IoU tokens): N(0, 1).

    Parameters are visited in ``named_parameters`` order with one
    ``torch.Generator`` so the draw depends on the seed only.
    """
    import torch
    import torch.nn as nn

    from segment_anything.modeling.common import LayerNorm2d

    gen = torch.Generator().manual_seed(int(seed))
    owner = {}
    for mod_name, mod in model.named_modules():
        for p_name, _ in mod.named_parameters(recurse=False):
            owner[f"{mod_name}.{p_name}" if mod_name else p_name] = mod

    def normal_(t, std, mean=0.0):
        t.copy_(torch.randn(t.shape, generator=gen, dtype=t.dtype) * std + mean)

    with torch.no_grad():
        for name, p in model.named_parameters():
            mod = owner[name]
            leaf = name.rsplit(".", 1)[-1]
            if isinstance(mod, (nn.LayerNorm, LayerNorm2d)):
                if leaf == "weight":
                    normal_(p, 0.1, 1.0)
                else:
                    normal_(p, 0.02)
            elif leaf == "bias":
                normal_(p, 0.02)
            elif isinstance(mod, nn.Linear):
                normal_(p, 1.0 / math.sqrt(p.shape[1]))
            elif isinstance(mod, nn.ConvTranspose2d):
                # weight is (in, out, kh, kw); each output sees in*kh*kw/stride^2 inputs
                sh, sw = mod.stride
                fan_in = p.shape[0] * p.shape[2] * p.shape[3] / (sh * sw)
                normal_(p, 1.0 / math.sqrt(max(fan_in, 1.0)))
            elif isinstance(mod, nn.Conv2d):
                fan_in = p.shape[1] * p.shape[2] * p.shape[3]
                normal_(p, 1.0 / math.sqrt(fan_in))
            elif isinstance(mod, nn.Embedding):
                normal_(p, 1.0)
            elif leaf in ("pos_embed", "rel_pos_h", "rel_pos_w"):
                normal_(p, 0.02)
            else:  # anything new in a future version: small, non-zero
                normal_(p, 0.02)


def build_sam(model: str = "vit_b", seed: int = 0, checkpoint: str | None = None):
    """The official ``Sam`` in eval mode, weights from ``checkpoint`` or re-drawn."""
    import torch

    check_model_type(model)
    import_segment_anything()
    from segment_anything import sam_model_registry

    torch.manual_seed(int(seed))  # buffers drawn at construction (prompt PE matrix)
    sam = sam_model_registry[model](checkpoint=None)
    if checkpoint:
        if not os.path.isfile(checkpoint):
            raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        try:
            sam.load_state_dict(state)
        except RuntimeError as exc:
            raise RuntimeError(f"checkpoint {checkpoint} does not fit SAM {model}: {exc}") from exc
    else:
        redraw_weights(sam, seed)
    sam.eval()
    for p in sam.parameters():
        p.requires_grad_(False)
    return sam


def weights_key(model: str, seed: int, checkpoint: str | None) -> str:
    """A short cache key naming the weights (model type + seed, or checkpoint identity)."""
    if checkpoint:
        st = os.stat(checkpoint)
        import hashlib

        h = hashlib.sha256(
            f"{os.path.abspath(checkpoint)}|{st.st_size}|{int(st.st_mtime)}".encode()
        ).hexdigest()[:12]
        return f"{model}-ckpt-{h}"
    return f"{model}-seed{int(seed)}"


# --------------------------------------------------------------------------
# torch-free host side (ORT; the same maths as ResizeLongestSide + Sam.preprocess)
# --------------------------------------------------------------------------


def preprocess_shape(h: int, w: int, long_side: int = IMG_SIZE):
    scale = long_side * 1.0 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def preprocess_image(image: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 -> float32 [1,3,1024,1024]: resize long side to 1024 (PIL
    bilinear, as ResizeLongestSide via torchvision), normalise, pad bottom/right."""
    from PIL import Image

    h, w = image.shape[:2]
    nh, nw = preprocess_shape(h, w)
    resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
    x = (resized.astype(np.float32) - PIXEL_MEAN) / PIXEL_STD
    out = np.zeros((1, 3, IMG_SIZE, IMG_SIZE), dtype=np.float32)
    out[0, :, :nh, :nw] = x.transpose(2, 0, 1)
    return out


def transform_coords(coords: np.ndarray, original_hw) -> np.ndarray:
    old_h, old_w = original_hw
    new_h, new_w = preprocess_shape(old_h, old_w)
    coords = coords.astype(np.float64).copy()
    coords[..., 0] *= new_w / old_w
    coords[..., 1] *= new_h / old_h
    return coords


def cache_dir() -> str:
    """Benchmark cache dir: $RLX_BENCH_CACHE or ~/.cache/rlx/bench."""
    d = os.environ.get("RLX_BENCH_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "rlx", "bench"
    )
    os.makedirs(d, exist_ok=True)
    return d
