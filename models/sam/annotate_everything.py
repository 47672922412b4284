"""``rlx annotate --everything``: the automatic mask generator and its command-line knobs.

The generator is `models.sam.automatic.SamAutomaticMaskGenerator` (Meta's
constructor and ``generate(image)``); this module only maps the options
of ``rlx annotate`` onto its keyword arguments and says clearly when it is
not there. An option left out keeps the generator's own default, so the
defaults are Meta's.
"""

from __future__ import annotations

import argparse
from typing import Any, Dict, Tuple

from rlx.errors import InputError

__all__ = ["PARAMETERS", "add_arguments", "chosen_parameters", "generator_class",
           "make_generator"]

#: option name -> (type, help); keyword = option name with "_"
PARAMETERS: Dict[str, Tuple[type, str]] = {
    "points-per-side": (int, "grid of points per image side (default 32)"),
    "points-per-batch": (int, "points decoded together (default 64)"),
    "pred-iou-thresh": (float, "drop masks with a lower predicted IoU (default 0.88)"),
    "stability-score-thresh": (float, "drop masks with a lower stability score (default 0.95)"),
    "box-nms-thresh": (float, "box IoU above which duplicate masks are dropped (default 0.7)"),
    "crop-n-layers": (int, "extra layers of image crops (default 0)"),
    "min-mask-region-area": (int, "remove holes/islands smaller than this, in pixels "
                                  "(default 0; needs scipy)"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("--everything options (automatic mask generator; Meta's defaults)")
    for name, (typ, help_) in PARAMETERS.items():
        g.add_argument(f"--{name}", type=str, default=None, metavar=typ.__name__.upper(),
                       help=help_)


def chosen_parameters(args: argparse.Namespace) -> Dict[str, Any]:
    """The generator keywords the user set, parsed and checked (one error naming the option)."""
    out = {}
    for name, (typ, _) in PARAMETERS.items():
        text = getattr(args, name.replace("-", "_"), None)
        if text is None:
            continue
        try:
            value = typ(text)
        except ValueError:
            raise InputError(f"malformed --{name} {text!r}: expected "
                             f"{'an integer' if typ is int else 'a number'}") from None
        if value != value or value < 0 or (typ is int and name.startswith("points") and
                                           value < 1):
            raise InputError(f"bad --{name} {text!r}: must be "
                             f"{'at least 1' if name.startswith('points') else 'non-negative'}")
        out[name.replace("-", "_")] = value
    return out


def generator_class():
    """`SamAutomaticMaskGenerator`, or one clear error if this install lacks it."""
    try:
        from .automatic import SamAutomaticMaskGenerator
    except ImportError as e:
        raise InputError(f"--everything is not available: the automatic mask generator "
                         f"(models.sam.automatic) cannot be imported ({e}); use --prompts") \
            from None
    return SamAutomaticMaskGenerator


def make_generator(sam, params: Dict[str, Any]):
    import inspect

    cls = generator_class()
    if "progress" in inspect.signature(cls).parameters:
        params = {**params, "progress": False}  # the job's own bar covers the images
    try:
        return cls(sam, output_mode="coco_rle", **params)
    except TypeError as e:
        raise InputError(f"--everything: the mask generator rejected the options: {e}") \
            from None
