"""``rlx segment IMAGE --everything``: every mask of an image to COCO JSON and pictures.

    rlx segment photo.jpg --checkpoint sam_vit_b_01ec64.pth --everything --out everything/
    rlx segment photo.jpg --everything --points-per-side 16 --crop-layers 1 \\
        --min-region-area 100 --png --out everything/

Writes into ``--out``: ``masks.json`` (COCO-style: one ``images`` entry and
one annotation per mask with its COCO RLE ``segmentation``, ``bbox`` XYWH,
``area``, ``predicted_iou``, ``stability_score``, ``point_coords``,
``crop_box``), ``everything.png`` (every mask in its own colour over the
image, largest first so small masks stay visible) and, with ``--png``,
``mask_<i>.png`` per mask. As with ``rlx segment``: arguments and the image
are checked before the model loads, files are written to a temporary
directory and moved into place (``masks.json`` last), bad input is one line
on stderr and exit code 2.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import List, Tuple

import numpy as np

from rlx.errors import InputError

__all__ = ["MASKS_JSON", "EVERYTHING_PNG", "add_everything_arguments", "run_everything",
           "render_everything"]

MASKS_JSON = "masks.json"
EVERYTHING_PNG = "everything.png"


def add_everything_arguments(p) -> None:
    p.add_argument("--everything", action="store_true",
                   help="segment everything (automatic mask generator) instead of clicks/box; "
                        "writes masks.json (COCO RLE) and everything.png")
    p.add_argument("--points-per-side", default="32", metavar="N",
                   help="--everything: grid of N x N clicks per crop (default 32)")
    p.add_argument("--crop-layers", default="0", metavar="K",
                   help="--everything: crop layers (layer i adds 4^i crops; default 0)")
    p.add_argument("--min-region-area", default="0", metavar="A",
                   help="--everything: remove islands and holes smaller than A pixels "
                        "(needs scipy: pip install 'rlx[everything]')")
    p.add_argument("--pred-iou-thresh", default="0.88", metavar="T",
                   help="--everything: keep masks whose predicted IoU is above T (default 0.88)")
    p.add_argument("--stability-thresh", default="0.95", metavar="T",
                   help="--everything: keep masks whose stability score is at least T "
                        "(default 0.95)")
    p.add_argument("--png", action="store_true", help="--everything: also one PNG per mask")


def _int_arg(text: str, flag: str, lo: int) -> int:
    try:
        v = int(text)
    except (TypeError, ValueError):
        raise InputError(f"malformed {flag} {text!r}: expected an integer") from None
    if v < lo:
        raise InputError(f"bad {flag} {text!r}: must be at least {lo}")
    return v


def _unit_arg(text: str, flag: str) -> float:
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise InputError(f"malformed {flag} {text!r}: expected a number") from None
    if not 0.0 <= v <= 1.0:
        raise InputError(f"bad {flag} {text!r}: must be in [0, 1]")
    return v


def _palette(n: int) -> np.ndarray:
    """``n`` distinct, saturated colours (golden-ratio hues), uint8 ``[n, 3]``."""
    h = (np.arange(n) * 0.618033988749895) % 1.0
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    v, s = 0.95, 0.75
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = np.stack([np.choose(i, [v, q, p, p, t, v]), np.choose(i, [t, v, v, q, p, p]),
                      np.choose(i, [p, p, t, v, v, q])], axis=1)
    return np.rint(255 * table).astype(np.uint8)


def render_everything(image: np.ndarray, masks: List[np.ndarray]) -> np.ndarray:
    """Every mask tinted (55 %) in its own colour over the image, largest first."""
    out = image.astype(np.float32)
    colours = _palette(len(masks)).astype(np.float32)
    order = sorted(range(len(masks)), key=lambda i: -int(masks[i].sum()))
    for i in order:
        m = masks[i]
        out[m] = 0.45 * out[m] + 0.55 * colours[i]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def run_everything(args) -> int:
    from .segment_cli import SYNTHETIC_NOTE, _model_name, _png_bytes, _seed, _write_all

    t_start = time.perf_counter()
    model = _model_name(args.model)
    if args.point or args.box is not None or args.multimask or args.threshold is not None:
        raise InputError("--everything takes no --point, --box, --multimask or --threshold "
                         "(it prompts a grid of points itself)")
    pps = _int_arg(args.points_per_side, "--points-per-side", 1)
    crops = _int_arg(args.crop_layers, "--crop-layers", 0)
    area = _int_arg(args.min_region_area, "--min-region-area", 0)
    iou_t = _unit_arg(args.pred_iou_thresh, "--pred-iou-thresh")
    stab_t = _unit_arg(args.stability_thresh, "--stability-thresh")
    seed = _seed(args.seed)
    if area > 0:
        from .automatic_utils import require_scipy

        require_scipy()
    if args.checkpoint is not None and not os.path.isfile(args.checkpoint):
        raise InputError(f"checkpoint not found: {args.checkpoint}")
    from rlx.runtime.profile import resolve_profile

    from .config import get_config
    from .image import load_image

    profile = resolve_profile(args.profile, args.checkpoint)
    config = get_config(model)
    image = load_image(args.image)
    h, w = image.shape[:2]

    from .automatic import SamAutomaticMaskGenerator
    from .model import build_sam
    from .weights import SyntheticWeightsWarning

    synthetic = args.checkpoint is None
    if synthetic:
        print(f"WARNING: {SYNTHETIC_NOTE}", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntheticWeightsWarning)
        sam = build_sam(config, checkpoint=args.checkpoint, profile=profile, seed=seed)
    # the parameters are checked (and scipy looked for) before the image is encoded
    gen = SamAutomaticMaskGenerator(sam, points_per_side=pps, crop_n_layers=crops,
                                    min_mask_region_area=area, pred_iou_thresh=iou_t,
                                    stability_score_thresh=stab_t, output_mode="binary_mask")
    t_model = time.perf_counter()
    records = gen.generate(image)
    t_gen = time.perf_counter()

    from .automatic_utils import coco_rle

    masks = [r["segmentation"] for r in records]
    files: List[Tuple[str, bytes]] = []
    annotations = []
    for i, r in enumerate(records):
        ann = {"id": i + 1, "image_id": 1, "category_id": 1,
               "segmentation": coco_rle(r["segmentation"]), "area": r["area"],
               "bbox": r["bbox"], "iscrowd": 0, "predicted_iou": r["predicted_iou"],
               "stability_score": r["stability_score"], "point_coords": r["point_coords"],
               "crop_box": r["crop_box"]}
        if args.png:
            name = f"mask_{i}.png"
            files.append((name, _png_bytes(r["segmentation"].astype(np.uint8) * 255)))
            ann["file"] = name
        annotations.append(ann)
    files.append((EVERYTHING_PNG, _png_bytes(render_everything(image, masks))))
    doc = {
        "info": {"description": "rlx segment --everything", "model": model,
                 "checkpoint": os.path.abspath(args.checkpoint) if args.checkpoint else None,
                 "synthetic_weights": synthetic,
                 "warning": SYNTHETIC_NOTE if synthetic else None,
                 "profile": profile.name,
                 "parameters": {"points_per_side": pps, "crop_n_layers": crops,
                                "min_mask_region_area": area,
                                "pred_iou_thresh": iou_t, "stability_score_thresh": stab_t},
                 "timings_seconds": {"load_model": t_model - t_start,
                                     "generate": t_gen - t_model,
                                     "generate_steps": dict(gen.timings)}},
        "images": [{"id": 1, "file_name": os.path.basename(args.image), "height": int(h),
                    "width": int(w)}],
        "categories": [{"id": 1, "name": "object"}],
        "annotations": annotations,
    }
    files.append((MASKS_JSON, (json.dumps(doc, indent=1) + "\n").encode("utf-8")))
    _write_all(Path(args.out), files)
    print(f"{len(records)} masks; wrote {len(files)} files to {args.out} "
          f"({MASKS_JSON}, {EVERYTHING_PNG}{', mask_<i>.png' if args.png else ''}) "
          f"in {t_gen - t_model:.1f} s")
    if synthetic:
        print(f"WARNING: {SYNTHETIC_NOTE}", file=sys.stderr)
    return 0
