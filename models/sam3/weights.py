"""SAM3 neck weights: extraction from a checkpoint, and synthetic weights.

A SAM3 checkpoint nests the neck under the vision backbone. Depending on
what was saved (the whole SAM3 model, the detector alone, or the VL
backbone), its keys start with one of `PREFIXES`; the neck module's own
``state_dict()`` (no prefix at all) is accepted too. Under the prefix, branch
``i`` is ``convs.{i}`` with the official module names
(``dconv_2x2_0``, ``dconv_2x2_1``, ``dconv_2x2``, ``conv_1x1``, ``conv_3x3``),
which are also the weight names in the IR, so nothing is renamed.

Image-only mode: an interactive (``enable_inst_interactivity``) checkpoint
also holds ``sam2_convs.*``, a second copy of the four branches that feeds the
SAM2 tracker head. Detection never reads it, so it is skipped on purpose
(not loaded, not checked), as are the trunk's and every other module's
tensors.

Every misfit is reported at once in one `CheckpointError`: a whole missing
branch by its index, scale and subgraph; a missing tensor by its full key and
expected shape; a mis-shaped tensor by key, expected and actual shape.
"""

from __future__ import annotations

import os
from typing import Dict, Mapping, Union

import numpy as np

from rlx.errors import CheckpointError
from rlx.weights import WeightStore

from .config import DEFAULT, NeckConfig, branch_layers, branch_name, expected_branch_shapes

__all__ = ["PREFIXES", "extract_neck_weights", "find_prefix", "synthetic_weights"]

#: Where SAM3 checkpoints keep the neck, most specific first.
PREFIXES = ("detector.backbone.vision_backbone.", "backbone.vision_backbone.", "vision_backbone.")

Checkpoint = Union[str, "os.PathLike[str]", Mapping[str, np.ndarray]]


def _store(checkpoint: Checkpoint) -> WeightStore:
    if isinstance(checkpoint, WeightStore):
        return checkpoint
    if isinstance(checkpoint, (str, os.PathLike)):
        return WeightStore.load(checkpoint)
    if isinstance(checkpoint, Mapping):
        return WeightStore(checkpoint)
    raise CheckpointError(f"SAM3 neck weights: expected a checkpoint path or a dict of arrays, "
                          f"got {type(checkpoint).__name__}")


def find_prefix(names, label: str = "weights") -> str:
    """The one prefix under which `names` hold ``convs.*`` (``""`` for a bare neck)."""
    names = list(names)
    found = [p for p in PREFIXES if any(n.startswith(p + "convs.") for n in names)]
    if not found and any(n.startswith("convs.") for n in names):
        found = [""]
    if len(found) == 1:
        return found[0]
    if found:
        raise CheckpointError(f"{label}: SAM3 neck weights found under several prefixes "
                              f"({', '.join(found)}); keep one neck per checkpoint")
    heads = sorted({n.split(".", 1)[0] for n in names})
    shown = ", ".join(heads[:10]) + (" ..." if len(heads) > 10 else "")
    raise CheckpointError(f"{label}: no SAM3 neck weights: expected keys '<prefix>convs.<i>.*' "
                          f"with prefix one of {', '.join(repr(p) for p in PREFIXES)} or none; "
                          f"top-level names are: {shown or 'none'}")


def extract_neck_weights(checkpoint: Checkpoint,
                         cfg: NeckConfig = DEFAULT) -> Dict[str, np.ndarray]:
    """Neck weights keyed like the IR (``convs.0.conv_1x1.weight``), float32.

    `checkpoint` is a ``.safetensors`` or torch ``.pth`` path (read with
    `WeightStore.load`, no torch needed) or a mapping of name -> array.
    """
    store = _store(checkpoint)
    label = str(store.source) if store.source is not None else "weights"
    prefix = find_prefix(store, label)
    problems, out = [], {}
    for index, scale in enumerate(cfg.scale_factors):
        branch = f"{prefix}convs.{index}."
        if not any(n.startswith(branch) for n in store):
            layers = ", ".join(layer.name for layer in branch_layers(scale, cfg))
            problems.append(f"missing branch convs.{index} (scale {scale:g}x, subgraph "
                            f"{branch_name(scale)}): no tensors under '{branch}' "
                            f"(expected {layers})")
            continue
        for name, shape in expected_branch_shapes(index, scale, cfg).items():
            key = prefix + name
            if key not in store:
                problems.append(f"missing tensor {key} (expected {_fmt(shape)})")
                continue
            array = store[key]
            if tuple(array.shape) != shape:
                problems.append(f"wrong shape for {key}: expected {_fmt(shape)}, "
                                f"got {_fmt(array.shape)}")
            elif array.dtype.kind != "f":
                problems.append(f"wrong dtype for {key}: expected a float tensor, "
                                f"got {array.dtype}")
            else:
                out[name] = np.ascontiguousarray(array, dtype=np.float32)
    if problems:
        raise CheckpointError(f"{label}: weights do not fit the SAM3 neck "
                              f"(prefix '{prefix}'):\n  " + "\n  ".join(problems))
    return out


def synthetic_weights(seed: int = 0, cfg: NeckConfig = DEFAULT) -> Dict[str, np.ndarray]:
    """Seeded neck weights at a realistic scale (clearly not a trained model).

    Weights ~ N(0, 1/fan_in) with fan_in = in_channels * kh * kw for a
    convolution and in_channels for a k2s2 transposed convolution (each
    output pixel sees one input pixel), so activations stay O(1) through
    each branch; biases ~ N(0, 0.02^2).
    """
    rng = np.random.default_rng(seed)
    out: Dict[str, np.ndarray] = {}
    for index, scale in enumerate(cfg.scale_factors):
        for layer in branch_layers(scale, cfg):
            k = layer.kernel
            fan_in = layer.in_channels * (1 if layer.kind == "deconv" else k * k)
            key = f"convs.{index}.{layer.name}"
            out[f"{key}.weight"] = (rng.standard_normal(layer.weight_shape(), dtype=np.float32)
                                    * np.float32(fan_in ** -0.5))
            out[f"{key}.bias"] = (rng.standard_normal((layer.out_channels,), dtype=np.float32)
                                  * np.float32(0.02))
    return out


def _fmt(shape) -> str:
    return "[" + ", ".join(str(int(n)) for n in shape) + "]"
