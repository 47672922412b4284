"""SAM 2 / SAM 2.1 image model: Hiera trunk, FPN neck, SAM 2 prompt encoder and mask decoder.

The image side (this package's ``hiera``, ``neck`` and ``image_features``
builders) turns an image into the three feature levels the official
``SAM2ImagePredictor.set_image`` stores; the prompt side reads them.
"""

from .config import CONFIG_NAMES, CONFIGS, Sam2Config, get_config

__all__ = ["CONFIG_NAMES", "CONFIGS", "Sam2Config", "get_config"]
