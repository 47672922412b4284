"""The ``--prompts`` file of ``rlx annotate``: per-image clicks and boxes, checked up front.

Format (JSON)::

    {
      "images": {
        "cats/001.jpg": [
          {"points": [[120, 80]]},                              one foreground click
          {"points": [[50, 60], [70, 90]], "labels": [1, 0]},   a click and a background click
          {"box": [10, 20, 200, 220]},                          a box x0, y0, x1, y1
          {"box": [10, 20, 200, 220], "points": [[100, 100]]}   both
        ]
      }
    }

Image names are the keys of the source: paths relative to the SRC folder (or
as written in the list file), with ``/``. Each prompt gives one annotation
(a lone click is ambiguous, so it asks for three candidates and keeps the one
with the best predicted IoU, as Meta recommends; any other prompt asks for
one mask). Coordinates are (x, y) pixels of the original image.

Everything that can be checked without the images is checked here, before a
model is loaded, and each mistake is one `InputError` naming the file, the
image and the field. Coordinates outside an image can only be seen once the
image is read: that becomes the image's entry in the output's ``errors``.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, List, Sequence

from rlx.errors import InputError

from .predict import MAX_POINTS

__all__ = ["load_prompts", "parse_prompts", "match_images"]

_KEYS = ("points", "labels", "box")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_prompt(p: Any, where: str) -> Dict[str, Any]:
    if not isinstance(p, dict):
        raise InputError(f"{where}: a prompt must be an object with \"points\" and/or \"box\", "
                         f"got {type(p).__name__}")
    unknown = sorted(set(p) - set(_KEYS))
    if unknown:
        raise InputError(f"{where}: unknown field {unknown[0]!r} (fields: points, labels, box)")
    out: Dict[str, Any] = {}
    points = p.get("points")
    if points is not None:
        if not isinstance(points, list) or not points:
            raise InputError(f"{where}: \"points\" must be a non-empty list of [x, y] pairs")
        for i, xy in enumerate(points):
            if not (isinstance(xy, list) and len(xy) == 2 and all(map(_number, xy))):
                raise InputError(f"{where}: \"points\"[{i}] must be [x, y] with two finite "
                                 f"numbers, got {json.dumps(xy)}")
        if len(points) > MAX_POINTS:
            raise InputError(f"{where}: at most {MAX_POINTS} points per prompt, "
                             f"got {len(points)}")
        labels = p.get("labels", [1] * len(points))
        if not isinstance(labels, list) or len(labels) != len(points):
            raise InputError(f"{where}: \"labels\" must be a list with one label per point "
                             f"({len(points)} points)")
        for i, lab in enumerate(labels):
            if lab not in (0, 1) or isinstance(lab, bool):
                raise InputError(f"{where}: \"labels\"[{i}] must be 1 (foreground) or "
                                 f"0 (background), got {json.dumps(lab)}")
        out["points"] = [[float(x), float(y)] for x, y in points]
        out["labels"] = [int(lab) for lab in labels]
    elif "labels" in p:
        raise InputError(f"{where}: \"labels\" given without \"points\"")
    box = p.get("box")
    if box is not None:
        if not (isinstance(box, list) and len(box) == 4 and all(map(_number, box))):
            raise InputError(f"{where}: \"box\" must be [x0, y0, x1, y1] with four finite "
                             f"numbers, got {json.dumps(box)}")
        x0, y0, x1, y1 = box
        if x1 < x0 or y1 < y0:
            raise InputError(f"{where}: \"box\" needs x0 <= x1 and y0 <= y1, "
                             f"got {json.dumps(box)}")
        out["box"] = [float(v) for v in box]
    if not out:
        raise InputError(f"{where}: a prompt needs \"points\" or a \"box\"")
    return out


def parse_prompts(data: Any, source: str) -> Dict[str, List[Dict[str, Any]]]:
    """Validated ``{image name: [prompt, ...]}`` from the decoded JSON ``data``."""
    if not isinstance(data, dict) or not isinstance(data.get("images"), dict):
        raise InputError(f"{source}: expected an object {{\"images\": {{image name: [prompts]}}}}")
    extra = sorted(set(data) - {"images"})
    if extra:
        raise InputError(f"{source}: unknown top-level field {extra[0]!r} (expected \"images\")")
    out = {}
    for name, prompts in data["images"].items():
        where = f"{source}: image {name!r}"
        if not isinstance(prompts, list):
            raise InputError(f"{where}: expected a list of prompts, got "
                             f"{type(prompts).__name__}")
        key = _normalise(name)
        if key in out:
            raise InputError(f"{where}: the same image is named twice")
        out[key] = [_check_prompt(p, f"{where}, prompt {i}") for i, p in enumerate(prompts)]
    if not out:
        raise InputError(f"{source}: names no images")
    return out


def load_prompts(path: str) -> Dict[str, List[Dict[str, Any]]]:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise InputError(f"cannot read --prompts file {path}: {e.strerror}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"--prompts file {path} is not valid JSON: {e}") from None
    return parse_prompts(data, path)


def _normalise(name: str) -> str:
    return os.path.normpath(name).replace(os.sep, "/")


def match_images(prompts: Dict[str, List[Dict[str, Any]]], keys: Sequence[str],
                 source: str) -> None:
    """Every image the prompts name must be in the source (a typo must not vanish)."""
    known = {_normalise(k) for k in keys}
    missing = [name for name in prompts if name not in known]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise InputError(f"{source}: {len(missing)} image(s) not found in the source: "
                         f"{shown}{more} (names are paths relative to the SRC folder)")
