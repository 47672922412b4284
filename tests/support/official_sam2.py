"""The official SAM 2 / SAM 2.1 model (``sam2`` 1.1.0) as the parity reference, every weight re-drawn.

The model is built the way users build it, ``sam2.build_sam.build_sam2``
with Meta's config file (``configs/sam2.1/sam2.1_hiera_t.yaml``, ...) and its
post-processing overrides, on the CPU, in eval mode; only ``model.image_size``
may be overridden (small test images). Nothing of the official image path
needs torchvision (only ``sam2.utils.transforms`` does, which the parity
tests do not use), so no stand-in is installed here; if ``sam2`` or hydra is
missing this module fails to import and the tests fail, never skip.

Why re-draw: a fresh official model leaves the Hiera position tables
(``pos_embed``, ``pos_embed_window``) at zero and ``no_mem_embed`` near zero,
LayerNorms at weight 1 / bias 0, so a port could drop or mis-tile them and
still match. Every parameter and persistent buffer is drawn again from one
seeded ``torch.Generator``, in state-dict order, so (config, image size, seed)
always gives the same weights:

=============================================  ==================================
tensor                                         distribution
=============================================  ==================================
Linear / Conv2d weight                         N(0, 1/fan_in), fan_in = in*kh*kw/groups
ConvTranspose2d weight                         N(0, 1/fan_in), fan_in = in*kh*kw/(sh*sw)
Linear / Conv2d / ConvTranspose2d bias         N(0, 0.02^2)
LayerNorm / LayerNorm2d weight                 1 + N(0, 0.1^2)
LayerNorm / LayerNorm2d bias                   N(0, 0.1^2)
Hiera pos_embed, pos_embed_window              N(0, 0.5^2) (patch tokens are ~N(0, 1))
SAM2Base no_mem_embed, no_obj_ptr, ... tables  N(0, 0.5^2)
nn.Embedding weight (tokens, prompts)          N(0, 1)
prompt encoder's Fourier gaussian matrix       N(0, 1) (what the official init uses)
memory-encoder CXBlock gamma (layer scale)     N(0, 0.1^2)
=============================================  ==================================

A tensor no rule covers raises, so nothing is left at its default.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn

from sam2.build_sam import build_sam2  # noqa: E402  (imports hydra and registers the configs)
from sam2.modeling.sam2_base import SAM2Base  # noqa: E402
from sam2.modeling.sam2_utils import LayerNorm2d  # noqa: E402

from models.sam2.config import canonical_name, get_config

__all__ = ["official_sam2", "config_file", "redraw", "state_dict_numpy", "official_image_features",
           "write_checkpoint"]

#: SAM2Base's own tensors (not inside a sub-module) re-drawn as N(0, 0.5^2)
_BASE_TABLES = ("no_mem_embed", "no_mem_pos_enc", "no_obj_ptr", "maskmem_tpos_enc",
                "no_obj_embed_spatial")


def config_file(config_name: str) -> str:
    """Meta's config path for a config name: ``configs/sam2.1/sam2.1_hiera_t.yaml``."""
    name = canonical_name(config_name)
    cfg = get_config(name)  # raises on an unknown name
    folder = "sam2.1" if cfg.version == "2.1" else "sam2"
    return f"configs/{folder}/{name}.yaml"


def official_sam2(config_name: str, seed: int = 0, image_size: Optional[int] = None) -> SAM2Base:
    """The official SAM2Base for `config_name`, every tensor re-drawn from `seed`, eval mode."""
    overrides = [] if image_size is None else [f"++model.image_size={int(image_size)}"]
    model = build_sam2(config_file(config_name), ckpt_path=None, device="cpu", mode="eval",
                       hydra_overrides_extra=overrides)
    redraw(model, seed)
    return model.eval()


def _std_for(owner: nn.Module, owner_name: str, leaf: str, shape) -> Tuple[float, float]:
    """(mean, std) of the re-draw for one tensor; raises when no rule applies."""
    if isinstance(owner, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
        if leaf == "bias":
            return 0.0, 0.02
        if leaf == "weight":
            if isinstance(owner, nn.Linear):
                fan_in = shape[1]
            elif isinstance(owner, nn.ConvTranspose2d):
                fan_in = shape[0] * shape[2] * shape[3] // (owner.stride[0] * owner.stride[1])
            else:
                fan_in = shape[1] * shape[2] * shape[3]
            return 0.0, fan_in ** -0.5
    if isinstance(owner, (nn.LayerNorm, LayerNorm2d)):
        if leaf == "weight":
            return 1.0, 0.1
        if leaf == "bias":
            return 0.0, 0.1
    if isinstance(owner, nn.Embedding) and leaf == "weight":
        return 0.0, 1.0
    kind = type(owner).__name__
    if kind == "Hiera" and leaf in ("pos_embed", "pos_embed_window"):
        return 0.0, 0.5
    if isinstance(owner, SAM2Base) and leaf in _BASE_TABLES:
        return 0.0, 0.5
    if kind == "PositionEmbeddingRandom" and leaf == "positional_encoding_gaussian_matrix":
        return 0.0, 1.0
    if kind == "CXBlock" and leaf == "gamma":
        return 0.0, 0.1
    raise AssertionError(f"no re-draw rule for {owner_name}.{leaf} ({kind})")


def redraw(model: nn.Module, seed: int) -> None:
    """Re-draw every parameter and buffer of `model` in state-dict order."""
    gen = torch.Generator().manual_seed(int(seed))
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, tensor in model.state_dict(keep_vars=True).items():
            owner_name, _, leaf = name.rpartition(".")
            mean, std = _std_for(modules[owner_name], owner_name, leaf, tuple(tensor.shape))
            tensor.copy_(torch.randn(tensor.shape, generator=gen) * std + mean)


def state_dict_numpy(model: nn.Module) -> Dict[str, np.ndarray]:
    """The model's state dict as float32 numpy arrays (Meta's key names)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def write_checkpoint(model: nn.Module, path) -> None:
    """Save as Meta's checkpoints are saved: ``torch.save({"model": state_dict}, path)``."""
    torch.save({"model": model.state_dict()}, str(path))


def official_image_features(model: SAM2Base, image: np.ndarray) -> Dict[str, np.ndarray]:
    """What ``SAM2ImagePredictor.set_image`` stores in ``_features``, for a normalized image.

    `image` is the model input ``[1, 3, S, S]`` float32 (after SAM2Transforms).
    Follows ``set_image`` step by step, except that the level sizes come from
    the features themselves (the predictor hard-codes those of a 1024 image).
    Returns ``high_res_0`` ``[1, C, S/4, S/4]`` (after conv_s0), ``high_res_1``
    ``[1, C, S/8, S/8]`` (after conv_s1) and ``image_embed`` ``[1, C, S/16, S/16]``
    (plus ``no_mem_embed``).
    """
    with torch.no_grad():
        backbone_out = model.forward_image(torch.from_numpy(np.ascontiguousarray(image)))
        _, vision_feats, _, feat_sizes = model._prepare_backbone_features(backbone_out)
        if model.directly_add_no_mem_embed:
            vision_feats[-1] = vision_feats[-1] + model.no_mem_embed
        feats = [feat.permute(1, 2, 0).reshape(1, -1, *size)
                 for feat, size in zip(vision_feats, feat_sizes)]
    return {"high_res_0": feats[0].numpy(), "high_res_1": feats[1].numpy(),
            "image_embed": feats[2].numpy()}
