"""The official ``SAM2ImagePredictor`` (sam2 1.1.0) as the reference of the predictor tests.

``sam2.sam2_image_predictor`` imports ``sam2.utils.transforms``, whose
``SAM2Transforms`` needs three torchvision transforms; torchvision cannot be
installed beside the pinned torch here. This module adds exactly those three
to the project's torchvision stand-in (`tests.support.torchvision_shim`),
written from torchvision's documented tensor behaviour:

* ``ToTensor()`` on an HxWxC uint8 array: ``CHW`` float32 divided by 255;
* ``Resize((h, w))`` on a float ``CHW`` tensor: ``F.interpolate(mode="bilinear",
  align_corners=False, antialias=True)`` (torchvision's default for tensors
  since 0.17; sam2 1.1.0 requires torchvision >= 0.20);
* ``Normalize(mean, std)``: ``(x - mean) / std`` per channel.

Any other use raises. Then the official predictor runs unmodified:
``set_image`` (its own transforms and ``forward_image``), ``predict``
(``_prep_prompts``, the prompt encoder, the mask decoder with dynamic
multimask, ``postprocess_masks``).

The official predictor hard-codes the feature sizes of a 1024 image
(``_bb_feat_sizes``); for the small test images they are set from the model.
"""

from __future__ import annotations

import sys
from typing import List

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.support import torchvision_shim

__all__ = ["official_predictor"]


class _ToTensor:
    def __call__(self, pic):
        if not isinstance(pic, np.ndarray) or pic.dtype != np.uint8 or pic.ndim != 3:
            raise NotImplementedError(f"stand-in ToTensor: only HxWxC uint8 arrays, got "
                                      f"{type(pic).__name__}")
        return torch.from_numpy(pic.transpose(2, 0, 1).copy()).float().div(255)


class _Resize(nn.Module):
    def __init__(self, size):
        super().__init__()
        if not isinstance(size, (list, tuple)) or len(size) != 2:
            raise NotImplementedError(f"stand-in Resize: only an explicit (h, w), got {size!r}")
        self.size: List[int] = [int(size[0]), int(size[1])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x.unsqueeze(0), size=self.size, mode="bilinear",
                             align_corners=False, antialias=True).squeeze(0)


class _Normalize(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.mean: List[float] = [float(v) for v in mean]
        self.std: List[float] = [float(v) for v in std]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=x.dtype).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(-1, 1, 1)
        return (x - mean) / std


def _install() -> None:
    torchvision_shim.install()
    transforms = sys.modules["torchvision.transforms"]
    if not torchvision_shim.installed():
        return  # a real torchvision
    for name, value in (("ToTensor", _ToTensor), ("Resize", _Resize), ("Normalize", _Normalize)):
        if not hasattr(transforms, name):
            setattr(transforms, name, value)


def official_predictor(model, **kwargs):
    """``SAM2ImagePredictor(model, **kwargs)`` with feature sizes fitting ``model.image_size``."""
    _install()
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    pred = SAM2ImagePredictor(model, **kwargs)
    s = int(model.image_size)
    pred._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]
    return pred
