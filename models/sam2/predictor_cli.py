"""``rlx segment IMAGE --model sam2.1_hiera_t ...``: the SAM 2 side of the segment command.

The command and its arguments are SAM v1's (`models.sam.segment_cli`: the
same ``--point`` / ``--box`` / ``--multimask`` / ``--threshold`` / ``--out``,
the same files -- ``mask_<i>.png``, ``overlay.png``, ``result.json`` --
written atomically, the same synthetic-weights warning); that module hands
any ``--model`` naming a SAM 2 config here. ``--checkpoint`` takes Meta's
``sam2.1_hiera_tiny.pt`` (or ``.safetensors``). Tests set ``args.sam2_image_size``
(no command-line flag) to run a 256-pixel model end to end in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import List, Tuple

import numpy as np

from rlx.errors import InputError

from models.sam import segment_cli as v1

from .config import CONFIGS, canonical_name

__all__ = ["is_sam2_model", "run_sam2"]

SYNTHETIC_NOTE = ("no --checkpoint given: running on SYNTHETIC random weights, the masks are "
                  "meaningless (pass --checkpoint sam2.1_hiera_tiny.pt)")


def is_sam2_model(name) -> bool:
    """True when ``--model`` names a SAM 2 / 2.1 config (any spelling Meta uses)."""
    return str(name).lower().startswith("sam2")


def run_sam2(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    name = canonical_name(args.model)
    if name not in CONFIGS:
        raise InputError(f"unknown --model {args.model!r}; SAM 2 models: {', '.join(CONFIGS)}")
    points = [v1.parse_point(p) for p in args.point]
    box = v1.parse_box(args.box) if args.box is not None else None
    if not points and box is None:
        raise InputError("give at least one --point X,Y[,LABEL] or a --box X0,Y0,X1,Y1")
    thr = v1._threshold(args.threshold)
    seed = v1._seed(args.seed)
    if args.checkpoint is not None and not os.path.isfile(args.checkpoint):
        raise InputError(f"checkpoint not found: {args.checkpoint}")
    from rlx.runtime.profile import resolve_profile

    profile = resolve_profile(args.profile, args.checkpoint)
    from models.sam.image import load_image

    image = load_image(args.image)
    h, w = image.shape[:2]
    coords = np.array([[x, y] for x, y, _ in points], np.float64) if points else None
    labels = np.array([lab for _, _, lab in points], np.int64) if points else None
    for x, y, _ in points:
        if not (0 <= x <= w and 0 <= y <= h):
            raise InputError(f"--point {x:g},{y:g} is outside the {w}x{h} image")
    if box is not None and not (0 <= box[0] and box[2] <= w and 0 <= box[1] and box[3] <= h):
        raise InputError(f"--box {','.join(f'{v:g}' for v in box)} is outside the {w}x{h} image")
    t_checked = time.perf_counter()

    from models.sam.weights import SyntheticWeightsWarning

    from .build import build_sam2
    from .predictor import SAM2ImagePredictor

    synthetic = args.checkpoint is None
    if synthetic:
        print(f"WARNING: {SYNTHETIC_NOTE}", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntheticWeightsWarning)  # announced above, once
        model = build_sam2(name, checkpoint=args.checkpoint, profile=profile, seed=seed,
                           image_size=getattr(args, "sam2_image_size", None))
    t_model = time.perf_counter()
    predictor = SAM2ImagePredictor(model, mask_threshold=0.0 if thr is None else thr)
    predictor.set_image(image)
    t_embed = time.perf_counter()
    masks, scores, _ = predictor.predict(coords, labels, None if box is None else np.array(box),
                                         multimask_output=args.multimask)
    steps = dict(predictor.timings)
    t_pred = time.perf_counter()

    masks = masks > 0.5
    best = int(np.argmax(scores))
    files: List[Tuple[str, bytes]] = []
    entries = []
    for i in range(masks.shape[0]):
        fname = f"mask_{i}.png"
        files.append((fname, v1._png_bytes(masks[i].astype(np.uint8) * 255)))
        entries.append({"file": fname, "iou_prediction": float(scores[i]),
                        "area_pixels": int(masks[i].sum())})
    files.append((v1.OVERLAY_PNG, v1._png_bytes(v1.render_overlay(image, masks[best], points,
                                                                  box))))
    t_render = time.perf_counter()
    result = {
        "image": os.path.abspath(args.image),
        "image_size": {"height": int(h), "width": int(w)},
        "model": name,
        "checkpoint": os.path.abspath(args.checkpoint) if args.checkpoint else None,
        "synthetic_weights": synthetic,
        "warning": SYNTHETIC_NOTE if synthetic else None,
        "profile": {"name": profile.name, "backend": profile.backend,
                    "source": profile.source or profile.name},
        "prompt": {"points": [{"x": x, "y": y, "label": lab} for x, y, lab in points],
                   "box": list(box) if box is not None else None,
                   "multimask": bool(args.multimask),
                   "threshold": float(thr) if thr is not None else 0.0},
        "masks": entries,
        "best_mask": best,
        "overlay": v1.OVERLAY_PNG,
        "timings_seconds": {"check_inputs": t_checked - t_start, "load_model": t_model - t_checked,
                            "set_image": t_embed - t_model, "predict": t_pred - t_embed,
                            "predict_steps": steps, "render": t_render - t_pred},
    }
    files.append((v1.RESULT_JSON, (json.dumps(result, indent=2) + "\n").encode("utf-8")))
    v1._write_all(Path(args.out), files)
    for entry in entries:
        print(f"{entry['file']}: predicted IoU {entry['iou_prediction']:.4f}, "
              f"{entry['area_pixels']} pixels")
    print(f"wrote {len(files)} files to {args.out} (best mask: mask_{best}.png)")
    if synthetic:
        print(f"WARNING: {SYNTHETIC_NOTE}", file=sys.stderr)
    return 0
