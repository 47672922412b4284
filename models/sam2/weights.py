"""SAM 2 weights: Meta's checkpoints checked against a config, or synthetic ones.

Meta ships SAM 2 / 2.1 as ``.pt`` files holding ``{"model": state_dict}``;
`rlx.weights.WeightStore` reads them without torch (its restricted unpickler
finds the state dict under ``"model"``), and ``.safetensors`` files with the
same key names (``rlx convert sam2.1_hiera_tiny.pt out.safetensors``). Every
SAM 2 subgraph binds to that one store by Meta's names; nothing is renamed.

Image mode reads only part of the model (the image encoder, the prompt
encoder, the mask decoder, ``no_mem_embed``); the video-only tensors
(``memory_attention.*``, ``memory_encoder.*``, ``maskmem_tpos_enc``, ...) may
be present and are ignored. Before the key/shape check, the checkpoint's
trunk (width, number of blocks) is compared with the requested config, so
``sam2.1_hiera_large.pt`` given to ``sam2.1_hiera_t`` fails with one line
naming the config it looks like rather than hundreds of shape errors.

``synthetic_weights`` draws seeded weights at the scales the parity tests use
(`tests/support/official_sam2.py`), by name rules, for any set of names:
tests and benchmarks only; the outputs of such a model mean nothing.
"""

from __future__ import annotations

import os
import re
import zlib
from functools import lru_cache
from typing import Dict, Mapping, Optional, Tuple, Union

import numpy as np

from rlx.errors import CheckpointError
from rlx.weights import WeightStore

from .config import CONFIGS, Sam2Config, get_config

__all__ = ["load_checkpoint", "check_checkpoint", "image_weight_shapes", "prompt_weight_shapes",
           "model_weight_shapes", "trunk_signature",
           "synthetic_weights", "weight_std"]

Checkpoint = Union[str, "os.PathLike[str]", Mapping[str, np.ndarray], WeightStore]
Shape = Tuple[int, ...]

_BLOCK_KEY = re.compile(r"^image_encoder\.trunk\.blocks\.(\d+)\.")
_PATCH = "image_encoder.trunk.patch_embed.proj.weight"

# Scales of the synthetic weights (the families of the parity fixtures' re-draw).
BIAS_STD = 0.02
NORM_STD = 0.1
TABLE_STD = 0.5
#: nn.Embedding tables and the prompt encoder's Fourier matrix: unit normal
_EMBEDDINGS = re.compile(
    r"(point_embeddings\.\d+|not_a_point_embed|no_mask_embed|iou_token|mask_tokens|"
    r"obj_score_token)\.weight$|positional_encoding_gaussian_matrix$")
#: learned tables that are added to O(1) features: N(0, 0.5^2)
_TABLES = re.compile(r"(^|\.)(pos_embed|pos_embed_window|no_mem_embed|no_mem_pos_enc|no_obj_ptr|"
                     r"maskmem_tpos_enc|no_obj_embed_spatial)$")
#: ConvTranspose2d weights ([in, out, kh, kw], kernel == stride == 2: fan-in is `in`)
_TRANSPOSED_CONV = re.compile(r"output_upscaling\.[03]\.weight$")
#: layer-scale vectors of the memory encoder's CXBlocks
_LAYER_SCALE = re.compile(r"\.gamma$")


def _store(checkpoint: Checkpoint) -> WeightStore:
    if isinstance(checkpoint, WeightStore):
        return checkpoint
    if isinstance(checkpoint, (str, os.PathLike)):
        return WeightStore.load(checkpoint)
    if isinstance(checkpoint, Mapping):
        return WeightStore(checkpoint)
    raise CheckpointError(f"SAM 2 weights: expected a checkpoint path or a dict of arrays, "
                          f"got {type(checkpoint).__name__}")


@lru_cache(maxsize=16)
def _image_shapes(c: Sam2Config) -> Tuple[Tuple[str, Shape], ...]:
    from .image_features import build_image_features  # the graph is the list of what it reads

    g = build_image_features(c)
    return tuple((n, tuple(v.shape)) for n, v in g.weights.items())


def image_weight_shapes(config) -> Dict[str, Shape]:
    """Every tensor the image-features graph reads, name -> shape (independent of image size)."""
    c = get_config(config)
    small = c.with_image_size(c.patch_stride * c.window_spec[0] * 8)  # shapes do not depend on it
    return dict(_image_shapes(small))


def prompt_weight_shapes(config) -> Dict[str, Shape]:
    """Every tensor of the official prompt encoder and mask decoder, name -> shape.

    From ``SAM2Base._build_sam_heads``: a SAM prompt encoder (mask_in_chans 16)
    and a SAM mask decoder (two-way transformer: depth 2, MLP 2048, 8 heads,
    cross attention downsampled 2x) plus SAM 2's ``conv_s0`` / ``conv_s1``,
    object-score token and head (an MLP with ``pred_obj_scores_mlp``).
    """
    c = get_config(config)
    d, pe, md = c.d_model, "sam_prompt_encoder", "sam_mask_decoder"
    m, t = c.mask_in_chans, c.num_multimask_outputs + 1
    out: Dict[str, Shape] = {f"{pe}.pe_layer.positional_encoding_gaussian_matrix": (2, d // 2)}
    for i in range(4):
        out[f"{pe}.point_embeddings.{i}.weight"] = (1, d)
    out[f"{pe}.not_a_point_embed.weight"] = (1, d)
    for i, (cin, cout, k) in ((0, (1, m // 4, 2)), (3, (m // 4, m, 2)), (6, (m, d, 1))):
        out[f"{pe}.mask_downscaling.{i}.weight"] = (cout, cin, k, k)
        out[f"{pe}.mask_downscaling.{i}.bias"] = (cout,)
        if i < 6:
            out[f"{pe}.mask_downscaling.{i + 1}.weight"] = (cout,)
            out[f"{pe}.mask_downscaling.{i + 1}.bias"] = (cout,)
    out[f"{pe}.no_mask_embed.weight"] = (1, d)

    def attn(prefix: str, inner: int):
        for proj in ("q_proj", "k_proj", "v_proj"):
            out[f"{prefix}.{proj}.weight"] = (inner, d)
            out[f"{prefix}.{proj}.bias"] = (inner,)
        out[f"{prefix}.out_proj.weight"] = (d, inner)
        out[f"{prefix}.out_proj.bias"] = (d,)

    def norm(prefix: str, n: int = d):
        out[f"{prefix}.weight"] = (n,)
        out[f"{prefix}.bias"] = (n,)

    def mlp(prefix: str, dims):
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            out[f"{prefix}.layers.{i}.weight"] = (b, a)
            out[f"{prefix}.layers.{i}.bias"] = (b,)

    tr = f"{md}.transformer"
    for layer in range(c.decoder_depth):
        p = f"{tr}.layers.{layer}"
        attn(f"{p}.self_attn", d)
        norm(f"{p}.norm1")
        attn(f"{p}.cross_attn_token_to_image", d // 2)
        norm(f"{p}.norm2")
        mlp(f"{p}.mlp", (d, c.decoder_mlp_dim, d))
        norm(f"{p}.norm3")
        norm(f"{p}.norm4")
        attn(f"{p}.cross_attn_image_to_token", d // 2)
    attn(f"{tr}.final_attn_token_to_image", d // 2)
    norm(f"{tr}.norm_final_attn")
    out[f"{md}.iou_token.weight"] = (1, d)
    out[f"{md}.mask_tokens.weight"] = (t, d)
    if c.pred_obj_scores:
        out[f"{md}.obj_score_token.weight"] = (1, d)
    out[f"{md}.output_upscaling.0.weight"] = (d, d // 4, 2, 2)
    out[f"{md}.output_upscaling.0.bias"] = (d // 4,)
    norm(f"{md}.output_upscaling.1", d // 4)
    out[f"{md}.output_upscaling.3.weight"] = (d // 4, d // 8, 2, 2)
    out[f"{md}.output_upscaling.3.bias"] = (d // 8,)
    if c.use_high_res_features_in_sam:
        out[f"{md}.conv_s0.weight"] = (d // 8, d, 1, 1)
        out[f"{md}.conv_s0.bias"] = (d // 8,)
        out[f"{md}.conv_s1.weight"] = (d // 4, d, 1, 1)
        out[f"{md}.conv_s1.bias"] = (d // 4,)
    for i in range(t):
        mlp(f"{md}.output_hypernetworks_mlps.{i}", (d, d, d, d // 8))
    hidden = c.iou_head_hidden_dim
    mlp(f"{md}.iou_prediction_head", (d,) + (hidden,) * (c.iou_head_depth - 1) + (t,))
    if c.pred_obj_scores:
        if c.pred_obj_scores_mlp:
            mlp(f"{md}.pred_obj_score_head", (d, d, d, 1))
        else:
            out[f"{md}.pred_obj_score_head.weight"] = (1, d)
            out[f"{md}.pred_obj_score_head.bias"] = (1,)
    return out


def model_weight_shapes(config) -> Dict[str, Shape]:
    """Everything image mode reads: the image side and the prompt side."""
    out = image_weight_shapes(config)
    out.update(prompt_weight_shapes(config))
    return out


def trunk_signature(tensors: Mapping[str, np.ndarray]) -> Optional[Tuple[int, int]]:
    """(embed dim, number of blocks) of the Hiera trunk in `tensors`, or None if it has none."""
    if _PATCH not in tensors:
        return None
    blocks = {int(m.group(1)) for n in tensors for m in [_BLOCK_KEY.match(n)] if m}
    return int(tensors[_PATCH].shape[0]), (max(blocks) + 1 if blocks else 0)


def _looks_like(sig: Tuple[int, int], version: Optional[str]) -> list:
    names = [n for n, c in CONFIGS.items() if (c.embed_dim, c.depth) == sig]
    if version is not None:
        names = [n for n in names if CONFIGS[n].version == version] or names
    return names


def check_checkpoint(store: WeightStore, config,
                     extra_shapes: Optional[Mapping[str, Shape]] = None) -> None:
    """Raise one `CheckpointError` if `store` does not fit `config`'s image model.

    Checks the trunk's structure first (naming the config the checkpoint looks
    like), then every tensor image mode reads (`model_weight_shapes`) and of
    `extra_shapes` by name, shape and dtype. Video-only tensors are not checked.
    """
    c = get_config(config)
    label = str(store.source) if store.source is not None else "weights"
    sig = trunk_signature(store)
    want = (c.embed_dim, c.depth)
    if sig is not None and sig != want:
        version = "2.1" if "no_obj_embed_spatial" in store else None
        like = _looks_like(sig, version)
        hint = f"; it looks like {' / '.join(like)}" if like else ""
        raise CheckpointError(
            f"{label}: checkpoint does not fit {c.name}: its Hiera trunk has embed dim {sig[0]} "
            f"and {sig[1]} blocks, {c.name} has {want[0]} and {want[1]}{hint} "
            f"(key {_PATCH} has shape {list(store[_PATCH].shape)})")
    expected = model_weight_shapes(c)
    if extra_shapes:
        expected.update({k: tuple(v) for k, v in extra_shapes.items()})
    store.check(expected, what=f"the SAM 2 model {c.name}", allow_unexpected=True)
    bad = [f"{k} ({store[k].dtype})" for k in expected if store[k].dtype.kind != "f"]
    if bad:
        raise CheckpointError(f"{label}: expected float tensors, got: {', '.join(bad[:8])}")


def load_checkpoint(checkpoint: Checkpoint, config,
                    extra_shapes: Optional[Mapping[str, Shape]] = None) -> WeightStore:
    """Read a ``.pt`` (``{"model": state_dict}``) / ``.safetensors`` / mapping and check it.

    Returns the store (Meta's names, read-only arrays) ready to bind to every
    SAM 2 subgraph. Raises `CheckpointError` naming the file and key at fault.
    """
    store = _store(checkpoint)
    check_checkpoint(store, config, extra_shapes)
    return store


def weight_std(name: str, shape: Shape, shapes: Mapping[str, Shape]) -> Tuple[float, float]:
    """(mean, std) of the synthetic draw for one tensor, by its name and shape."""
    if _TABLES.search(name):
        return 0.0, TABLE_STD
    if _EMBEDDINGS.search(name):
        return 0.0, 1.0
    if _LAYER_SCALE.search(name):
        return 0.0, NORM_STD
    if name.endswith(".weight") and len(shape) >= 2:
        if _TRANSPOSED_CONV.search(name):
            return 0.0, shape[0] ** -0.5
        return 0.0, float(np.prod(shape[1:])) ** -0.5
    if name.endswith(".weight") and len(shape) == 1:  # LayerNorm / LayerNorm2d
        return 1.0, NORM_STD
    if name.endswith(".bias"):
        sibling = shapes.get(name[: -len("bias")] + "weight")
        if sibling is not None and len(sibling) == 1:  # a norm's bias
            return 0.0, NORM_STD
        return 0.0, BIAS_STD
    raise CheckpointError(f"synthetic SAM 2 weights: no rule for {name} {list(shape)}")


def synthetic_weights(config, seed: int = 0,
                      shapes: Optional[Mapping[str, Shape]] = None) -> Dict[str, np.ndarray]:
    """Seeded float32 weights for `shapes` (default: everything image mode reads).

    Each tensor has its own generator seeded by (seed, crc32(name)), so adding
    names (the prompt side) never changes the others. Scales: linear / conv
    weights N(0, 1/fan_in), biases N(0, 0.02^2), norms 1 + N(0, 0.1^2) and
    N(0, 0.1^2), position tables and ``no_mem_embed`` N(0, 0.5^2), embeddings
    N(0, 1).
    """
    shapes = dict(model_weight_shapes(config) if shapes is None else shapes)
    out: Dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        mean, std = weight_std(name, tuple(shape), shapes)
        rng = np.random.default_rng([int(seed), zlib.crc32(name.encode())])
        a = rng.standard_normal(tuple(shape), dtype=np.float32) * np.float32(std)
        out[name] = a + np.float32(mean) if mean else a
    return out
