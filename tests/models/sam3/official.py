"""The official SAM3 neck (``sam3`` package) as the parity reference, every weight re-drawn.

The ``sam3`` package's ``__init__`` imports heavy optional dependencies that
are not installed, so ``sam3/model/necks.py`` and
``sam3/model/position_encoding.py`` are loaded straight from the installed
files. If ``sam3`` is not installed these loaders raise: a missing reference
fails the tests, it never skips them.

The neck is built exactly as ``sam3.model_builder._create_vit_neck`` builds
it (``d_model=256``, ``scale_factors=[4.0, 2.0, 1.0, 0.5]``,
``PositionEmbeddingSine(num_pos_feats=256, normalize=True, temperature=10000)``),
on a stand-in trunk that returns its input as the only feature and says
``channel_list = [1024]`` as the ViT does. Every parameter is re-drawn from a
seeded ``torch.Generator`` in state-dict order: weights ~ N(0, 1/fan_in)
(fan_in = in*kh*kw for Conv2d, in for the k2s2 ConvTranspose2d), biases ~
N(0, 0.02^2), so activations stay O(1) and a dropped bias or a transposed
kernel shows.
"""

from __future__ import annotations

from typing import Dict

import numpy as np
import torch
from torch import nn

from models.sam3.official import (  # noqa: F401  (re-exported for the tests)
    build_official_neck as _build_default, necks_module, position_encoding,
    position_encoding_module)


def build_official_neck(seed: int = 0, in_channels: int = 1024, d_model: int = 256,
                        add_sam2_neck: bool = False) -> nn.Module:
    neck = _build_default(in_channels, d_model, add_sam2_neck)
    redraw(neck, seed)
    return neck.eval()


def redraw(neck: nn.Module, seed: int) -> None:
    """Re-draw every parameter and buffer; anything the rules do not cover raises."""
    gen = torch.Generator().manual_seed(seed)
    modules = dict(neck.named_modules())
    with torch.no_grad():
        for name, tensor in neck.state_dict(keep_vars=True).items():
            owner_name, _, leaf = name.rpartition(".")
            owner = modules[owner_name]
            if isinstance(owner, (nn.Conv2d, nn.ConvTranspose2d)) and leaf == "weight":
                w = tensor.shape
                if isinstance(owner, nn.ConvTranspose2d):
                    fan_in = w[0] * w[2] * w[3] // (owner.stride[0] * owner.stride[1])
                else:
                    fan_in = w[1] * w[2] * w[3]
                std = fan_in ** -0.5
            elif isinstance(owner, (nn.Conv2d, nn.ConvTranspose2d)) and leaf == "bias":
                std = 0.02
            else:
                raise AssertionError(f"no re-draw rule for {name}")
            tensor.copy_(torch.randn(tensor.shape, generator=gen) * std)


def state_dict_numpy(neck: nn.Module, prefix: str = "") -> Dict[str, np.ndarray]:
    return {prefix + k: v.detach().numpy().copy() for k, v in neck.state_dict().items()}


def run_official(neck: nn.Module, feature: np.ndarray):
    """[(features, pos)] per level, numpy float32, in scale order."""
    with torch.no_grad():
        feats, pos, _, _ = neck(torch.from_numpy(feature))
    return [(f.numpy(), p.numpy()) for f, p in zip(feats, pos)]
