"""Structure of the SAM3 detection neck, and the state-dict layout it implies.

Why one module: the builders, the weight extraction, the synthetic weights
and the tests all need the same numbers (trunk width 1024, d_model 256, the
scale of each branch and its index in ``convs``), and they must be exactly the
ones the official ``sam3`` model builder passes to ``Sam3DualViTDetNeck``
(``d_model=256, scale_factors=[4.0, 2.0, 1.0, 0.5]``, a ViT trunk with
``embed_dim=1024``, 1008-pixel images at patch 14, i.e. a 72x72 grid), or an
official checkpoint will not load.

Branch ``i`` of the neck is ``convs.{i}`` in the state dict; its layers, in
order, are listed by :func:`branch_layers` with the module names the official
``nn.Sequential`` uses, so weight names need no remapping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

__all__ = ["NeckConfig", "DEFAULT", "Layer", "branch_layers", "branch_name",
           "expected_branch_shapes", "expected_state_dict_shapes", "SCALE_FACTORS"]

Shape = Tuple[int, ...]

#: The official scale factors, in branch (``convs.{i}``) order.
SCALE_FACTORS: Tuple[float, ...] = (4.0, 2.0, 1.0, 0.5)


@dataclass(frozen=True)
class NeckConfig:
    """Every structural choice of the SAM3 neck (image-only: no SAM2 head)."""

    #: channels of the last trunk feature (``trunk.channel_list[-1]``)
    in_channels: int = 1024
    #: output channels of every level (and of the positional encoding)
    d_model: int = 256
    #: spatial size of the trunk feature (1008 / 14 = 72)
    height: int = 72
    width: int = 72
    batch: int = 1
    scale_factors: Tuple[float, ...] = SCALE_FACTORS
    #: sine positional encoding (PositionEmbeddingSine(num_pos_feats=d_model, normalize=True))
    pos_temperature: float = 10000.0
    pos_eps: float = 1e-6

    def __post_init__(self):
        bad = [s for s in self.scale_factors if s not in SCALE_FACTORS]
        if bad:
            raise ValueError(f"unsupported scale factor(s) {bad}; the neck knows {SCALE_FACTORS}")
        if self.in_channels % 4 or self.d_model % 4:
            raise ValueError("in_channels and d_model must be multiples of 4")

    @property
    def input_shape(self) -> Shape:
        return (self.batch, self.in_channels, self.height, self.width)

    def level_shape(self, scale: float) -> Shape:
        """[B, d_model, h, w] of the level at `scale` (max-pool floors odd sizes)."""
        if scale >= 1:
            h, w = int(self.height * scale), int(self.width * scale)
        else:
            h, w = self.height // 2, self.width // 2
        return (self.batch, self.d_model, h, w)


DEFAULT = NeckConfig()


@dataclass(frozen=True)
class Layer:
    """One parametrised layer of a branch: its module name and kind."""

    name: str  # module name inside convs.{i} (dconv_2x2_0, conv_1x1, ...)
    kind: str  # "deconv" (ConvTranspose2d k2s2) or "conv" (Conv2d)
    in_channels: int
    out_channels: int
    kernel: int  # 2 for deconv, 1 or 3 for conv

    def weight_shape(self) -> Shape:
        k = self.kernel
        if self.kind == "deconv":  # torch ConvTranspose2d: [in, out, kh, kw]
            return (self.in_channels, self.out_channels, k, k)
        return (self.out_channels, self.in_channels, k, k)


def branch_name(scale: float) -> str:
    """Subgraph name of a branch: branch_4x, branch_2x, branch_1x, branch_0_5x."""
    text = f"{scale:g}".replace(".", "_")
    return f"branch_{text}x"


def branch_layers(scale: float, cfg: NeckConfig = DEFAULT) -> Tuple[Layer, ...]:
    """The parametrised layers of the branch at `scale`, in execution order.

    GELU (only in the 4x branch, between the two transposed convolutions) and
    the 2x2 max-pool (0.5x) carry no weights and are not listed.
    """
    dim, d = cfg.in_channels, cfg.d_model
    if scale == 4.0:
        head = (Layer("dconv_2x2_0", "deconv", dim, dim // 2, 2),
                Layer("dconv_2x2_1", "deconv", dim // 2, dim // 4, 2))
        width = dim // 4
    elif scale == 2.0:
        head = (Layer("dconv_2x2", "deconv", dim, dim // 2, 2),)
        width = dim // 2
    elif scale in (1.0, 0.5):
        head, width = (), dim
    else:
        raise ValueError(f"unsupported scale factor {scale}")
    return head + (Layer("conv_1x1", "conv", width, d, 1), Layer("conv_3x3", "conv", d, d, 3))


def expected_branch_shapes(index: int, scale: float,
                           cfg: NeckConfig = DEFAULT) -> Dict[str, Shape]:
    """State-dict name (without the vision-backbone prefix) -> shape for one branch."""
    out: Dict[str, Shape] = {}
    for layer in branch_layers(scale, cfg):
        out[f"convs.{index}.{layer.name}.weight"] = layer.weight_shape()
        out[f"convs.{index}.{layer.name}.bias"] = (layer.out_channels,)
    return out


def expected_state_dict_shapes(cfg: NeckConfig = DEFAULT) -> Dict[str, Shape]:
    """Every neck weight the image-only model reads (``sam2_convs`` excluded)."""
    out: Dict[str, Shape] = {}
    for i, scale in enumerate(cfg.scale_factors):
        out.update(expected_branch_shapes(i, scale, cfg))
    return out
