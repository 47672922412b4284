"""Compiled SAM 2 prompt buckets for one model: compiled on first use, staged per image.

Shapes are static in rlx and the number of prompt tokens is a shape, so each
(sparse tokens, mask prompt or not) pair is its own graph
(`models.sam2.decoder.build_prompt_to_masks`). Each is compiled *staged* with
the three image feature levels as slow inputs: per image, the slow stage puts
the embedding into token layout, projects it for the first transformer layer
and re-orders the conv_s0 / conv_s1 skips into the upscaling's row order; per
click only the fast stage runs. Passing the same read-only arrays for every
click (the predictor does) lets the staged graph see "same image" without
reading them.
"""

from __future__ import annotations

import threading
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from rlx.errors import InputError
from rlx.runtime.profile import CompileProfile, resolve_profile
from rlx.runtime.staged import StagedGraph, compile_staged

from .config import Sam2Config, get_config
from .decoder import IMAGE_INPUTS, build_prompt_to_masks, heads_config

__all__ = ["Sam2PromptDecoder", "Bucket"]

Bucket = Tuple[int, bool]


class Sam2PromptDecoder:
    """``run(features, sparse, mask_input)`` -> (low-res logits, IoU, object score) of all tokens."""

    def __init__(self, config, weights: Mapping[str, np.ndarray],
                 profile: "CompileProfile | str | None" = "default"):
        self.config: Sam2Config = get_config(config)
        self.weights = weights
        self.profile = resolve_profile(profile)
        hc = heads_config(self.config)
        self.grid, self.mask_size = hc.image_embedding_size, hc.mask_input_size
        self._buckets: Dict[Bucket, StagedGraph] = {}
        self._lock = threading.RLock()

    def bucket(self, num_sparse: int, has_mask: bool) -> StagedGraph:
        """The compiled graph of one prompt shape (compiled and bound on first use)."""
        key = (int(num_sparse), bool(has_mask))
        with self._lock:
            compiled = self._buckets.get(key)
            if compiled is None:
                graph = build_prompt_to_masks(self.config, *key)
                slow = [n for n in IMAGE_INPUTS if any(v.name == n for v in graph.inputs)]
                compiled = compile_staged(graph, self.profile, self.weights, slow=slow)
                self._buckets[key] = compiled
            return compiled

    @property
    def buckets(self) -> Dict[Bucket, StagedGraph]:
        return dict(self._buckets)

    def feature_shapes(self) -> Dict[str, Tuple[int, ...]]:
        """What `run` expects of each image feature level."""
        d, g = self.config.d_model, self.grid
        shapes = {"image_embed": (1, d, g, g)}
        if self.config.use_high_res_features_in_sam:
            shapes.update(high_res_0=(1, d // 8, 4 * g, 4 * g), high_res_1=(1, d // 4, 2 * g, 2 * g))
        return shapes

    def run(self, features: Mapping[str, np.ndarray], sparse: np.ndarray,
            mask_input: Optional[np.ndarray] = None):
        """(logits ``[1, M, 4g, 4g]``, IoU ``[1, M]``, object score ``[1, 1]``) for every token."""
        d, s = self.config.d_model, self.mask_size
        inputs = []
        for name, shape in self.feature_shapes().items():
            a = features[name]
            if a.shape != shape or a.dtype != np.float32:
                raise InputError(f"image feature {name!r} must be float32 {list(shape)}, "
                                 f"got {a.dtype} {list(a.shape)}")
            inputs.append(a)
        if sparse.ndim != 3 or sparse.shape[0] != 1 or sparse.shape[2] != d:
            raise InputError(f"sparse prompt embeddings must be [1, N, {d}], got {sparse.shape}")
        if sparse.shape[1]:
            inputs.append(np.ascontiguousarray(sparse, dtype=np.float32))
        if mask_input is not None:
            m = np.ascontiguousarray(mask_input, dtype=np.float32)
            if m.shape != (1, 1, s, s):
                raise InputError(f"mask input must be [1, 1, {s}, {s}], got {list(m.shape)}")
            inputs.append(m)
        compiled = self.bucket(sparse.shape[1], mask_input is not None)
        with self._lock:
            return compiled(*inputs)
