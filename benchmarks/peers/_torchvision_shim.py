"""A minimal stand-in for the two torchvision functions segment-anything uses.

The official ``segment-anything`` package imports
``torchvision.transforms.functional.{resize, to_pil_image}`` (in
``utils/transforms.py``) and ``torchvision.ops.boxes`` (automatic mask
generator only). torchvision is not installable next to torch 2.13 here, so
:func:`install` registers a tiny module tree in ``sys.modules`` *before*
``segment_anything`` is imported. It implements exactly what
``ResizeLongestSide.apply_image`` calls and raises on anything else, so a
silent behaviour difference cannot creep in.

If a real torchvision is importable it is left alone.
"""

from __future__ import annotations

import sys
import types

import numpy as np

__all__ = ["install"]


def to_pil_image(pic, mode=None):
    from PIL import Image

    if mode is not None:
        raise NotImplementedError("torchvision shim: to_pil_image(mode=...) is not supported")
    if not isinstance(pic, np.ndarray):
        raise NotImplementedError(
            f"torchvision shim: to_pil_image only takes a numpy array, got {type(pic).__name__}"
        )
    if pic.dtype != np.uint8:
        raise NotImplementedError(
            f"torchvision shim: to_pil_image only takes uint8 arrays, got {pic.dtype}"
        )
    return Image.fromarray(pic)


def resize(img, size, interpolation=None, max_size=None, antialias=None):
    from PIL import Image

    if not isinstance(img, Image.Image):
        raise NotImplementedError(
            f"torchvision shim: resize only takes a PIL image, got {type(img).__name__}"
        )
    if interpolation is not None or max_size is not None:
        raise NotImplementedError("torchvision shim: resize(interpolation/max_size) unsupported")
    if not (isinstance(size, (tuple, list)) and len(size) == 2):
        raise NotImplementedError(f"torchvision shim: resize needs size=(h, w), got {size!r}")
    h, w = int(size[0]), int(size[1])
    # torchvision's default for PIL input is bilinear (antialiased, as PIL does).
    return img.resize((w, h), Image.BILINEAR)


def _unsupported(name):
    def fn(*args, **kwargs):
        raise NotImplementedError(f"torchvision shim: {name} is not available")

    return fn


def install() -> None:
    """Register the shim as ``torchvision`` unless a real one is importable."""
    if "torchvision" in sys.modules:
        return
    try:  # a real torchvision wins
        import importlib.util

        if importlib.util.find_spec("torchvision") is not None:
            return
    except (ImportError, ValueError):
        pass

    tv = types.ModuleType("torchvision")
    tv.__path__ = []  # mark as a package
    tv.__rlx_shim__ = True
    transforms = types.ModuleType("torchvision.transforms")
    transforms.__path__ = []
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.resize = resize
    functional.to_pil_image = to_pil_image
    ops = types.ModuleType("torchvision.ops")
    ops.__path__ = []
    boxes = types.ModuleType("torchvision.ops.boxes")
    boxes.batched_nms = _unsupported("torchvision.ops.boxes.batched_nms")
    boxes.box_area = _unsupported("torchvision.ops.boxes.box_area")

    tv.transforms = transforms
    transforms.functional = functional
    tv.ops = ops
    ops.boxes = boxes
    sys.modules.update(
        {
            "torchvision": tv,
            "torchvision.transforms": transforms,
            "torchvision.transforms.functional": functional,
            "torchvision.ops": ops,
            "torchvision.ops.boxes": boxes,
        }
    )
