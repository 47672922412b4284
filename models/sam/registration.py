"""Registers SAM v1 with the rlx model zoo (``rlx list``, ``rlx dump-ir sam-vit-b``).

Called through the ``rlx.models`` entry point in pyproject.toml. Each size
(``sam-vit-b``, ``sam-vit-l``, ``sam-vit-h``; aliases ``vit_b`` ...) exposes the
subgraphs of `models.sam.model.SUBGRAPHS`, synthetic weights and the
checkpoint loader, all keyed by Meta's state-dict names. Subgraph builders
honour the RLX_SAM_DEBUG_* switches, so ``rlx dump-ir`` shows what a model
built with the same environment would compile. It also adds the
``rlx segment`` command (`models.sam.segment_cli`).
"""

from __future__ import annotations

from rlx.zoo import ModelSpec, register_command, register_model

from .config import CONFIGS
from .debug import DebugOptions
from .model import SUBGRAPHS
from .weights import load_checkpoint, synthetic_weights

__all__ = ["register", "MODEL_NAMES"]

#: config name -> zoo name
MODEL_NAMES = {name: "sam-" + name.replace("_", "-") for name in CONFIGS}


def _spec(config_name: str) -> ModelSpec:
    c = CONFIGS[config_name]

    def builder(sub):
        def build():
            return SUBGRAPHS[sub](c, DebugOptions.from_env())
        build.__name__ = f"build_{sub}"
        return build

    return ModelSpec(
        name=MODEL_NAMES[config_name],
        description=(f"Segment Anything ViT-{config_name.split('_')[1].upper()} "
                     f"({c.encoder_depth} blocks, width {c.encoder_embed_dim}, "
                     f"{c.image_size}x{c.image_size})"),
        subgraphs={sub: builder(sub) for sub in SUBGRAPHS},
        synthetic_weights=lambda seed=0: synthetic_weights(c, seed),
        load_weights=lambda path: load_checkpoint(path, c),
        aliases=(config_name, "sam_" + config_name),
    )


def register() -> None:
    for name in CONFIGS:
        register_model(_spec(name))
    from .segment_cli import COMMAND

    register_command(COMMAND)
    from .serve.cli import COMMAND as SERVE
    register_command(SERVE)
    from .annotate import COMMAND as ANNOTATE

    register_command(ANNOTATE)
