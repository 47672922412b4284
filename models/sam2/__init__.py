"""SAM 2 / SAM 2.1 image model: Hiera trunk, FPN neck, SAM 2 prompt encoder and mask decoder.

    from models.sam2 import build_sam2, SAM2ImagePredictor
    predictor = SAM2ImagePredictor(build_sam2("sam2.1_hiera_t", checkpoint="sam2.1_hiera_tiny.pt"))
    predictor.set_image(image)
    masks, scores, low_res = predictor.predict(point_coords=[[420, 310]], point_labels=[1])

The image side (this package's ``hiera``, ``neck`` and ``image_features``
builders) turns an image into the three feature levels the official
``SAM2ImagePredictor.set_image`` stores; the prompt side (``prompt``,
``decoder``, ``decoder_buckets``, reusing SAM v1's builders) reads them;
``predictor`` is the user-facing API and ``build`` assembles a model.
"""

from .build import Sam2Model, build_sam2
from .config import CONFIG_NAMES, CONFIGS, Sam2Config, get_config
from .predictor import ImageNotSetError, SAM2ImagePredictor

__all__ = ["CONFIG_NAMES", "CONFIGS", "ImageNotSetError", "SAM2ImagePredictor", "Sam2Config",
           "Sam2Model", "build_sam2", "get_config"]
