"""``rlx segment``: an image and a few clicks or a box in, masks on disk out.

    rlx segment photo.jpg --checkpoint sam_vit_b_01ec64.pth --point 420,310 --out masks/
    rlx segment photo.jpg --checkpoint sam_vit_b_01ec64.pth --box 80,40,600,470 \\
        --point 300,200,0 --multimask --out masks/

``--everything`` segments everything instead (`models.sam.automatic_cli`).

Writes into ``--out``: ``mask_<i>.png`` per returned mask (8-bit, 255 = in
the mask), ``overlay.png`` (the highest-scoring mask tinted over the image,
with the prompt drawn on top) and ``result.json`` (scores, prompt, timings,
model / profile / checkpoint). Without ``--checkpoint`` the model runs on
synthetic random weights: the command says so on stderr and in the JSON, and
the masks mean nothing.

Nothing is half-written: arguments are checked and the image read before the
model is loaded, every file is computed before the first one is written, the
files are written into a temporary directory next to ``--out`` and then moved
into place, ``result.json`` last (a present JSON means a complete result).

``--model small`` (not shown in ``--help``) selects the tiny test
configuration of `models.sam.config.small_config`; it exists so the command
can be tested end to end in seconds.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from rlx.errors import InputError

__all__ = ["COMMAND", "add_arguments", "run", "parse_point", "parse_box"]

MODELS = ("vit_b", "vit_l", "vit_h")
HIDDEN_MODELS = ("small",)  # test configuration, see the module docstring
RESULT_JSON = "result.json"
OVERLAY_PNG = "overlay.png"
SYNTHETIC_NOTE = ("no --checkpoint given: running on SYNTHETIC random weights, "
                  "the masks are meaningless (pass --checkpoint sam_vit_b_01ec64.pth)")

_TINT = np.array([30, 144, 255], dtype=np.float32)  # the mask colour of the overlay
_FG, _BG, _BOX = (0, 220, 0), (230, 20, 20), (255, 200, 0)


# ---- argument parsing (strings are checked in run(), so errors are one line) -------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="image file (PNG, JPEG, ...; grayscale/RGBA are converted)")
    p.add_argument("--checkpoint", metavar="PATH",
                   help="Meta SAM checkpoint (.pth) or .safetensors; without it: synthetic "
                        "weights (meaningless masks)")
    p.add_argument("--model", default="vit_b", metavar="{vit_b,vit_l,vit_h,sam2.1_hiera_t,...}",
                   help="model matching the checkpoint (default vit_b); SAM 2 / 2.1 by Meta's "
                        "config names: sam2_hiera_{t,s,b+,l}, sam2.1_hiera_{t,s,b+,l}")
    p.add_argument("--point", action="append", default=[], metavar="X,Y[,LABEL]",
                   help="a click in image pixels; LABEL 1 = foreground (default), "
                        "0 = background; repeat for several")
    p.add_argument("--box", metavar="X0,Y0,X1,Y1", help="a box in image pixels")
    p.add_argument("--multimask", action="store_true",
                   help="return 3 candidate masks instead of 1 (best for a single click)")
    p.add_argument("--threshold", type=str, default=None, metavar="T",
                   help="mask logit threshold (default 0.0)")
    p.add_argument("--profile", default=None, metavar="P",
                   help="compile profile: a preset (default, debug, reference, numba, ...) or a "
                        ".toml/.json file (default: a profile next to the checkpoint, "
                        "else 'default')")
    p.add_argument("--seed", type=str, default="0", help=argparse.SUPPRESS)
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    from .automatic_cli import add_everything_arguments

    add_everything_arguments(p)


def _numbers(text: str, what: str, form: str, counts: Tuple[int, ...]) -> List[float]:
    parts = [s.strip() for s in text.split(",")]
    if len(parts) not in counts:
        raise InputError(f"malformed {what} {text!r}: expected {form}")
    try:
        values = [float(s) for s in parts]
    except ValueError:
        raise InputError(f"malformed {what} {text!r}: expected {form} with numbers") from None
    if not all(np.isfinite(values)):
        raise InputError(f"malformed {what} {text!r}: values must be finite")
    return values


def parse_point(text: str) -> Tuple[float, float, int]:
    """``"X,Y"`` or ``"X,Y,LABEL"`` -> (x, y, label); LABEL 1 (foreground) or 0."""
    v = _numbers(text, "--point", "X,Y or X,Y,LABEL", (2, 3))
    label = v[2] if len(v) == 3 else 1.0
    if label not in (0.0, 1.0):
        raise InputError(f"malformed --point {text!r}: LABEL must be 1 (foreground) or "
                         f"0 (background)")
    return v[0], v[1], int(label)


def parse_box(text: str) -> Tuple[float, float, float, float]:
    """``"X0,Y0,X1,Y1"`` with X0 <= X1 and Y0 <= Y1."""
    x0, y0, x1, y1 = _numbers(text, "--box", "X0,Y0,X1,Y1", (4,))
    if x1 < x0 or y1 < y0:
        raise InputError(f"bad --box {text!r}: need X0 <= X1 and Y0 <= Y1")
    return x0, y0, x1, y1


def _model_name(name: str) -> str:
    if name not in MODELS + HIDDEN_MODELS:
        raise InputError(f"unknown --model {name!r}; choose from {', '.join(MODELS)}")
    return name


def _threshold(text: Optional[str]) -> Optional[float]:
    if text is None:
        return None
    try:
        t = float(text)
    except ValueError:
        raise InputError(f"malformed --threshold {text!r}: expected a number") from None
    if not np.isfinite(t):
        raise InputError(f"malformed --threshold {text!r}: must be finite")
    return t


def _seed(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InputError(f"malformed --seed {text!r}: expected an integer") from None


# ---- rendering ------------------------------------------------------------------------------


def _png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _draw_disc(img: np.ndarray, x: float, y: float, r: int, colour) -> None:
    h, w = img.shape[:2]
    cx, cy = int(round(x)), int(round(y))
    y0, y1, x0, x1 = max(cy - r, 0), min(cy + r + 1, h), max(cx - r, 0), min(cx + r + 1, w)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1]
    inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    ring = inside & ((yy - cy) ** 2 + (xx - cx) ** 2 >= (r - 1) ** 2)
    patch = img[y0:y1, x0:x1]
    patch[inside] = colour
    patch[ring] = (255, 255, 255)


def _draw_box(img: np.ndarray, box, colour, width: int) -> None:
    h, w = img.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, x1 = min(max(x0, 0), w - 1), min(max(x1, 0), w - 1)
    y0, y1 = min(max(y0, 0), h - 1), min(max(y1, 0), h - 1)
    img[y0:min(y0 + width, h), x0:x1 + 1] = colour
    img[max(y1 - width + 1, 0):y1 + 1, x0:x1 + 1] = colour
    img[y0:y1 + 1, x0:min(x0 + width, w)] = colour
    img[y0:y1 + 1, max(x1 - width + 1, 0):x1 + 1] = colour


def render_overlay(image: np.ndarray, mask: np.ndarray, points, box) -> np.ndarray:
    """The image with ``mask`` tinted (50%) and the prompt drawn on top: HxWx3 uint8."""
    out = image.astype(np.float32)
    out[mask] = 0.5 * out[mask] + 0.5 * _TINT
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    size = max(2, round(min(image.shape[:2]) / 120))
    if box is not None:
        _draw_box(out, box, _BOX, size)
    for x, y, label in points:
        _draw_disc(out, x, y, 2 * size + 1, _FG if label == 1 else _BG)
    return out


# ---- writing ----------------------------------------------------------------------------------


def _write_all(out_dir: Path, files: List[Tuple[str, bytes]]) -> None:
    """Write ``files`` into a temp dir next to ``out_dir``, then move them in (JSON last)."""
    out_dir = out_dir.absolute()
    parent = out_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create output directory {out_dir}: {e.strerror}") from None
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} exists and is not a directory")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=parent))
    except OSError as e:
        raise InputError(f"cannot write to {parent}: {e.strerror}") from None
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would become --out's mode on rename
    try:
        for name, data in files:
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        if not out_dir.exists():
            try:
                os.rename(tmp, out_dir)  # the whole result appears at once
                return
            except OSError:
                pass  # created meanwhile: fall through to moving file by file
        out_dir.mkdir(exist_ok=True)
        for name, _ in files:  # files ordered with result.json last
            os.replace(tmp / name, out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---- the command ----------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    if getattr(args, "everything", False):
        from .automatic_cli import run_everything

        return run_everything(args)
    from models.sam2.predictor_cli import is_sam2_model, run_sam2

    if is_sam2_model(args.model):  # sam2.1_hiera_t, ...: same arguments and files
        return run_sam2(args)
    t_start = time.perf_counter()
    # 1. Everything that can be checked without the model.
    model = _model_name(args.model)
    points = [parse_point(p) for p in args.point]
    box = parse_box(args.box) if args.box is not None else None
    if not points and box is None:
        raise InputError("give at least one --point X,Y[,LABEL] or a --box X0,Y0,X1,Y1")
    thr = _threshold(args.threshold)
    seed = _seed(args.seed)
    if args.checkpoint is not None and not os.path.isfile(args.checkpoint):
        raise InputError(f"checkpoint not found: {args.checkpoint}")
    from rlx.runtime.profile import resolve_profile

    profile = resolve_profile(args.profile, args.checkpoint)

    from .config import get_config
    from .image import load_image
    from .predict import predict_detailed, validate_prompt

    config = get_config(model)
    image = load_image(args.image)
    original_size = image.shape[:2]
    coords = np.array([[x, y] for x, y, _ in points], dtype=np.float64) if points else None
    labels = np.array([lab for _, _, lab in points], dtype=np.int64) if points else None
    box_arr = np.array(box, dtype=np.float64) if box is not None else None
    validate_prompt(coords, labels, box_arr, None, original_size, config.mask_input_size)
    t_checked = time.perf_counter()

    # 2. Model, embedding, prediction.
    from .model import SamPredictor, build_sam
    from .weights import SyntheticWeightsWarning

    synthetic = args.checkpoint is None
    if synthetic:
        print(f"WARNING: {SYNTHETIC_NOTE}", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntheticWeightsWarning)  # announced above, once
        sam = build_sam(config, checkpoint=args.checkpoint, profile=profile, seed=seed)
    t_model = time.perf_counter()
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    t_embed = time.perf_counter()
    pred = predict_detailed(predictor, coords, labels, box_arr, None,
                            multimask_output=args.multimask, mask_threshold=thr)
    t_pred = time.perf_counter()

    # 3. Render every file in memory.
    masks, scores = pred.masks, pred.iou_predictions
    best = int(np.argmax(scores))
    files: List[Tuple[str, bytes]] = []
    mask_entries = []
    for i in range(masks.shape[0]):
        name = f"mask_{i}.png"
        files.append((name, _png_bytes(masks[i].astype(np.uint8) * 255)))
        mask_entries.append({"file": name, "iou_prediction": float(scores[i]),
                             "area_pixels": int(masks[i].sum())})
    files.append((OVERLAY_PNG, _png_bytes(render_overlay(image, masks[best], points, box))))
    t_render = time.perf_counter()

    result = {
        "image": os.path.abspath(args.image),
        "image_size": {"height": int(original_size[0]), "width": int(original_size[1])},
        "model": model,
        "checkpoint": os.path.abspath(args.checkpoint) if args.checkpoint else None,
        "synthetic_weights": synthetic,
        "warning": SYNTHETIC_NOTE if synthetic else None,
        "profile": {"name": profile.name, "backend": profile.backend,
                    "source": profile.source or profile.name},
        "prompt": {
            "points": [{"x": x, "y": y, "label": lab} for x, y, lab in points],
            "box": list(box) if box is not None else None,
            "multimask": bool(args.multimask),
            "threshold": float(thr) if thr is not None else float(config.mask_threshold),
        },
        "masks": mask_entries,
        "best_mask": best,
        "overlay": OVERLAY_PNG,
        "decoder_bucket": {"sparse_tokens": pred.bucket[0], "mask_input": pred.bucket[1]},
        "timings_seconds": {
            "check_inputs": t_checked - t_start,
            "load_model": t_model - t_checked,
            "set_image": t_embed - t_model,
            "predict": t_pred - t_embed,
            "predict_steps": dict(pred.timings),
            "render": t_render - t_pred,
        },
    }
    result["timings_seconds"]["total_before_write"] = time.perf_counter() - t_start
    files.append((RESULT_JSON, (json.dumps(result, indent=2) + "\n").encode("utf-8")))
    _write_all(Path(args.out), files)

    for entry in mask_entries:
        print(f"{entry['file']}: predicted IoU {entry['iou_prediction']:.4f}, "
              f"{entry['area_pixels']} pixels")
    print(f"wrote {len(files)} files to {args.out} (best mask: mask_{best}.png)")
    if synthetic:
        print(f"WARNING: {SYNTHETIC_NOTE}", file=sys.stderr)
    return 0


def _command():
    from rlx.zoo import Command

    return Command(name="segment",
                   help="segment an image with SAM from clicks and/or a box; masks to PNG + JSON",
                   add_arguments=add_arguments, run=run)


COMMAND = _command()
