"""Structural hyper-parameters of SAM v1, and the state-dict layout they imply.

Why this module exists: every other part of the SAM port (graph builders,
weight mapping, host-side glue, tests) needs the same numbers, and they must
be exactly the ones Meta's ``sam_model_registry`` uses, or an official
checkpoint will not load. Keeping them in one frozen dataclass, and deriving
the full list of expected state-dict keys and shapes from it, lets a test
compare the whole description against the official modules in one go.

Three named configs mirror the registry (``vit_b``, ``vit_l``, ``vit_h``);
:func:`small_config` is a tiny variant for fast tests that still keeps every
code path of the real model alive (windowed blocks whose token grid needs
padding, global blocks, relative positions in both kinds, a multi-layer
two-way transformer, multimask outputs).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, Tuple

__all__ = [
    "SamConfig",
    "CONFIGS",
    "small_config",
    "get_config",
    "expected_state_dict_shapes",
]

Shape = Tuple[int, ...]


@dataclass(frozen=True)
class SamConfig:
    """Every structural choice of one SAM v1 model.

    Field groups follow the three official sub-modules. Epsilons are listed
    separately because they differ between parts: the ViT blocks use
    ``LayerNorm(eps=1e-6)``, every ``LayerNorm2d`` (neck, mask downscaling,
    output upscaling) uses 1e-6, while the two-way transformer uses plain
    ``nn.LayerNorm`` with PyTorch's default 1e-5.
    """

    name: str
    # --- image encoder (ViT backbone + neck) ---
    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: Tuple[int, ...]
    image_size: int = 1024
    patch_size: int = 16
    in_chans: int = 3
    window_size: int = 14
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    use_abs_pos: bool = True
    use_rel_pos: bool = True
    encoder_layer_norm_eps: float = 1e-6
    out_chans: int = 256
    # LayerNorm2d (neck, mask downscaling, output upscaling)
    layer_norm_2d_eps: float = 1e-6
    # --- prompt encoder ---
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    num_point_embeddings: int = 4  # negative point, positive point, 2 box corners
    # --- mask decoder ---
    decoder_depth: int = 2
    decoder_num_heads: int = 8
    decoder_mlp_dim: int = 2048
    attention_downsample_rate: int = 2
    decoder_layer_norm_eps: float = 1e-5
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    hypernetwork_mlp_depth: int = 3
    # --- activations (GELU is the exact erf form: nn.GELU() default) ---
    encoder_activation: str = "gelu"
    mask_downscaling_activation: str = "gelu"
    decoder_mlp_activation: str = "relu"
    upscaling_activation: str = "gelu"
    # --- host side ---
    pixel_mean: Tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: Tuple[float, float, float] = (58.395, 57.12, 57.375)
    mask_threshold: float = 0.0
    image_format: str = "RGB"

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "encoder_global_attn_indexes", tuple(int(i) for i in self.encoder_global_attn_indexes)
        )
        object.__setattr__(self, "pixel_mean", tuple(float(v) for v in self.pixel_mean))
        object.__setattr__(self, "pixel_std", tuple(float(v) for v in self.pixel_std))
        self._validate()

    def _validate(self) -> None:
        def need(cond: bool, what: str) -> None:
            if not cond:
                raise ValueError(f"SamConfig {self.name!r}: {what}")

        need(self.image_size % self.patch_size == 0,
             f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        need(self.encoder_embed_dim % self.encoder_num_heads == 0,
             f"encoder_embed_dim {self.encoder_embed_dim} is not divisible by "
             f"encoder_num_heads {self.encoder_num_heads}")
        need(self.window_size > 0, f"window_size must be positive, got {self.window_size}")
        gi = self.encoder_global_attn_indexes
        need(len(set(gi)) == len(gi) and all(0 <= i < self.encoder_depth for i in gi),
             f"encoder_global_attn_indexes {gi} must be distinct block indexes in "
             f"[0, {self.encoder_depth})")
        need(self.out_chans == self.prompt_embed_dim,
             f"out_chans {self.out_chans} must equal prompt_embed_dim {self.prompt_embed_dim} "
             "(the decoder consumes the neck output directly)")
        need(self.prompt_embed_dim % 8 == 0,
             f"prompt_embed_dim {self.prompt_embed_dim} must be a multiple of 8 "
             "(output upscaling divides it by 4 and 8; Fourier features by 2)")
        need(self.mask_in_chans % 4 == 0,
             f"mask_in_chans {self.mask_in_chans} must be a multiple of 4")
        internal = self.prompt_embed_dim // self.attention_downsample_rate
        need(self.prompt_embed_dim % self.attention_downsample_rate == 0
             and internal % self.decoder_num_heads == 0
             and self.prompt_embed_dim % self.decoder_num_heads == 0,
             f"decoder_num_heads {self.decoder_num_heads} must divide prompt_embed_dim "
             f"{self.prompt_embed_dim} and its downsampled size {internal}")
        need(len(self.pixel_mean) == 3 and len(self.pixel_std) == 3,
             "pixel_mean and pixel_std need 3 values")
        need(self.image_format in ("RGB", "BGR"), f"image_format {self.image_format!r}")

    # ----- derived sizes -------------------------------------------------
    @property
    def image_embedding_size(self) -> int:
        """Side of the square token grid / image embedding (64 for 1024/16)."""
        return self.image_size // self.patch_size

    @property
    def encoder_head_dim(self) -> int:
        return self.encoder_embed_dim // self.encoder_num_heads

    @property
    def encoder_mlp_dim(self) -> int:
        # Official code truncates: int(dim * mlp_ratio).
        return int(self.encoder_embed_dim * self.mlp_ratio)

    @property
    def mask_input_size(self) -> int:
        """Side of the low-res mask prompt (and of the decoder's mask logits)."""
        return 4 * self.image_embedding_size

    @property
    def low_res_mask_size(self) -> int:
        return 4 * self.image_embedding_size

    @property
    def num_mask_tokens(self) -> int:
        return self.num_multimask_outputs + 1

    @property
    def decoder_cross_attn_dim(self) -> int:
        """Internal width of the downsampled cross attentions."""
        return self.prompt_embed_dim // self.attention_downsample_rate

    @property
    def num_pos_feats(self) -> int:
        """Columns of the Fourier gaussian matrix (half the prompt embedding)."""
        return self.prompt_embed_dim // 2

    def block_window_size(self, index: int) -> int:
        """Window of encoder block ``index``; 0 means global attention."""
        return 0 if index in self.encoder_global_attn_indexes else self.window_size

    def block_rel_pos_len(self, index: int) -> int:
        """Rows of that block's rel_pos_h / rel_pos_w tables."""
        side = self.block_window_size(index) or self.image_embedding_size
        return 2 * side - 1


CONFIGS: Dict[str, SamConfig] = {
    "vit_b": SamConfig(
        name="vit_b",
        encoder_embed_dim=768,
        encoder_depth=12,
        encoder_num_heads=12,
        encoder_global_attn_indexes=(2, 5, 8, 11),
    ),
    "vit_l": SamConfig(
        name="vit_l",
        encoder_embed_dim=1024,
        encoder_depth=24,
        encoder_num_heads=16,
        encoder_global_attn_indexes=(5, 11, 17, 23),
    ),
    "vit_h": SamConfig(
        name="vit_h",
        encoder_embed_dim=1280,
        encoder_depth=32,
        encoder_num_heads=16,
        encoder_global_attn_indexes=(7, 15, 23, 31),
    ),
}


def small_config(**overrides) -> SamConfig:
    """A tiny SAM for fast tests, built from the same official classes.

    Choices and why:
      * image 256 / patch 16 gives a 16x16 token grid, so 14-token windows
        must pad 16 -> 28 (4 windows): the padding path stays live;
      * depth 4 with global blocks (1, 3): windowed and global blocks alternate
        and both carry rel-pos tables (27 and 31 rows);
      * prompt dim 32 with 4 decoder heads: cross attentions run at 16 wide
        (4 per head), self attention at 8 per head; upscaling goes 32 -> 8 -> 4;
      * mlp / IoU widths are shrunk but the depths (2 layers, 3-layer heads,
        3 multimask outputs) are the real ones.
    """
    base = SamConfig(
        name="small",
        encoder_embed_dim=64,
        encoder_depth=4,
        encoder_num_heads=2,
        encoder_global_attn_indexes=(1, 3),
        image_size=256,
        out_chans=32,
        prompt_embed_dim=32,
        mask_in_chans=8,
        decoder_num_heads=4,
        decoder_mlp_dim=64,
        iou_head_hidden_dim=32,
    )
    return replace(base, **overrides) if overrides else base


def get_config(name_or_config) -> SamConfig:
    """Resolve ``"vit_b"`` / ``"vit_l"`` / ``"vit_h"`` / ``"small"`` or pass a config through."""
    if isinstance(name_or_config, SamConfig):
        return name_or_config
    if name_or_config == "small":
        return small_config()
    try:
        return CONFIGS[name_or_config]
    except (KeyError, TypeError):
        known = ", ".join(sorted(CONFIGS) + ["small"])
        raise ValueError(f"unknown SAM config {name_or_config!r}; known: {known}") from None


def _linear(out: Dict[str, Shape], prefix: str, n_in: int, n_out: int, bias: bool = True) -> None:
    out[f"{prefix}.weight"] = (n_out, n_in)
    if bias:
        out[f"{prefix}.bias"] = (n_out,)


def _norm(out: Dict[str, Shape], prefix: str, n: int) -> None:
    out[f"{prefix}.weight"] = (n,)
    out[f"{prefix}.bias"] = (n,)


def _mlp(out: Dict[str, Shape], prefix: str, n_in: int, hidden: int, n_out: int, depth: int) -> None:
    dims = [n_in] + [hidden] * (depth - 1) + [n_out]
    for i in range(depth):
        _linear(out, f"{prefix}.layers.{i}", dims[i], dims[i + 1])


def _attention(out: Dict[str, Shape], prefix: str, dim: int, internal: int) -> None:
    for proj in ("q_proj", "k_proj", "v_proj"):
        _linear(out, f"{prefix}.{proj}", dim, internal)
    _linear(out, f"{prefix}.out_proj", internal, dim)


def expected_state_dict_shapes(config) -> Dict[str, Shape]:
    """Every key of the official ``Sam.state_dict()`` for ``config``, with its shape.

    Keys come in the order PyTorch emits them (a module's own parameters and
    buffers before its children's), so the result can also serve as the
    canonical key order of a checkpoint. ``pixel_mean``/``pixel_std`` are
    non-persistent buffers and are not part of the state dict.
    """
    c = get_config(config)
    out: Dict[str, Shape] = {}
    e, d = c.encoder_embed_dim, c.prompt_embed_dim
    g = c.image_embedding_size

    # Image encoder
    p = "image_encoder"
    if c.use_abs_pos:
        out[f"{p}.pos_embed"] = (1, g, g, e)
    out[f"{p}.patch_embed.proj.weight"] = (e, c.in_chans, c.patch_size, c.patch_size)
    out[f"{p}.patch_embed.proj.bias"] = (e,)
    for i in range(c.encoder_depth):
        b = f"{p}.blocks.{i}"
        _norm(out, f"{b}.norm1", e)
        if c.use_rel_pos:
            out[f"{b}.attn.rel_pos_h"] = (c.block_rel_pos_len(i), c.encoder_head_dim)
            out[f"{b}.attn.rel_pos_w"] = (c.block_rel_pos_len(i), c.encoder_head_dim)
        _linear(out, f"{b}.attn.qkv", e, 3 * e, bias=c.qkv_bias)
        _linear(out, f"{b}.attn.proj", e, e)
        _norm(out, f"{b}.norm2", e)
        _linear(out, f"{b}.mlp.lin1", e, c.encoder_mlp_dim)
        _linear(out, f"{b}.mlp.lin2", c.encoder_mlp_dim, e)
    out[f"{p}.neck.0.weight"] = (c.out_chans, e, 1, 1)
    _norm(out, f"{p}.neck.1", c.out_chans)
    out[f"{p}.neck.2.weight"] = (c.out_chans, c.out_chans, 3, 3)
    _norm(out, f"{p}.neck.3", c.out_chans)

    # Prompt encoder
    p = "prompt_encoder"
    out[f"{p}.pe_layer.positional_encoding_gaussian_matrix"] = (2, c.num_pos_feats)
    for i in range(c.num_point_embeddings):
        out[f"{p}.point_embeddings.{i}.weight"] = (1, d)
    out[f"{p}.not_a_point_embed.weight"] = (1, d)
    m4 = c.mask_in_chans // 4
    out[f"{p}.mask_downscaling.0.weight"] = (m4, 1, 2, 2)
    out[f"{p}.mask_downscaling.0.bias"] = (m4,)
    _norm(out, f"{p}.mask_downscaling.1", m4)
    out[f"{p}.mask_downscaling.3.weight"] = (c.mask_in_chans, m4, 2, 2)
    out[f"{p}.mask_downscaling.3.bias"] = (c.mask_in_chans,)
    _norm(out, f"{p}.mask_downscaling.4", c.mask_in_chans)
    out[f"{p}.mask_downscaling.6.weight"] = (d, c.mask_in_chans, 1, 1)
    out[f"{p}.mask_downscaling.6.bias"] = (d,)
    out[f"{p}.no_mask_embed.weight"] = (1, d)

    # Mask decoder
    p = "mask_decoder"
    t = f"{p}.transformer"
    for i in range(c.decoder_depth):
        b = f"{t}.layers.{i}"
        _attention(out, f"{b}.self_attn", d, d)
        _norm(out, f"{b}.norm1", d)
        _attention(out, f"{b}.cross_attn_token_to_image", d, c.decoder_cross_attn_dim)
        _norm(out, f"{b}.norm2", d)
        _linear(out, f"{b}.mlp.lin1", d, c.decoder_mlp_dim)
        _linear(out, f"{b}.mlp.lin2", c.decoder_mlp_dim, d)
        _norm(out, f"{b}.norm3", d)
        _norm(out, f"{b}.norm4", d)
        _attention(out, f"{b}.cross_attn_image_to_token", d, c.decoder_cross_attn_dim)
    _attention(out, f"{t}.final_attn_token_to_image", d, c.decoder_cross_attn_dim)
    _norm(out, f"{t}.norm_final_attn", d)
    out[f"{p}.iou_token.weight"] = (1, d)
    out[f"{p}.mask_tokens.weight"] = (c.num_mask_tokens, d)
    # ConvTranspose2d weights are [in, out, kh, kw].
    out[f"{p}.output_upscaling.0.weight"] = (d, d // 4, 2, 2)
    out[f"{p}.output_upscaling.0.bias"] = (d // 4,)
    _norm(out, f"{p}.output_upscaling.1", d // 4)
    out[f"{p}.output_upscaling.3.weight"] = (d // 4, d // 8, 2, 2)
    out[f"{p}.output_upscaling.3.bias"] = (d // 8,)
    for i in range(c.num_mask_tokens):
        _mlp(out, f"{p}.output_hypernetworks_mlps.{i}", d, d, d // 8, c.hypernetwork_mlp_depth)
    _mlp(out, f"{p}.iou_prediction_head", d, c.iou_head_hidden_dim, c.num_mask_tokens,
         c.iou_head_depth)
    return out
