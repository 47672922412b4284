"""The user-facing SAM3 neck: four compiled branches plus cached positional encodings.

    from models.sam3 import load_neck
    neck = load_neck("sam3.pt")                 # profile next to the weights, else "default"
    levels = neck(feature)                      # feature: float32 [1, 1024, 72, 72]
    for features, pos in levels: ...            # scales 4, 2, 1, 0.5: [1, 256, 288|144|72|36, ...]

Each branch is its own compiled subgraph (see `builder`); the positional
encoding of each level depends only on its shape and comes from the host-side
cache (see `position_encoding`).
"""

from __future__ import annotations

import os
from typing import List, Mapping, Tuple, Union

import numpy as np

from rlx.errors import InputError
from rlx.runtime import CompiledGraph, CompileProfile, compile_graph, resolve_profile

from .builder import build_branch
from .config import DEFAULT, NeckConfig, branch_name
from .position_encoding import sine_position_encoding
from .weights import Checkpoint, extract_neck_weights

__all__ = ["Sam3Neck", "load_neck"]

Level = Tuple[np.ndarray, np.ndarray]


class Sam3Neck:
    """Compiled SAM3 detection neck (image-only: no SAM2 branch copy)."""

    def __init__(self, weights: Mapping[str, np.ndarray],
                 profile: Union[str, os.PathLike, CompileProfile, None] = None,
                 cfg: NeckConfig = DEFAULT):
        self.cfg = cfg
        self.profile = resolve_profile(profile)
        self.branches: List[CompiledGraph] = [
            compile_graph(build_branch(i, s, cfg), self.profile, weights)
            for i, s in enumerate(cfg.scale_factors)]
        self.pos = [sine_position_encoding(*cfg.level_shape(s)[2:], cfg.d_model,
                                           temperature=cfg.pos_temperature, eps=cfg.pos_eps)
                    for s in cfg.scale_factors]

    @property
    def scale_factors(self) -> Tuple[float, ...]:
        return self.cfg.scale_factors

    @property
    def reports(self):
        """Compile report of each branch, in scale order."""
        return [b.report for b in self.branches]

    def check_input(self, feature) -> np.ndarray:
        if not isinstance(feature, np.ndarray):
            raise InputError(f"SAM3 neck input must be a numpy array, got {type(feature).__name__}")
        expected = self.cfg.input_shape
        if feature.dtype != np.float32 or feature.shape != expected:
            raise InputError(
                f"SAM3 neck input: expected float32[{','.join(map(str, expected))}] "
                f"(the last trunk feature, NCHW), got "
                f"{feature.dtype}[{','.join(map(str, feature.shape))}]")
        return feature

    def __call__(self, feature: np.ndarray) -> List[Level]:
        """Four ``(features, pos)`` pairs, float32 ``[1, d_model, h, w]``, scales 4, 2, 1, 0.5.

        The ``pos`` arrays are shared, read-only cached encodings; copy one
        before changing it in place.
        """
        x = self.check_input(feature)
        return [(branch(x)[0], pos) for branch, pos in zip(self.branches, self.pos)]

    def __repr__(self) -> str:
        names = ", ".join(branch_name(s) for s in self.scale_factors)
        return f"Sam3Neck({names}; profile {self.profile.name}, backend {self.profile.backend})"


def load_neck(checkpoint: Checkpoint,
              profile: Union[str, os.PathLike, CompileProfile, None] = None,
              cfg: NeckConfig = DEFAULT) -> Sam3Neck:
    """Read the neck weights from `checkpoint` and compile the four branches.

    `checkpoint`: a ``.safetensors`` / torch ``.pth`` path or a dict of numpy
    arrays, keyed under any prefix `weights.PREFIXES` lists. `profile`: a
    preset name, a ``.toml`` / ``.json`` file or a `CompileProfile`; None
    means the profile file stored next to a checkpoint path, if any, else
    ``default``.
    """
    weights = extract_neck_weights(checkpoint, cfg)
    if profile is None and isinstance(checkpoint, (str, os.PathLike)):
        profile = resolve_profile(None, checkpoint)
    return Sam3Neck(weights, profile, cfg)
