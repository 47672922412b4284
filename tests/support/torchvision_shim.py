"""A minimal stand-in for torchvision, just enough to import ``segment_anything``.

Why: Meta's ``segment_anything`` imports ``torchvision`` at module level
(``transforms.functional.resize`` / ``to_pil_image`` for the image resize and
``ops.boxes`` for the automatic mask generator), but no torchvision build can
be installed beside the pinned torch 2.13.0 CPU wheel here. The reference path
we compare against (``SamPredictor.set_image``) only ever calls

    np.array(resize(to_pil_image(uint8 HxWx3 array), (new_h, new_w)))

and for a PIL input torchvision's ``resize`` is exactly Pillow's
``Image.resize((w, h), BILINEAR)``. So the fake implements precisely that and
raises ``NotImplementedError`` for anything else (tensors, other dtypes, an int
size, extra keyword arguments, the box ops), so an unexpected use shows up as
a loud failure instead of a quietly different reference.

Call :func:`install` before the first ``import segment_anything``. It is
idempotent, and it leaves a real torchvision alone if one is already imported.
"""

from __future__ import annotations

import sys
import types

import numpy as np
from PIL import Image

__all__ = ["install", "installed", "to_pil_image", "resize"]

_MARK = "__rlx_torchvision_shim__"


def _unsupported(what: str):
    raise NotImplementedError(
        f"tests.support.torchvision_shim: {what} is not implemented by the torchvision "
        "stand-in (only to_pil_image(uint8 HxWx3 ndarray) and resize(PIL image, (h, w)) are)"
    )


def to_pil_image(pic, mode=None):
    """torchvision's ``to_pil_image`` for a uint8 HxWx3 numpy array only."""
    if mode is not None:
        _unsupported(f"to_pil_image(mode={mode!r})")
    if not isinstance(pic, np.ndarray):
        _unsupported(f"to_pil_image on {type(pic).__name__}")
    if pic.dtype != np.uint8 or pic.ndim != 3 or pic.shape[2] != 3:
        _unsupported(f"to_pil_image on an array of shape {pic.shape} dtype {pic.dtype}")
    return Image.fromarray(pic)


def resize(img, size, *args, **kwargs):
    """torchvision's ``resize`` for a PIL image and an explicit (h, w) size only."""
    if args or kwargs:
        _unsupported(f"resize with extra arguments {args!r} {sorted(kwargs)!r}")
    if not isinstance(img, Image.Image):
        _unsupported(f"resize on {type(img).__name__}")
    if not isinstance(size, (list, tuple)) or len(size) != 2:
        _unsupported(f"resize with size={size!r} (only an explicit (h, w) pair)")
    h, w = (int(v) for v in size)
    return img.resize((w, h), Image.Resampling.BILINEAR)


def _batched_nms(*args, **kwargs):
    _unsupported("torchvision.ops.boxes.batched_nms")


def _box_area(*args, **kwargs):
    _unsupported("torchvision.ops.boxes.box_area")


def _module(name: str, package: bool, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name, f"rlx test stand-in for {name} (see tests/support/torchvision_shim.py)")
    if package:
        mod.__path__ = []  # lets the import system treat it as a package
    setattr(mod, _MARK, True)
    for key, value in attrs.items():
        setattr(mod, key, value)
    return mod


def installed() -> bool:
    """True if our stand-in (not a real torchvision) is in ``sys.modules``."""
    return getattr(sys.modules.get("torchvision"), _MARK, False)


def install() -> None:
    """Put the fake torchvision modules into ``sys.modules`` (idempotent)."""
    existing = sys.modules.get("torchvision")
    if existing is not None:
        return  # ours already, or a real torchvision someone imported: leave it
    functional = _module("torchvision.transforms.functional", False,
                         resize=resize, to_pil_image=to_pil_image)
    transforms = _module("torchvision.transforms", True, functional=functional)
    boxes = _module("torchvision.ops.boxes", False, batched_nms=_batched_nms, box_area=_box_area)
    ops = _module("torchvision.ops", True, boxes=boxes)
    root = _module("torchvision", True, transforms=transforms, ops=ops, __version__="0.0+rlx-shim")
    sys.modules.update(
        {
            "torchvision": root,
            "torchvision.transforms": transforms,
            "torchvision.transforms.functional": functional,
            "torchvision.ops": ops,
            "torchvision.ops.boxes": boxes,
        }
    )
