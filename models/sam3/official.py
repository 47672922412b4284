"""The official SAM3 neck (the ``sam3`` package), loaded without its heavy package init.

``sam3``'s package ``__init__`` imports optional dependencies (training and
video stacks) that rlx does not need, so ``sam3/model/necks.py`` and
``sam3/model/position_encoding.py`` are loaded straight from the installed
files. Used as the parity reference by the tests and as the ``torch`` peer of
``rlx bench sam3-neck``. Needs torch and sam3 (``pip install --no-deps sam3``);
raises ImportError naming what is missing.

The neck is built as ``sam3.model_builder`` builds it (``d_model=256``,
scale factors 4, 2, 1, 0.5, ``PositionEmbeddingSine(256, normalize=True)``)
on a stand-in trunk that returns its input as the only feature level and
reports ``channel_list = [1024]`` like the ViT.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys


def _sam3_file(relative: str) -> str:
    try:
        dist = importlib.metadata.distribution("sam3")
    except importlib.metadata.PackageNotFoundError:
        raise ImportError("the official sam3 package is not installed "
                          "(pip install --no-deps sam3)") from None
    path = os.path.join(str(dist.locate_file("sam3")), relative)
    if not os.path.isfile(path):
        raise ImportError(f"official sam3 file {path} not found")
    return path


def _load(relative: str, name: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _sam3_file(relative))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


def necks_module():
    return _load("model/necks.py", "_official_sam3_necks")


def position_encoding_module():
    return _load("model/position_encoding.py", "_official_sam3_position_encoding")


def position_encoding(d_model: int = 256):
    return position_encoding_module().PositionEmbeddingSine(
        num_pos_feats=d_model, normalize=True, scale=None, temperature=10000)


def build_official_neck(in_channels: int = 1024, d_model: int = 256, add_sam2_neck: bool = False):
    """The official `Sam3DualViTDetNeck` in eval mode (default-initialized weights)."""
    from torch import nn

    class StandInTrunk(nn.Module):
        """Returns the given feature as the trunk's only output, like the ViT's last level."""

        def __init__(self, channels: int):
            super().__init__()
            self.channel_list = [channels]

        def forward(self, x):
            return [x]

    neck = necks_module().Sam3DualViTDetNeck(
        trunk=StandInTrunk(in_channels), position_encoding=position_encoding(d_model),
        d_model=d_model, scale_factors=[4.0, 2.0, 1.0, 0.5], add_sam2_neck=add_sam2_neck)
    return neck.eval()


def torch_peer(subgraph: str, weights, threads: int):
    """`rlx bench --peer torch`: the official branch module for `subgraph` on the same weights."""
    import numpy as np
    import torch

    from .builder import branch_builders

    names = list(branch_builders())
    if subgraph not in names:
        return None
    torch.set_num_threads(int(threads))
    neck = build_official_neck()
    state = {k: torch.from_numpy(np.array(weights[k])) for k in neck.state_dict()
             if not k.startswith("sam2_convs.")}
    neck.load_state_dict(state, strict=False)
    branch = neck.convs[names.index(subgraph)]

    def run(x):
        with torch.no_grad():
            return [branch(torch.from_numpy(x)).numpy()]

    return run
