"""The eight SAM 2 / SAM 2.1 image-model configurations, as Meta's yaml files give them.

Why one module: the Hiera builder, the FPN neck, the decoder, the weight
checks, the synthetic weights and the tests all need the same numbers, and
they must be exactly the ones in ``sam2/configs/sam2/sam2_hiera_*.yaml`` and
``sam2/configs/sam2.1/sam2.1_hiera_*.yaml`` (plus the defaults of the
official constructors those files leave implicit: ``Hiera(q_pool=3,
q_stride=(2, 2), dim_mul=2, head_mul=2, ...)``, ``SAM2Base._build_sam_heads``
and the post-processing overrides of ``sam2.build_sam.build_sam2``), or an
official checkpoint will not load.

The image side of the model (what ``SAM2ImagePredictor.set_image`` keeps)
is fully determined by :class:`Sam2Config`; the per-block structure of the
Hiera trunk (width, heads, window, query pooling) is derived once here by
:meth:`Sam2Config.blocks` with the official rules, so builders never repeat
them.

Only the image size may be changed from the official value (1024): tests
build small models at 256 (every stage grid must tile the first window, so
the size must be a multiple of ``4 * window_spec[0]``, 32 for every config).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, Tuple

from rlx.errors import InputError

__all__ = ["Sam2Config", "BlockSpec", "CONFIGS", "CONFIG_NAMES", "get_config", "canonical_name"]

Shape = Tuple[int, ...]


@dataclass(frozen=True)
class BlockSpec:
    """One Hiera ``MultiScaleBlock``: what its official constructor receives."""

    index: int
    dim: int          # input channels
    dim_out: int      # output channels (dim * 2 on the first block of stages 2-4)
    num_heads: int
    window: int       # window size of the partition (0 = global attention)
    q_stride: int     # query max-pool stride (0 = none; 2 on the first block of stages 2-4)
    stage: int        # 0-based stage the block belongs to

    @property
    def has_proj(self) -> bool:
        """The block changes width: the shortcut goes through ``proj`` (and the pool)."""
        return self.dim != self.dim_out

    @property
    def head_dim(self) -> int:
        return self.dim_out // self.num_heads


@dataclass(frozen=True)
class Sam2Config:
    """Every structural choice of a SAM 2 image model (trunk, neck, SAM heads)."""

    name: str
    version: str  # "2" or "2.1"
    image_size: int = 1024

    # --- Hiera trunk (image_encoder.trunk) -------------------------------------------------
    embed_dim: int = 96
    num_heads: int = 1
    stages: Tuple[int, ...] = (2, 3, 16, 3)
    global_att_blocks: Tuple[int, ...] = (12, 16, 20)
    window_pos_embed_bkg_spatial_size: Tuple[int, int] = (14, 14)
    window_spec: Tuple[int, ...] = (8, 4, 14, 7)
    q_pool: int = 3
    q_stride: Tuple[int, int] = (2, 2)
    dim_mul: float = 2.0
    head_mul: float = 2.0
    mlp_ratio: float = 4.0
    layer_norm_eps: float = 1e-6  # MultiScaleBlock's norm_layer="LayerNorm", eps=1e-6
    patch_kernel: int = 7
    patch_stride: int = 4
    patch_padding: int = 3
    in_chans: int = 3

    # --- FPN neck (image_encoder.neck) -----------------------------------------------------
    d_model: int = 256
    backbone_channel_list: Tuple[int, ...] = (768, 384, 192, 96)
    fpn_top_down_levels: Tuple[int, ...] = (2, 3)
    fpn_interp_model: str = "nearest"
    fuse_type: str = "sum"
    fpn_kernel_size: int = 1
    #: ImageEncoder.scalp: how many of the lowest-resolution levels are dropped
    scalp: int = 1
    # PositionEmbeddingSine(num_pos_feats=256, normalize=True, scale=None, temperature=10000)
    pos_num_feats: int = 256
    pos_normalize: bool = True
    pos_temperature: float = 10000.0

    # --- SAM2Base, image-mode relevant ---------------------------------------------------
    backbone_stride: int = 16
    directly_add_no_mem_embed: bool = True
    use_high_res_features_in_sam: bool = True
    multimask_output_in_sam: bool = True
    iou_prediction_use_sigmoid: bool = True
    pred_obj_scores: bool = True
    pred_obj_scores_mlp: bool = True
    fixed_no_obj_ptr: bool = True
    soft_no_obj_ptr: bool = False
    use_multimask_token_for_obj_ptr: bool = True
    use_obj_ptrs_in_encoder: bool = True
    use_mlp_for_obj_ptr_proj: bool = True
    multimask_output_for_tracking: bool = True
    multimask_min_pt_num: int = 0
    multimask_max_pt_num: int = 1
    use_mask_input_as_output_without_sam: bool = True
    #: SAM 2.1 only: a learned embedding added to memories of frames with no object
    no_obj_embed_spatial: bool = False
    #: SAM 2.1 only (video): temporal position encoding of object pointers
    add_tpos_enc_to_obj_ptrs: bool = False
    proj_tpos_enc_in_obj_ptrs: bool = False
    use_signed_tpos_enc_to_obj_ptrs: bool = False
    num_maskmem: int = 7
    #: memory-encoder output channels (SAM2Base.mem_dim = memory_encoder.out_proj channels)
    mem_dim: int = 64

    # --- SAM prompt encoder / mask decoder (SAM2Base._build_sam_heads) ---------------------
    mask_in_chans: int = 16
    num_multimask_outputs: int = 3
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    # build_sam2(apply_postprocessing=True) overrides (sam_mask_decoder_extra_args)
    dynamic_multimask_via_stability: bool = True
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98

    # --- SAM2Transforms (image preprocessing) ----------------------------------------------
    pixel_mean: Tuple[float, float, float] = (0.485, 0.456, 0.406)
    pixel_std: Tuple[float, float, float] = (0.229, 0.224, 0.225)
    mask_threshold: float = 0.0

    def __post_init__(self):
        if len(self.stages) != len(self.window_spec):
            raise ValueError(f"{self.name}: stages {self.stages} and window_spec "
                             f"{self.window_spec} differ in length")
        if self.channel_list != self.backbone_channel_list:
            raise ValueError(f"{self.name}: trunk channels {self.channel_list} do not match the "
                             f"neck's backbone_channel_list {self.backbone_channel_list}")
        unit = self.patch_stride * self.window_spec[0]
        if self.image_size <= 0 or self.image_size % unit:
            raise InputError(f"{self.name}: image_size {self.image_size} must be a positive "
                             f"multiple of {unit} (patch stride x first window size)")

    # --- derived structure -----------------------------------------------------------------
    @property
    def depth(self) -> int:
        return sum(self.stages)

    @property
    def stage_ends(self) -> Tuple[int, ...]:
        return tuple(sum(self.stages[:i]) - 1 for i in range(1, len(self.stages) + 1))

    @property
    def q_pool_blocks(self) -> Tuple[int, ...]:
        return tuple(x + 1 for x in self.stage_ends[:-1])[: self.q_pool]

    def blocks(self) -> Tuple[BlockSpec, ...]:
        """Every block of the trunk, by the rules of the official ``Hiera.__init__``.

        The window size lags a block: the first block of a stage still uses the
        previous stage's window (on the previous, un-pooled grid).
        """
        out = []
        dim, heads, cur_stage = self.embed_dim, self.num_heads, 1
        for i in range(self.depth):
            dim_out = dim
            window = self.window_spec[cur_stage - 1]
            if i in self.global_att_blocks:
                window = 0
            if i - 1 in self.stage_ends:
                dim_out = int(dim * self.dim_mul)
                heads = int(heads * self.head_mul)
                cur_stage += 1
            q_stride = self.q_stride[0] if i in self.q_pool_blocks else 0
            out.append(BlockSpec(i, dim, dim_out, heads, window, q_stride, cur_stage - 1))
            dim = dim_out
        return tuple(out)

    @property
    def channel_list(self) -> Tuple[int, ...]:
        """Trunk output channels, lowest resolution first (``Hiera.channel_list``)."""
        blocks = self.blocks()
        return tuple(blocks[i].dim_out for i in self.stage_ends[::-1])

    @property
    def patch_grid(self) -> int:
        """Side of the token grid after the patch embedding (S / 4)."""
        return self.image_size // self.patch_stride

    def stage_grid(self, stage: int) -> int:
        """Side of the token grid of a stage (0-based): S/4, S/8, S/16, S/32."""
        return self.patch_grid // self.q_stride[0] ** min(stage, self.q_pool)

    @property
    def num_levels(self) -> int:
        """FPN levels kept after the scalp (3 for every official config)."""
        return len(self.backbone_channel_list) - self.scalp

    @property
    def feature_sizes(self) -> Tuple[int, ...]:
        """Side of each kept level, highest resolution first: (S/4, S/8, S/16)."""
        return tuple(self.stage_grid(s) for s in range(self.num_levels))

    @property
    def image_embedding_size(self) -> int:
        """Side of the image embedding the decoder reads (S / backbone_stride)."""
        return self.image_size // self.backbone_stride

    @property
    def hidden_dim(self) -> int:
        return self.d_model

    def with_image_size(self, image_size: int) -> "Sam2Config":
        return dataclasses.replace(self, image_size=int(image_size))


def _hiera(name: str, version: str, **kw) -> Sam2Config:
    extra = {}
    if version == "2.1":
        extra = dict(no_obj_embed_spatial=True, add_tpos_enc_to_obj_ptrs=True,
                     proj_tpos_enc_in_obj_ptrs=True, use_signed_tpos_enc_to_obj_ptrs=True)
    return Sam2Config(name=name, version=version, **kw, **extra)


_SIZES: Dict[str, dict] = {
    "t": dict(embed_dim=96, num_heads=1, stages=(1, 2, 7, 2), global_att_blocks=(5, 7, 9),
              window_pos_embed_bkg_spatial_size=(7, 7),
              backbone_channel_list=(768, 384, 192, 96)),
    "s": dict(embed_dim=96, num_heads=1, stages=(1, 2, 11, 2), global_att_blocks=(7, 10, 13),
              window_pos_embed_bkg_spatial_size=(7, 7),
              backbone_channel_list=(768, 384, 192, 96)),
    # b+: the Hiera defaults for stages, global blocks, windows and the position table
    "b+": dict(embed_dim=112, num_heads=2, backbone_channel_list=(896, 448, 224, 112)),
    "l": dict(embed_dim=144, num_heads=2, stages=(2, 6, 36, 4), global_att_blocks=(23, 33, 43),
              window_pos_embed_bkg_spatial_size=(7, 7), window_spec=(8, 4, 16, 8),
              backbone_channel_list=(1152, 576, 288, 144)),
}

CONFIGS: Dict[str, Sam2Config] = {}
for _version, _prefix in (("2", "sam2"), ("2.1", "sam2.1")):
    for _size, _kw in _SIZES.items():
        _name = f"{_prefix}_hiera_{_size}"
        CONFIGS[_name] = _hiera(_name, _version, **_kw)

CONFIG_NAMES: Tuple[str, ...] = tuple(CONFIGS)

#: other spellings users type: Meta's checkpoint/file stems and the zoo's model names
_ALIASES = {"b_plus": "b+", "base_plus": "b+", "tiny": "t", "small": "s", "large": "l"}


def canonical_name(name: str) -> str:
    """``sam2.1-hiera-t``, ``sam2.1_hiera_tiny``, ``sam2.1_hiera_t.yaml`` -> ``sam2.1_hiera_t``."""
    text = str(name).strip()
    for suffix in (".yaml", ".pt", ".safetensors"):
        if text.endswith(suffix):
            text = text[: -len(suffix)]
    text = text.rsplit("/", 1)[-1].replace("-", "_").lower()
    head, sep, size = text.rpartition("_hiera_")
    if sep:
        text = f"{head}_hiera_{_ALIASES.get(size, size)}"
    return text


def get_config(name, image_size: int | None = None) -> Sam2Config:
    """The config called `name` (any spelling :func:`canonical_name` knows), or a config as is.

    ``image_size`` overrides the official 1024 (tests use small images).
    """
    if isinstance(name, Sam2Config):
        cfg = name
    else:
        key = canonical_name(name)
        if key not in CONFIGS:
            raise InputError(f"unknown SAM 2 config {name!r}; known: {', '.join(CONFIG_NAMES)}")
        cfg = CONFIGS[key]
    if image_size is not None and image_size != cfg.image_size:
        cfg = cfg.with_image_size(image_size)
    return cfg
