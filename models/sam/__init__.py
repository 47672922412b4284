"""Segment Anything (SAM v1) for rlx: config, host-side numpy glue, builders.

The host-side pieces (image loading and preprocessing, prompt Fourier
encoding, mask postprocessing) live in their own small modules so they can be
tested one by one against Meta's `segment-anything` package.
"""

from .automatic import SamAutomaticMaskGenerator  # noqa: E402
from .config import CONFIGS, SamConfig, small_config  # noqa: E402
from .debug import DebugOptions  # noqa: E402
from .model import ImageNotSetError, Sam, SamPredictor, build_sam, sam_model_registry  # noqa: E402
from .predict import set_image_embedding  # noqa: E402
from .prompt_graph import PromptDecoder  # noqa: E402
from .weights import SyntheticWeightsWarning, load_checkpoint, synthetic_weights  # noqa: E402

__all__ = [
    "CONFIGS",
    "DebugOptions",
    "ImageNotSetError",
    "PromptDecoder",
    "SamAutomaticMaskGenerator",
    "Sam",
    "SamConfig",
    "SamPredictor",
    "SyntheticWeightsWarning",
    "build_sam",
    "load_checkpoint",
    "sam_model_registry",
    "set_image_embedding",
    "small_config",
    "synthetic_weights",
]
