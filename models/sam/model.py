"""The user-facing SAM API, shaped like Meta's ``segment_anything`` package.

    from models.sam import sam_model_registry, SamPredictor
    sam = sam_model_registry["vit_b"](checkpoint="sam_vit_b_01ec64.pth", profile="default")
    predictor = SamPredictor(sam)
    predictor.set_image(image)             # HxWx3 uint8 RGB array, or a path
    emb = predictor.get_image_embedding()  # numpy float32 [1, 256, 64, 64]

A `Sam` holds the config, the weights (one `WeightStore` keyed by Meta's
names) and the compiled subgraphs. Subgraphs are compiled with
``rlx.runtime.compile_graph(graph, profile, weights)``: the profile decides the
backend (``debug`` = reference interpreter with verification between passes;
``default`` = the best compiled backend available), nothing here picks one.

Subgraph builders are listed in `SUBGRAPHS` (name -> ``builder(config,
debug)``); the image encoder and neck are compiled when the model is built,
other subgraphs on first use.
"""

from __future__ import annotations

import os
import warnings
from typing import Callable, Dict, Optional, Tuple, Union

import numpy as np

from rlx.errors import InputError, RlxError
from rlx.ir import Graph
from rlx.runtime.compiler import CompiledGraph, compile_graph
from rlx.runtime.profile import CompileProfile, resolve_profile
from rlx.weights import WeightStore

from .config import CONFIGS, SamConfig, get_config
from .debug import DebugOptions
from .encoder import ENCODER, NECK, build_encoder, build_neck
from .image import load_image, preprocess
from .prompt_graph import PROMPT_SUBGRAPHS
from .prefetch import cancel_image_stage, start_click_warmup, start_image_stage
from .weights import SyntheticWeightsWarning, load_checkpoint, synthetic_weights

__all__ = ["Sam", "SamPredictor", "ImageNotSetError", "build_sam", "sam_model_registry",
           "SUBGRAPHS"]

#: subgraph name -> builder(config, debug) -> HIR graph
SUBGRAPHS: Dict[str, Callable[[SamConfig, DebugOptions], Graph]] = {
    ENCODER: lambda config, debug: build_encoder(config, debug),
    NECK: lambda config, debug: build_neck(config),
    **PROMPT_SUBGRAPHS,  # mask decoder pieces and the one-click prompt bucket
}

Checkpoint = Union[None, str, os.PathLike, WeightStore]


class ImageNotSetError(RlxError, RuntimeError):
    """An embedding or prediction was asked for before ``set_image``."""


class Sam:
    """A SAM model: config + weights + compiled subgraphs under one profile."""

    image_format = "RGB"

    def __init__(self, config: SamConfig, weights: WeightStore, profile: CompileProfile,
                 debug: DebugOptions, synthetic: bool = False):
        self.config = config
        self.weights = weights
        self.profile = profile
        self.debug = debug
        self.synthetic = synthetic
        self._compiled: Dict[str, CompiledGraph] = {}
        for name in (ENCODER, NECK):
            self.subgraph(name)

    @property
    def img_size(self) -> int:
        return self.config.image_size

    @property
    def checkpoint(self) -> Optional[str]:
        src = self.weights.source
        return str(src) if src is not None else None

    def subgraph(self, name: str) -> CompiledGraph:
        """The compiled subgraph ``name`` (built, compiled and bound on first use)."""
        compiled = self._compiled.get(name)
        if compiled is None:
            try:
                builder = SUBGRAPHS[name]
            except KeyError:
                raise RlxError(f"SAM has no subgraph {name!r}; subgraphs: "
                               f"{', '.join(SUBGRAPHS)}") from None
            graph = builder(self.config, self.debug)
            compiled = compile_graph(graph, self.profile, self.weights)
            self._compiled[name] = compiled
        return compiled

    @property
    def compiled(self) -> Dict[str, CompiledGraph]:
        """The subgraphs compiled so far, by name."""
        return dict(self._compiled)

    def image_embedding(self, x: np.ndarray) -> np.ndarray:
        """Preprocessed image ``[1, 3, S, S]`` float32 -> embedding ``[1, C, g, g]``."""
        (tokens,) = self.subgraph(ENCODER)(x)
        (embedding,) = self.subgraph(NECK)(tokens)
        return embedding

    def __repr__(self) -> str:
        weights = "SYNTHETIC weights" if self.synthetic else f"weights from {self.checkpoint}"
        dbg = f", debug: {self.debug.describe()}" if self.debug.active else ""
        return f"<Sam {self.config.name}: {weights}, profile {self.profile.name}{dbg}>"


def build_sam(config: Union[str, SamConfig], checkpoint: Checkpoint = None,
              profile: Union[str, os.PathLike, CompileProfile, None] = "default",
              seed: int = 0, debug: Optional[DebugOptions] = None) -> Sam:
    """Build a SAM for ``config`` (a name or a `SamConfig`).

    ``checkpoint``: a ``.pth`` / ``.safetensors`` path, a `WeightStore`, or
    None for seeded synthetic weights (announced with a warning).
    ``profile``: a preset name, a profile file, a `CompileProfile`, or None
    for the profile stored next to the checkpoint (else ``default``).
    ``debug``: encoder bisection switches (default: RLX_SAM_DEBUG_* from the
    environment; see `models.sam.debug`).
    """
    c = get_config(config)
    debug = DebugOptions.from_env() if debug is None else debug
    debug.check(c.encoder_depth)
    resolved = resolve_profile(profile, checkpoint if isinstance(checkpoint, (str, os.PathLike))
                               else None)
    synthetic = checkpoint is None
    if synthetic:
        warnings.warn(f"SAM {c.name}: no checkpoint given, using SYNTHETIC random weights "
                      f"(seed {seed}); outputs are meaningless", SyntheticWeightsWarning,
                      stacklevel=3)
        weights = synthetic_weights(c, seed)
    elif isinstance(checkpoint, WeightStore):
        from .weights import check_checkpoint

        weights = check_checkpoint(checkpoint, c)
    else:
        weights = load_checkpoint(checkpoint, c)
    debug.warn(f"SAM {c.name}")
    return Sam(c, weights, resolved, debug, synthetic=synthetic)


def _registry_entry(name: str) -> Callable[..., Sam]:
    def build(checkpoint: Checkpoint = None, profile="default", **kwargs) -> Sam:
        return build_sam(name, checkpoint=checkpoint, profile=profile, **kwargs)

    build.__name__ = f"build_sam_{name}"
    build.__doc__ = f"SAM {name} (see build_sam)."
    return build


#: Like Meta's registry: "default" is ViT-H.
sam_model_registry: Dict[str, Callable[..., Sam]] = {
    "default": _registry_entry("vit_h"),
    **{name: _registry_entry(name) for name in CONFIGS},
}


class SamPredictor:
    """Computes an image's embedding once, for repeated prompting (like Meta's)."""

    def __init__(self, sam_model: Sam, prefetch_click: bool = True):
        """``prefetch_click``: compile the one-click prompt graph in the background while
        ``set_image`` runs the encoder (`models.sam.prefetch`); False for a caller that
        never clicks (segment-everything decodes with its own graphs)."""
        if not isinstance(sam_model, Sam):
            raise InputError(f"SamPredictor needs a Sam model (from sam_model_registry), got "
                             f"{type(sam_model).__name__}")
        self.model = sam_model
        self.prefetch_click = bool(prefetch_click)
        self.reset_image()
        # numba's one-time load for the mask post-processing overlaps set_image
        from .postprocess_kernels import prefetch

        prefetch()

    def set_image(self, image, image_format: str = "RGB") -> None:
        """Embed ``image``: an HxWx3 uint8 array (RGB or BGR), HxW grayscale, or a file path."""
        if image_format not in ("RGB", "BGR"):
            raise InputError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        array = load_image(image)
        c = self.model.config
        # preprocess flips BGR input itself; the model expects RGB.
        x, input_size, original_size = preprocess(array, c.image_size, c.pixel_mean,
                                                  c.pixel_std, image_format=image_format)
        self.reset_image()
        # The one-click prompt graph compiles (a plan-cache hit: linking and binding) and is
        # primed, and the post-processing of this size warms up, on a background thread
        # while the encoder runs in native code (models.sam.prefetch).
        if self.prefetch_click:
            start_click_warmup(self, input_size, original_size)
        features = self.model.image_embedding(x)
        # Read-only until the next set_image: prompt graphs keep work derived from it and
        # recognise an unchanged embedding by identity (rlx.runtime.staged).
        features.setflags(write=False)
        self.original_size: Optional[Tuple[int, int]] = original_size
        self.input_size: Optional[Tuple[int, int]] = input_size
        self.features: Optional[np.ndarray] = features
        self.is_image_set = True
        # The click graph's image-only stage runs now, in the background (models.sam.prefetch).
        if self.prefetch_click:
            start_image_stage(self)

    def get_image_embedding(self) -> np.ndarray:
        """The embedding of the current image: float32 ``[1, C, g, g]`` ([1, 256, 64, 64]).

        Read-only: it stays what ``set_image`` computed until the next ``set_image``.
        """
        if not self.is_image_set or self.features is None:
            raise ImageNotSetError("An image must be set with .set_image(...) before the "
                                   "image embedding can be returned.")
        return self.features

    def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None,
                multimask_output: bool = True, return_logits: bool = False,
                mask_threshold: Optional[float] = None):
        """``(masks, iou_predictions, low_res_logits)`` for a prompt on the current image.

        Like Meta's ``SamPredictor.predict`` (plus an optional ``mask_threshold``);
        see `models.sam.predict.predict` for the arguments and errors.
        """
        from .predict import predict

        return predict(self, point_coords, point_labels, box, mask_input, multimask_output,
                       return_logits, mask_threshold)

    def reset_image(self) -> None:
        """Forget the current image."""
        cancel_image_stage(self)
        self.is_image_set = False
        self.features = None
        self.original_size = None
        self.input_size = None
