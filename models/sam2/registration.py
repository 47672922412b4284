"""Registers SAM 2 / 2.1 with the rlx model zoo (``rlx dump-ir / compile / bench sam2.1-hiera-t``).

Called through the ``rlx.models`` entry point in pyproject.toml. Each of the
eight configs (``sam2-hiera-t`` ... ``sam2.1-hiera-l``; aliases are Meta's
names such as ``sam2.1_hiera_t`` and its checkpoint stems such as
``sam2.1_hiera_tiny``) exposes three subgraphs at the official 1024 size:

* ``image_features``: image -> the three feature levels ``set_image`` keeps;
* ``prompt_to_masks``: the one-click bucket (click + padding point);
* ``prompt_to_masks_box_mask``: a box with a mask prompt.

Weights are Meta's checkpoints (``.pt`` / ``.safetensors``) or seeded
synthetic ones. ``rlx bench --peer torch`` times the official model
(``sam2`` 1.1.0 on torch, built from Meta's config with the same weights) on
the same inputs: ``forward_image`` plus the feature preparation for the
image side, ``sam_mask_decoder.predict_masks`` for the prompt buckets.
``rlx segment IMAGE --model sam2.1_hiera_t`` goes to `models.sam2.predictor_cli`.
"""

from __future__ import annotations

from typing import Callable, Dict

import numpy as np

from rlx.zoo import ModelSpec, register_model

from .config import CONFIGS, get_config
from .decoder import PROMPT_SUBGRAPHS

__all__ = ["register", "MODEL_NAMES", "subgraph_builders", "torch_peer"]

#: config name -> zoo name (``sam2.1_hiera_b+`` -> ``sam2.1-hiera-b+``)
MODEL_NAMES = {name: name.replace("_", "-") for name in CONFIGS}
_STEMS = {"t": "tiny", "s": "small", "b+": "base_plus", "l": "large"}


def subgraph_builders(config_name: str) -> Dict[str, Callable]:
    """Subgraph name -> builder() for one config (1024 px)."""
    from .image_features import IMAGE_FEATURES, build_image_features

    c = get_config(config_name)
    subs = {IMAGE_FEATURES: lambda: build_image_features(c)}
    for name, build in PROMPT_SUBGRAPHS.items():
        subs[name] = (lambda build=build: build(c))
    return subs


def torch_peer(config_name: str):
    """`rlx bench --peer torch` factory for one config: the official model's matching piece."""

    def factory(subgraph: str, weights, threads: int):
        import torch
        from sam2.build_sam import build_sam2 as official_build

        folder = "sam2.1" if get_config(config_name).version == "2.1" else "sam2"
        torch.set_num_threads(int(threads))
        model = official_build(f"configs/{folder}/{config_name}.yaml", ckpt_path=None,
                               device="cpu", mode="eval")
        state = model.state_dict()
        model.load_state_dict({k: torch.from_numpy(np.array(weights[k])) for k in state
                               if k in weights}, strict=False)
        pe = model.sam_prompt_encoder

        if subgraph == "image_features":
            def run(image):
                with torch.no_grad():
                    out = model.forward_image(torch.from_numpy(image))
                    _, feats, _, sizes = model._prepare_backbone_features(out)
                    feats[-1] = feats[-1] + model.no_mem_embed
                    return [f.permute(1, 2, 0).reshape(1, -1, *s).numpy()
                            for f, s in zip(feats, sizes)]
            return run
        if subgraph.startswith("prompt_to_masks"):
            def run(image_embed, high_res_0, high_res_1, sparse, mask_input=None):
                with torch.no_grad():
                    if mask_input is None:
                        dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
                            1, -1, *pe.image_embedding_size)
                    else:
                        dense = pe._embed_masks(torch.from_numpy(mask_input))
                    masks, iou, _, obj = model.sam_mask_decoder.predict_masks(
                        torch.from_numpy(image_embed), pe.get_dense_pe(),
                        torch.from_numpy(sparse), dense, repeat_image=False,
                        high_res_features=[torch.from_numpy(high_res_0),
                                           torch.from_numpy(high_res_1)])
                    return [masks.numpy(), iou.numpy(), obj.numpy()]
            return run
        return None

    return factory


def _spec(config_name: str) -> ModelSpec:
    c = get_config(config_name)
    size = config_name.rsplit("_", 1)[1]
    prefix = config_name.rsplit("_hiera_", 1)[0]

    def synthetic(seed=0):
        from .weights import synthetic_weights

        return synthetic_weights(c, seed)

    def load(path):
        from .weights import load_checkpoint

        return load_checkpoint(path, c)

    return ModelSpec(
        name=MODEL_NAMES[config_name],
        description=(f"SAM {c.version} Hiera-{size.upper()} image model ({c.depth} blocks, "
                     f"width {c.embed_dim}, {c.image_size}x{c.image_size}): image features "
                     "and prompt -> masks"),
        subgraphs=subgraph_builders(config_name),
        synthetic_weights=synthetic,
        load_weights=load,
        aliases=(config_name, f"{prefix}_hiera_{_STEMS[size]}"),
        peers={"torch": torch_peer(config_name)},
    )


def register() -> None:
    for name in CONFIGS:
        register_model(_spec(name))
