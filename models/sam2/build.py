"""``build_sam2``: a SAM 2 / 2.1 image model (config + weights + compiled graphs), like Meta's.

    from models.sam2 import build_sam2, SAM2ImagePredictor
    model = build_sam2("sam2.1_hiera_t", checkpoint="sam2.1_hiera_tiny.pt")  # profile="default"
    predictor = SAM2ImagePredictor(model)

Config names are Meta's (``sam2_hiera_{t,s,b+,l}``, ``sam2.1_hiera_{t,s,b+,l}``;
their yaml paths and the checkpoint stems such as ``sam2.1_hiera_base_plus``
work too). Without a checkpoint the weights are seeded synthetic ones and a
`SyntheticWeightsWarning` says so: every stage runs, the masks mean nothing.

The model compiles the image side (`models.sam2.image_features`: Hiera trunk,
FPN neck, conv_s0 / conv_s1, no_mem_embed) when built, and the prompt side
per prompt shape on first use (`models.sam2.decoder_buckets`).
"""

from __future__ import annotations

import os
import warnings
from typing import Dict, Mapping, Optional, Union

import numpy as np

from rlx.errors import RlxError
from rlx.runtime.compiler import CompiledGraph, compile_graph
from rlx.runtime.profile import CompileProfile, resolve_profile

from models.sam.weights import SyntheticWeightsWarning

from .config import Sam2Config, get_config
from .decoder_buckets import Sam2PromptDecoder

__all__ = ["Sam2Model", "build_sam2", "SyntheticWeightsWarning"]


class Sam2Model:
    """A SAM 2 image model: config, weights (Meta's names) and its compiled graphs."""

    def __init__(self, config: Sam2Config, weights: Mapping[str, np.ndarray],
                 profile: CompileProfile, synthetic: bool = False,
                 checkpoint: Optional[str] = None, compile_image: bool = True):
        self.config = config
        self.weights = weights
        self.profile = profile
        self.synthetic = synthetic
        self.checkpoint = checkpoint
        self._image: Optional[CompiledGraph] = None
        self.decoder = Sam2PromptDecoder(config, weights, profile)
        if compile_image:
            self.image_graph()

    @property
    def image_size(self) -> int:
        return self.config.image_size

    def image_graph(self) -> CompiledGraph:
        """The compiled image side (compiled and bound on first use)."""
        if self._image is None:
            from .image_features import build_image_features

            self._image = compile_graph(build_image_features(self.config), self.profile,
                                        self.weights)
        return self._image

    def image_features(self, x: np.ndarray) -> Dict[str, np.ndarray]:
        """Normalized image ``[1, 3, S, S]`` -> ``high_res_0``, ``high_res_1``, ``image_embed``."""
        from .image_features import OUTPUT_NAMES

        outs = self.image_graph()(np.ascontiguousarray(x, dtype=np.float32))
        return dict(zip(OUTPUT_NAMES, outs))

    def __repr__(self) -> str:
        src = "SYNTHETIC weights" if self.synthetic else f"weights from {self.checkpoint}"
        return f"<Sam2Model {self.config.name} {self.image_size}px: {src}, profile {self.profile.name}>"


Checkpoint = Union[None, str, os.PathLike, Mapping[str, np.ndarray]]


def build_sam2(config: Union[str, Sam2Config] = "sam2.1_hiera_t", checkpoint: Checkpoint = None,
               profile: Union[str, os.PathLike, CompileProfile, None] = "default", *,
               seed: int = 0, image_size: Optional[int] = None,
               compile_image: bool = True) -> Sam2Model:
    """Build a SAM 2 image model.

    ``config``: a config name (``"sam2.1_hiera_t"``, ``"sam2_hiera_b+"``, a yaml
    path of Meta's) or a `Sam2Config`. ``checkpoint``: Meta's ``.pt``
    (``{"model": state_dict}``, read without torch), a ``.safetensors`` file,
    a mapping of tensors by Meta's names, or None for seeded synthetic weights
    (announced with a `SyntheticWeightsWarning`). ``profile``: a preset name, a
    profile file, a `CompileProfile`, or None for the profile stored next to
    the checkpoint. ``image_size`` overrides the official 1024 (a multiple of
    32; small sizes are for tests).
    """
    c = get_config(config, image_size)
    path = checkpoint if isinstance(checkpoint, (str, os.PathLike)) else None
    resolved = resolve_profile(profile, path)
    if checkpoint is None:
        warnings.warn(f"SAM 2 {c.name}: no checkpoint given, using SYNTHETIC random weights "
                      f"(seed {seed}); outputs are meaningless", SyntheticWeightsWarning,
                      stacklevel=2)
        from .weights import synthetic_weights

        weights = synthetic_weights(c, seed)
    elif path is not None or isinstance(checkpoint, Mapping):
        from .weights import load_checkpoint

        weights = load_checkpoint(os.fspath(path) if path is not None else checkpoint, c)
    else:
        raise RlxError(f"checkpoint must be a path, a mapping of tensors or None, "
                       f"got {type(checkpoint).__name__}")
    return Sam2Model(c, weights, resolved, synthetic=checkpoint is None,
                     checkpoint=os.fspath(path) if path is not None else None,
                     compile_image=compile_image)
