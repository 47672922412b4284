"""SAM weights: official checkpoints checked against a config, or synthetic ones.

Checkpoints are read by `rlx.weights` (Meta's ``.pth`` without torch, or
``.safetensors`` with the same key names, e.g. candle's ``lmz/candle-sam``
files) into one `WeightStore` keyed by Meta's state-dict names; every SAM
subgraph binds to that store directly.

Before the generic key/shape check, the checkpoint's image-encoder structure
(embedding width, number of blocks, relative-position table lengths) is
compared with the requested config. The common mistake -- ``sam_vit_l``
weights given to the ``vit_b`` model -- would otherwise produce hundreds of
shape errors; instead it produces one line naming the config the checkpoint
looks like.

``checkpoint=None`` builds *synthetic* weights: seeded normal draws at the
scales of a trained model (so activations stay O(1) through all blocks and
every term, position tables included, matters). They are for tests and
benchmarks only; the model builder announces them with a
:class:`SyntheticWeightsWarning`.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from rlx.errors import CheckpointError
from rlx.weights import WeightStore

from .config import CONFIGS, SamConfig, expected_state_dict_shapes, get_config

__all__ = [
    "load_checkpoint",
    "check_checkpoint",
    "encoder_signature",
    "synthetic_weights",
    "SyntheticWeightsWarning",
]

_BLOCK_KEY = re.compile(r"^image_encoder\.blocks\.(\d+)\.")

# Scales of the synthetic weights (the same families as the parity fixtures).
BIAS_STD = 0.02
NORM_STD = 0.1
POS_EMBED_STD = 0.5
REL_POS_SCALE = 0.5  # rel-pos std = REL_POS_SCALE / sqrt(head_dim)

#: 2-D tensors that are embeddings (unit normal), not linear weights
_EMBEDDINGS = re.compile(
    r"(point_embeddings\.\d+|not_a_point_embed|no_mask_embed|iou_token|mask_tokens)\.weight$"
    r"|positional_encoding_gaussian_matrix$")
#: ConvTranspose2d weights ([in, out, kh, kw]; fan-in is `in` for kernel == stride)
_TRANSPOSED_CONV = re.compile(r"output_upscaling\.\d+\.weight$")


class SyntheticWeightsWarning(UserWarning):
    """A SAM model runs on random weights: its outputs mean nothing."""


# Every model built on synthetic weights must say so, not just the first one.
warnings.simplefilter("always", SyntheticWeightsWarning)


# ---- structure of the image encoder ------------------------------------------------------

Signature = Tuple[int, int, int, Tuple[int, ...]]


def _config_signature(c: SamConfig) -> Signature:
    """(embed dim, blocks, head dim, rel-pos rows per block) of a config."""
    lens = tuple(c.block_rel_pos_len(i) for i in range(c.encoder_depth)) if c.use_rel_pos else ()
    return c.encoder_embed_dim, c.encoder_depth, c.encoder_head_dim, lens


def encoder_signature(tensors: Mapping[str, np.ndarray]) -> Optional[Signature]:
    """The same tuple read off a checkpoint, or None if it has no recognisable encoder."""
    patch = tensors.get("image_encoder.patch_embed.proj.weight")
    if patch is None or len(patch.shape) != 4:
        return None
    blocks = {int(m.group(1)) for k in tensors for m in [_BLOCK_KEY.match(k)] if m}
    depth = max(blocks) + 1 if blocks else 0
    lens, head_dim = [], 0
    for i in range(depth):
        table = tensors.get(f"image_encoder.blocks.{i}.attn.rel_pos_h")
        if table is None or len(table.shape) != 2:
            lens = None
            break
        lens.append(int(table.shape[0]))
        head_dim = int(table.shape[1])
    return int(patch.shape[0]), depth, head_dim, tuple(lens) if lens is not None else None


def _describe(sig: Signature) -> str:
    embed, depth, head_dim, _ = sig
    heads = f", {embed // head_dim} heads" if head_dim and embed % head_dim == 0 else ""
    return f"image encoder embed dim {embed}, {depth} blocks{heads}"


def _check_model_size(store: WeightStore, c: SamConfig, label: str) -> None:
    found = encoder_signature(store)
    if found is None:
        return  # no encoder at all: the generic check lists what is missing
    wanted = _config_signature(c)
    if found == wanted:
        return
    candidates = dict(CONFIGS)
    candidates.setdefault(c.name, c)
    like = [name for name, cand in candidates.items() if _config_signature(cand) == found]
    if like:
        raise CheckpointError(
            f"{label}: wrong model size: this checkpoint looks like SAM {like[0]} "
            f"({_describe(found)}), but the model being built is {c.name} "
            f"({_describe(wanted)}); build it with sam_model_registry[{like[0]!r}]")
    if found[:2] != wanted[:2]:
        raise CheckpointError(
            f"{label}: wrong model size: the checkpoint's {_describe(found)} does not match "
            f"{c.name} ({_describe(wanted)}) nor any known SAM config "
            f"({', '.join(sorted(CONFIGS))})")
    # Same width and depth but other details differ: the generic check names them.


# ---- loading ------------------------------------------------------------------------------

def check_checkpoint(store: WeightStore, config, label: Optional[str] = None) -> WeightStore:
    """Check ``store`` against ``config``; return it with float tensors as float32.

    Raises one `CheckpointError`: wrong model size (naming the config the
    checkpoint looks like), or every missing / unexpected / wrong-shape key.
    """
    c = get_config(config)
    label = label or (str(store.source) if store.source is not None else "weights")
    _check_model_size(store, c, label)
    store.check(expected_state_dict_shapes(c), what=f"SAM {c.name}")
    converted: Dict[str, np.ndarray] = {}
    changed = False
    for name, array in store.items():
        if array.dtype.kind != "f":
            raise CheckpointError(f"{label}: '{name}' has dtype {array.dtype}; SAM weights "
                                  "are floating point")
        if array.dtype != np.float32:
            array = array.astype(np.float32)
            changed = True
        converted[name] = array
    if not changed:
        return store
    return WeightStore(converted, source=store.source, widened=store.widened)


def load_checkpoint(path, config) -> WeightStore:
    """Read a ``.pth`` or ``.safetensors`` SAM checkpoint and check it against ``config``."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise CheckpointError(f"checkpoint must be a file path, got {type(path).__name__}")
    store = WeightStore.load(os.fsdecode(path))
    return check_checkpoint(store, config)


# ---- synthetic weights --------------------------------------------------------------------

def _std(name: str, shape: Tuple[int, ...], is_norm: bool) -> Tuple[float, float]:
    """(mean, std) of one synthetic tensor."""
    if name.endswith(("rel_pos_h", "rel_pos_w")):
        return 0.0, REL_POS_SCALE / math.sqrt(shape[1])
    if name.endswith("pos_embed"):
        return 0.0, POS_EMBED_STD
    if _EMBEDDINGS.search(name):
        return 0.0, 1.0
    if is_norm:
        return (1.0, NORM_STD) if name.endswith(".weight") else (0.0, NORM_STD)
    if name.endswith(".bias"):
        return 0.0, BIAS_STD
    if _TRANSPOSED_CONV.search(name):
        return 0.0, 1.0 / math.sqrt(shape[0])
    return 0.0, 1.0 / math.sqrt(int(np.prod(shape[1:])))  # linear / conv: 1/sqrt(fan_in)


#: unit normals drawn per synthetic model: tensors are scaled slices of this pool
POOL_SIZE = 1 << 22


def synthetic_weights(config, seed: int = 0) -> WeightStore:
    """Every tensor of the official state dict, drawn from ``seed`` (for tests/benchmarks).

    Linear and conv weights ~ N(0, 1/fan_in), biases ~ N(0, 0.02^2),
    LayerNorm weights ~ 1 + N(0, 0.1^2) and biases ~ N(0, 0.1^2), position
    tables and embeddings at the scales listed at the top of this module.

    Why a pool: drawing ViT-B's 94 M normals one by one took 1.2-1.7 s, most of
    a warm ``load_model``. Instead ``POOL_SIZE`` (4 M) unit normals are drawn
    once (or the whole model's count, if smaller: then each tensor gets its own
    consecutive slice and nothing repeats); otherwise each tensor is a contiguous
    slice of the pool at a seeded random offset. Slices are scaled and shifted,
    one multiply per element. Every tensor is still a run of distinct normal
    draws at its scale; two tensors may share a (shifted) run of the pool, which
    no use of random weights (parity tests, benchmarks) depends on.
    """
    c = get_config(config)
    shapes = expected_state_dict_shapes(c)
    # A 1-D ".weight" only occurs in norms; its ".bias" sibling is a norm bias.
    norms = {k.rsplit(".", 1)[0] for k, s in shapes.items() if k.endswith(".weight") and len(s) == 1}
    sizes = {name: int(np.prod(shape)) for name, shape in shapes.items()}
    total, largest = sum(sizes.values()), max(sizes.values(), default=0)
    rng = np.random.default_rng(seed)
    # at least twice the largest tensor, so even the largest has many possible offsets
    # (a pool of exactly its size would give every such tensor -- ViT-L's MLP weights --
    # the same draws)
    pool = rng.standard_normal(max(2 * largest, min(total, POOL_SIZE)), dtype=np.float32)
    out, next_start = {}, 0
    for name, shape in shapes.items():
        mean, std = _std(name, shape, name.rsplit(".", 1)[0] in norms)
        n = sizes[name]
        if pool.size >= total:  # small model: consecutive slices, every draw used once
            start, next_start = next_start, next_start + n
        else:
            start = int(rng.integers(0, pool.size - n + 1))
        a = np.multiply(pool[start:start + n], np.float32(std)).reshape(shape)
        if mean:
            a += np.float32(mean)
        out[name] = a
    return WeightStore(out)
