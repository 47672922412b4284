"""Reference SAM models built from Meta's official ``segment_anything`` code.

Why re-draw every parameter: a freshly constructed official model leaves
relative-position tables and the absolute position embedding at zero and
LayerNorms at weight 1 / bias 0, so a port could drop or mis-index them and
still match. A trained checkpoint cannot be downloaded here. So every
parameter and persistent buffer is drawn again from a seeded
``torch.Generator``, at scales that keep activations O(1) through all blocks
and make each term visible in the outputs:

=====================================  ======================================
tensor                                 distribution
=====================================  ======================================
Linear / Conv2d weight                 N(0, 1/fan_in), fan_in = in*kh*kw/groups
ConvTranspose2d weight                 N(0, 1/fan_in), fan_in = in*kh*kw/(sh*sw)
Linear / conv bias                     N(0, 0.02^2)
LayerNorm / LayerNorm2d weight         1 + N(0, 0.1^2)
LayerNorm / LayerNorm2d bias           N(0, 0.1^2)
encoder rel_pos_h / rel_pos_w          N(0, (0.5 / sqrt(head_dim))^2): q.R ~ 0.5
encoder pos_embed                      N(0, 0.5^2) (patch tokens are ~N(0, 1))
nn.Embedding weight (tokens, prompts)  N(0, 1)
Fourier gaussian matrix                N(0, 1) (what the official init uses)
pixel_mean / pixel_std                 the config's values (not drawn)
=====================================  ======================================

Tensors are drawn in state-dict order, so a (config, seed) pair always gives
the same weights. Models are constructed on the ``meta`` device and then
materialised, which skips PyTorch's default initialisation (it would be
overwritten anyway): a full ViT-B build plus re-draw takes about two seconds.
A parameter the rules above do not cover raises instead of being left
uninitialised.
"""

from __future__ import annotations

import math
import os
from functools import partial
from typing import Dict, Union

import numpy as np

from . import torchvision_shim

torchvision_shim.install()

import torch  # noqa: E402
from torch import nn  # noqa: E402

import segment_anything  # noqa: E402
from segment_anything import SamPredictor, sam_model_registry  # noqa: E402
from segment_anything.modeling import (  # noqa: E402
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)
from segment_anything.modeling.common import LayerNorm2d  # noqa: E402
from segment_anything.modeling.image_encoder import Attention as EncoderAttention  # noqa: E402
from segment_anything.modeling.prompt_encoder import PositionEmbeddingRandom  # noqa: E402

from models.sam.config import CONFIGS, SamConfig, get_config  # noqa: E402

__all__ = [
    "segment_anything",
    "build_official",
    "build_official_modules",
    "redraw_parameters",
    "save_official_checkpoint",
    "official_predictor",
    "state_dict_numpy",
    "BIAS_STD",
    "NORM_STD",
    "POS_EMBED_STD",
    "REL_POS_SCALE",
]

BIAS_STD = 0.02
NORM_STD = 0.1
POS_EMBED_STD = 0.5
REL_POS_SCALE = 0.5  # rel-pos std = REL_POS_SCALE / sqrt(head_dim)

ConfigLike = Union[str, SamConfig]


def _check_representable(c: SamConfig) -> None:
    """The official classes hard-code some choices; refuse configs that differ."""
    fixed = {
        "decoder_layer_norm_eps": 1e-5,
        "layer_norm_2d_eps": 1e-6,
        "hypernetwork_mlp_depth": 3,
        "num_point_embeddings": 4,
        "encoder_activation": "gelu",
        "mask_downscaling_activation": "gelu",
        "decoder_mlp_activation": "relu",
        "upscaling_activation": "gelu",
        "mask_threshold": Sam.mask_threshold,
        "image_format": Sam.image_format,
    }
    for field_name, value in fixed.items():
        if getattr(c, field_name) != value:
            raise ValueError(
                f"config {c.name!r}: {field_name}={getattr(c, field_name)!r} cannot be built "
                f"from the official classes (they fix it at {value!r})"
            )


def build_official_modules(config: ConfigLike) -> Sam:
    """Construct (default-initialised, eval mode) official modules for ``config``.

    Uses the module classes directly, passing every structural field of the
    config, so it also works for configs the registry does not know. Wrap in
    ``with torch.device("meta"):`` to get shapes without allocating.
    """
    c = get_config(config)
    _check_representable(c)
    g = c.image_embedding_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=c.image_size,
            patch_size=c.patch_size,
            in_chans=c.in_chans,
            embed_dim=c.encoder_embed_dim,
            depth=c.encoder_depth,
            num_heads=c.encoder_num_heads,
            mlp_ratio=c.mlp_ratio,
            out_chans=c.out_chans,
            qkv_bias=c.qkv_bias,
            norm_layer=partial(nn.LayerNorm, eps=c.encoder_layer_norm_eps),
            act_layer=nn.GELU,
            use_abs_pos=c.use_abs_pos,
            use_rel_pos=c.use_rel_pos,
            window_size=c.window_size,
            global_attn_indexes=c.encoder_global_attn_indexes,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=c.prompt_embed_dim,
            image_embedding_size=(g, g),
            input_image_size=(c.image_size, c.image_size),
            mask_in_chans=c.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            transformer_dim=c.prompt_embed_dim,
            transformer=TwoWayTransformer(
                depth=c.decoder_depth,
                embedding_dim=c.prompt_embed_dim,
                num_heads=c.decoder_num_heads,
                mlp_dim=c.decoder_mlp_dim,
                attention_downsample_rate=c.attention_downsample_rate,
            ),
            num_multimask_outputs=c.num_multimask_outputs,
            iou_head_depth=c.iou_head_depth,
            iou_head_hidden_dim=c.iou_head_hidden_dim,
        ),
        pixel_mean=list(c.pixel_mean),
        pixel_std=list(c.pixel_std),
    )
    return sam.eval()


def _rule(owner: nn.Module, attr: str):
    """(mean, std) for one tensor, or None if no rule covers it."""
    if isinstance(owner, nn.Linear):
        if attr == "weight":
            return 0.0, 1.0 / math.sqrt(owner.in_features)
        if attr == "bias":
            return 0.0, BIAS_STD
    if isinstance(owner, nn.Conv2d):
        if attr == "weight":
            kh, kw = owner.kernel_size
            return 0.0, 1.0 / math.sqrt(owner.in_channels // owner.groups * kh * kw)
        if attr == "bias":
            return 0.0, BIAS_STD
    if isinstance(owner, nn.ConvTranspose2d):
        if attr == "weight":
            kh, kw = owner.kernel_size
            sh, sw = owner.stride
            fan_in = owner.in_channels // owner.groups * max(1.0, kh * kw / (sh * sw))
            return 0.0, 1.0 / math.sqrt(fan_in)
        if attr == "bias":
            return 0.0, BIAS_STD
    if isinstance(owner, (nn.LayerNorm, LayerNorm2d)):
        if attr == "weight":
            return 1.0, NORM_STD
        if attr == "bias":
            return 0.0, NORM_STD
    if isinstance(owner, nn.Embedding) and attr == "weight":
        return 0.0, 1.0
    if isinstance(owner, EncoderAttention) and attr in ("rel_pos_h", "rel_pos_w"):
        head_dim = getattr(owner, attr).shape[1]
        return 0.0, REL_POS_SCALE / math.sqrt(head_dim)
    if isinstance(owner, ImageEncoderViT) and attr == "pos_embed":
        return 0.0, POS_EMBED_STD
    if isinstance(owner, PositionEmbeddingRandom) and attr == "positional_encoding_gaussian_matrix":
        return 0.0, 1.0
    return None


@torch.no_grad()
def redraw_parameters(model: Sam, seed: int, config: ConfigLike = None) -> Sam:
    """Overwrite every parameter and persistent buffer of ``model`` in place (see module doc).

    ``pixel_mean`` / ``pixel_std`` (non-persistent) are set from ``config``
    (default: the official values). Returns ``model``.
    """
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    for key, tensor in model.state_dict(keep_vars=True).items():
        owner_name, _, attr = key.rpartition(".")
        owner = model.get_submodule(owner_name) if owner_name else model
        rule = _rule(owner, attr)
        if rule is None:
            raise RuntimeError(
                f"redraw_parameters: no distribution rule for {key!r} "
                f"({type(owner).__name__}.{attr}); add one to tests/support/official_sam.py"
            )
        mean, std = rule
        draw = torch.randn(tuple(tensor.shape), generator=gen, dtype=torch.float32)
        if std != 1.0:
            draw.mul_(std)
        if mean != 0.0:
            draw.add_(mean)
        tensor.data.copy_(draw)
    c = get_config(config) if config is not None else CONFIGS["vit_b"]
    model.pixel_mean.copy_(torch.tensor(c.pixel_mean, dtype=torch.float32).view(-1, 1, 1))
    model.pixel_std.copy_(torch.tensor(c.pixel_std, dtype=torch.float32).view(-1, 1, 1))
    # Anything not in the state dict besides the two pixel buffers would be
    # left uninitialised by to_empty(): make that loud.
    covered = set(model.state_dict().keys()) | {"pixel_mean", "pixel_std"}
    for name, _ in list(model.named_parameters()) + list(model.named_buffers()):
        if name not in covered:
            raise RuntimeError(f"redraw_parameters: tensor {name!r} is not in the state dict")
    return model


def build_official(config: ConfigLike = "vit_b", seed: int = 0) -> Sam:
    """An official ``Sam`` in eval mode with every parameter re-drawn from ``seed``.

    A registry name (``"vit_b"``, ``"vit_l"``, ``"vit_h"``) builds through
    ``sam_model_registry``; a :class:`SamConfig` (e.g. ``small_config()``) or
    ``"small"`` builds the official classes directly.
    """
    if isinstance(config, str) and config in sam_model_registry and config != "default":
        cfg = CONFIGS[config]
        with torch.device("meta"):
            model = sam_model_registry[config]()
    else:
        cfg = get_config(config)
        with torch.device("meta"):
            model = build_official_modules(cfg)
    model = model.to_empty(device="cpu")
    redraw_parameters(model, seed, cfg)
    return model.eval()


def save_official_checkpoint(model: Sam, path: Union[str, os.PathLike]) -> str:
    """Write ``model.state_dict()`` with ``torch.save``: Meta's checkpoint format."""
    path = os.fspath(path)
    torch.save(model.state_dict(), path)
    return path


def official_predictor(model: Sam) -> SamPredictor:
    """The official ``SamPredictor`` around ``model``."""
    return SamPredictor(model)


def state_dict_numpy(model: Sam) -> Dict[str, np.ndarray]:
    """The state dict as float32 numpy arrays (copies), keyed by Meta's names."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}
