"""Image loading and SAM preprocessing on the host, in numpy and Pillow.

Why Pillow: the official predictor resizes the uint8 image with
torchvision's ``resize`` on a PIL image, which is Pillow's bilinear resize
(with its own antialiasing when shrinking). Calling Pillow the same way gives
byte-identical resized pixels, so the encoder input matches the reference
exactly instead of approximately.

Everything a user can get wrong (missing or corrupt file, 16-bit or float
images, wrong array shape or dtype, an image too thin to resize) raises
:class:`rlx.errors.InputError` naming the path, shape or dtype at fault.
"""

from __future__ import annotations

import os
import re
from typing import Sequence, Tuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from rlx.errors import InputError

from .config import SamConfig
from .transforms import get_preprocess_shape

__all__ = [
    "load_image",
    "resize_longest_side",
    "preprocess",
    "check_bit_depth",
    "PIXEL_MEAN",
    "PIXEL_STD",
]

_DEFAULTS = SamConfig.__dataclass_fields__
PIXEL_MEAN: Tuple[float, float, float] = _DEFAULTS["pixel_mean"].default
PIXEL_STD: Tuple[float, float, float] = _DEFAULTS["pixel_std"].default

# Pillow modes holding more than 8 bits per channel ("I", "F", "I;16*"):
# converting them to RGB would silently clip or rescale, so we refuse them.
_HIGH_DEPTH_MODES = ("I", "F")

# Raw (file-side) modes with 16 bits per sample. Pillow opens a 16-bit RGB
# PNG/TIFF as plain "RGB" and silently keeps only the high byte, so the mode
# alone does not reveal it; the decoder's raw mode does. ("BGR;15/16" are
# packed 5/6-bit BMP pixels, i.e. low depth, and are fine.)
_HIGH_DEPTH_RAWMODE = re.compile(r";(16|32)[BLNS]?$")


def _raw_modes(img: Image.Image):
    for tile in getattr(img, "tile", None) or ():
        args = tile[3] if len(tile) > 3 else None
        if isinstance(args, tuple):
            args = next((a for a in args if isinstance(a, str)), None)
        if isinstance(args, str):
            yield args


def check_bit_depth(img: Image.Image, source: str) -> None:
    """Refuse images with more than 8 bits per channel (must run before ``load``)."""
    mode = img.mode
    if mode in _HIGH_DEPTH_MODES or mode.startswith("I;") or mode.startswith("F"):
        kind = "float" if mode.startswith("F") else "16/32-bit integer"
        raise InputError(
            f"{source}: mode {mode!r} images ({kind} pixels) are not supported; "
            "convert to 8-bit RGB or grayscale first"
        )
    for raw in _raw_modes(img):
        if _HIGH_DEPTH_RAWMODE.search(raw) and not raw.startswith("BGR;"):
            raise InputError(
                f"{source}: {raw!r} pixel data (16 bits per channel) is not supported; "
                "convert to 8-bit RGB or grayscale first"
            )


def _from_pil(img: Image.Image, source: str) -> np.ndarray:
    """Convert any 8-bit Pillow image to HxWx3 uint8 RGB; alpha is dropped."""
    check_bit_depth(img, source)
    # Honour EXIF orientation so masks line up with the image as viewers show it.
    img = ImageOps.exif_transpose(img)
    if img.mode != "RGB":
        # L, 1, P, PA, LA, RGBA, CMYK, YCbCr, ... -> RGB. Alpha is discarded, not
        # composited: the model sees the stored colour under transparent pixels.
        try:
            img = img.convert("RGB")
        except (ValueError, OSError) as exc:
            raise InputError(f"{source}: cannot convert mode {img.mode!r} to RGB: {exc}") from None
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{source}: decoded to an unusable array of shape {arr.shape}")
    return np.ascontiguousarray(arr)


def _load_path(path: str) -> np.ndarray:
    if not os.path.exists(path):
        raise InputError(f"image file not found: {path}")
    if os.path.isdir(path):
        raise InputError(f"image path is a directory, not a file: {path}")
    try:
        with Image.open(path) as img:
            check_bit_depth(img, path)  # before load(): the raw mode is gone after it
            img.load()  # decode now, so truncated/corrupt data fails here
            return _from_pil(img, path)
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(f"cannot read image {path}: not an image format Pillow recognises") from None
    except Image.DecompressionBombError as exc:
        raise InputError(f"cannot read image {path}: {exc}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"cannot read image {path}: {exc}") from None


def _check_array(image: np.ndarray, what: str = "image array") -> np.ndarray:
    if image.dtype != np.uint8:
        raise InputError(
            f"{what} must be uint8 with values 0..255, got dtype {image.dtype} "
            f"(shape {image.shape})"
        )
    if image.ndim == 2:
        channels_ok = True
    elif image.ndim == 3:
        channels_ok = image.shape[2] == 3
    else:
        channels_ok = False
    if not channels_ok:
        raise InputError(
            f"{what} must be HxWx3 (RGB) or HxW (grayscale), got shape {image.shape}"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"{what} is empty: shape {image.shape}")
    return image


def load_image(image) -> np.ndarray:
    """Return ``image`` as a contiguous HxWx3 uint8 RGB array.

    Accepts a path (str or os.PathLike) to anything Pillow decodes, a PIL
    image, or a numpy array (HxWx3 uint8, or HxW uint8 grayscale which is
    replicated into three channels). A contiguous HxWx3 uint8 array is
    returned as is (no copy).
    """
    if isinstance(image, (str, bytes, os.PathLike)):
        path = os.fsdecode(image)
        return _load_path(path)
    if isinstance(image, Image.Image):
        return _from_pil(image, "PIL image")
    if isinstance(image, np.ndarray):
        _check_array(image)
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        return np.ascontiguousarray(image)
    raise InputError(
        f"image must be a file path, a PIL image or a numpy array, got {type(image).__name__}"
    )


def resize_longest_side(image: np.ndarray, target_length: int) -> np.ndarray:
    """Resize HxWx3 uint8 so its long side is ``target_length`` (Pillow bilinear).

    This is the uint8 -> uint8 step of the reference pipeline; its output is
    exactly what the official ``ResizeLongestSide.apply_image`` returns.
    """
    _check_array(image)
    h, w = image.shape[:2]
    new_h, new_w = get_preprocess_shape(h, w, target_length)
    if new_h == 0 or new_w == 0:
        raise InputError(
            f"image of size {h}x{w} is too elongated: scaling its long side to "
            f"{target_length} leaves a side of 0 pixels"
        )
    pil = Image.fromarray(image)  # Pillow copies strided views (e.g. BGR flips) itself
    return np.asarray(pil.resize((new_w, new_h), Image.Resampling.BILINEAR))


def preprocess(
    image: np.ndarray,
    img_size: int = 1024,
    pixel_mean: Sequence[float] = PIXEL_MEAN,
    pixel_std: Sequence[float] = PIXEL_STD,
    image_format: str = "RGB",
) -> Tuple[np.ndarray, Tuple[int, int], Tuple[int, int]]:
    """Turn a uint8 image into the encoder input, like ``SamPredictor.set_image``.

    Steps: optional BGR->RGB flip, resize longest side to ``img_size``
    (Pillow bilinear on uint8), normalise per channel in float32, zero-pad
    bottom/right to ``img_size`` x ``img_size``.

    Returns ``(x, input_size, original_size)``: ``x`` float32 [1, 3, S, S],
    ``input_size`` the (h, w) of the resized image inside the padded square,
    ``original_size`` the (h, w) of ``image``.
    """
    if image_format not in ("RGB", "BGR"):
        raise InputError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
    if not isinstance(image, np.ndarray):
        raise InputError(
            f"preprocess expects a numpy array (use load_image first), got {type(image).__name__}"
        )
    image = load_image(image)  # validates; grayscale -> RGB
    if image_format == "BGR":
        image = image[..., ::-1]
    original_size = (int(image.shape[0]), int(image.shape[1]))
    resized = resize_longest_side(image, img_size)
    h, w = resized.shape[:2]

    mean = np.asarray(pixel_mean, dtype=np.float32)
    std = np.asarray(pixel_std, dtype=np.float32)
    if mean.size != 3 or std.size != 3:
        raise InputError(
            f"pixel_mean and pixel_std need 3 values each, got {mean.size} and {std.size}"
        )
    mean, std = mean.reshape(3, 1, 1), std.reshape(3, 1, 1)
    x = np.zeros((1, 3, img_size, img_size), dtype=np.float32)
    chw = resized.transpose(2, 0, 1).astype(np.float32)
    # Same float32 operation order as the reference: (x - mean) / std.
    x[0, :, :h, :w] = (chw - mean) / std
    return x, (h, w), original_size
