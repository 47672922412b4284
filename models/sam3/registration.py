"""Announces ``sam3-neck`` to the rlx CLI (``rlx dump-ir / compile / bench sam3-neck``).

Called through the ``rlx.models`` entry point in pyproject.toml. The four
branches are the model's subgraphs (``branch_4x``, ``branch_2x``,
``branch_1x``, ``branch_0_5x``); weights are keyed like the IR
(``convs.0.conv_1x1.weight``), from a SAM3 checkpoint or seeded synthetic.
"""

from __future__ import annotations

from rlx.zoo import ModelSpec, register_model

from .builder import branch_builders
from .official import torch_peer
from .weights import extract_neck_weights, synthetic_weights

NAME = "sam3-neck"


def register() -> None:
    register_model(ModelSpec(
        name=NAME,
        description="SAM3 detection neck: 4-branch SimpleFPN (scales 4, 2, 1, 0.5) "
                    "on the [1,1024,72,72] trunk feature",
        subgraphs=branch_builders(),
        synthetic_weights=synthetic_weights,
        load_weights=extract_neck_weights,
        peers={"torch": torch_peer},
    ))
