"""A tiny convolutional classifier: the "how to add a model" walkthrough.

It is small enough to read in one sitting and uses the same machinery as SAM:
a builder function per subgraph emitting HIR through `GraphBuilder`, weights
named like a PyTorch state dict, synthetic weights for tests and benchmarks,
and a `register()` hook that the ``rlx.models`` entry point calls.

    input image [1, 3, 32, 32]
    conv 3x3 (3 -> 16, pad 1) -> GELU -> max-pool 2x2
    conv 1x1 (16 -> 32) -> LayerNorm over channels -> GELU
    flatten -> linear (32*16*16 -> 10) -> softmax
"""

from __future__ import annotations

import numpy as np

from rlx.ir import Graph, GraphBuilder
from rlx.zoo import ModelSpec, register_model

NAME = "example-convnet"

WEIGHT_SHAPES = {
    "conv1.weight": (16, 3, 3, 3), "conv1.bias": (16,),
    "conv2.weight": (32, 16, 1, 1), "conv2.bias": (32,),
    "norm.weight": (32,), "norm.bias": (32,),
    "head.weight": (10, 32 * 16 * 16), "head.bias": (10,),
}


def build_classifier(batch: int = 1) -> Graph:
    b = GraphBuilder("classifier")
    w = {name: b.weight(name, shape) for name, shape in WEIGHT_SHAPES.items()}
    x = b.input("image", (batch, 3, 32, 32))
    with b.scope("conv1"):
        x = b.conv2d(x, w["conv1.weight"], w["conv1.bias"], padding=1)
        x = b.gelu(x)
        x = b.max_pool2d(x, kernel=2)
    with b.scope("conv2"):
        x = b.conv2d(x, w["conv2.weight"], w["conv2.bias"])
        x = b.layer_norm(x, w["norm.weight"], w["norm.bias"], axis=1, eps=1e-6)
        x = b.gelu(x)
    with b.scope("head"):
        x = b.reshape(x, shape=(batch, -1))
        x = b.linear(x, w["head.weight"], w["head.bias"])
        x = b.softmax(x, axis=-1)
    b.output(x)
    return b.build()


def synthetic_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in WEIGHT_SHAPES.items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        scale = 1.0 / np.sqrt(fan_in) if len(shape) > 1 else 0.1
        base = 1.0 if name == "norm.weight" else 0.0
        out[name] = (base + scale * rng.standard_normal(shape)).astype(np.float32)
    return out


def register() -> None:
    register_model(ModelSpec(
        name=NAME,
        description="tiny conv classifier (the README's add-a-model walkthrough)",
        subgraphs={"classifier": build_classifier},
        synthetic_weights=synthetic_weights,
    ))
