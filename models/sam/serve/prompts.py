"""Request bodies (a mask request, segment-everything settings), checked field by field.

    {"points": [[x, y, label], ...], "box": [x0, y0, x1, y1] | null,
     "multimask": true, "refine": false}

Coordinates are pixels of the uploaded image (after its EXIF rotation, as
browsers show it); ``label`` is 1 (foreground) or 0 (background) and may be
left out (1). Every problem is a 422 naming the field (``points[2]``,
``box``, ``multimask``, ...), including points or box corners outside the
image: as in `models.sam.predict`, they are refused, not clipped. Unknown
fields are refused too, so a typo (``"multi_mask"``) is not silently
ignored.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from ..predict import MAX_POINTS
from .errors import ApiError

__all__ = ["MaskRequest", "parse_mask_request", "FIELDS", "EverythingRequest",
           "parse_everything_request", "EVERYTHING_FIELDS", "MAX_POINTS_PER_SIDE"]

FIELDS = ("points", "box", "multimask", "refine")


@dataclass(frozen=True)
class MaskRequest:
    points: List[Tuple[float, float, int]]
    box: Optional[Tuple[float, float, float, float]]
    multimask: bool
    refine: bool

    def coords(self) -> Optional[np.ndarray]:
        return np.array([p[:2] for p in self.points], dtype=np.float64) if self.points else None

    def labels(self) -> Optional[np.ndarray]:
        return np.array([p[2] for p in self.points], dtype=np.int64) if self.points else None

    def box_array(self) -> Optional[np.ndarray]:
        return np.array(self.box, dtype=np.float64) if self.box is not None else None


def _bad(field: str, message: str) -> ApiError:
    return ApiError(422, f"{field}: {message}", field)


def _number(value, field: str) -> float:
    # bool is an int in Python, but true/false is never a coordinate
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(field, f"expected a number, got {json.dumps(value)}")
    v = float(value)
    if not math.isfinite(v):
        raise _bad(field, "must be finite")
    return v


def _inside(x: float, y: float, field: str, what: str, width: int, height: int) -> None:
    if not (0.0 <= x <= width and 0.0 <= y <= height):
        raise _bad(field, f"{what} (x={x:g}, y={y:g}) is outside the {width}x{height} image "
                          f"(x in [0, {width}], y in [0, {height}])")


def _flag(body: dict, name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise _bad(name, f"expected true or false, got {json.dumps(value)}")
    return value


def _object(raw: bytes, fields, empty_ok: bool = False) -> dict:
    if empty_ok and not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise _bad("body", f"malformed JSON: {e}") from None
    except RecursionError:  # e.g. "[[[[..." nested deeper than the parser's stack
        raise _bad("body", "malformed JSON: nested too deeply") from None
    if not isinstance(body, dict):
        raise _bad("body", f"expected a JSON object with {', '.join(fields)}")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise _bad(unknown[0], f"unknown field; the fields are {', '.join(fields)}")
    return body


def parse_mask_request(raw: bytes, width: int, height: int) -> MaskRequest:
    """Parse and check a mask request for an image of ``width`` x ``height`` pixels."""
    body = _object(raw, FIELDS)

    raw_points = body.get("points", [])
    if raw_points is None:
        raw_points = []
    if not isinstance(raw_points, list):
        raise _bad("points", "expected a list of [x, y, label]")
    if len(raw_points) > MAX_POINTS:
        raise _bad("points", f"at most {MAX_POINTS} points per request, got {len(raw_points)}")
    points = []
    for i, p in enumerate(raw_points):
        field = f"points[{i}]"
        if not isinstance(p, list) or len(p) not in (2, 3):
            raise _bad(field, f"expected [x, y] or [x, y, label], got {json.dumps(p)}")
        x, y = _number(p[0], field), _number(p[1], field)
        label = _number(p[2], field) if len(p) == 3 else 1.0
        if label not in (0.0, 1.0):
            raise _bad(field, f"label must be 1 (foreground) or 0 (background), got {p[2]}")
        _inside(x, y, field, "point", width, height)
        points.append((x, y, int(label)))

    box = body.get("box")
    if box is not None:
        if not isinstance(box, list) or len(box) != 4:
            raise _bad("box", f"expected [x0, y0, x1, y1] or null, got {json.dumps(box)}")
        x0, y0, x1, y1 = (_number(v, "box") for v in box)
        if x1 < x0 or y1 < y0:
            raise _bad("box", f"need x0 <= x1 and y0 <= y1, got {box}")
        _inside(x0, y0, "box", "corner (x0, y0)", width, height)
        _inside(x1, y1, "box", "corner (x1, y1)", width, height)
        box = (x0, y0, x1, y1)

    if not points and box is None:
        raise _bad("points", "give at least one point or a box")
    return MaskRequest(points=points, box=box, multimask=_flag(body, "multimask", True),
                       refine=_flag(body, "refine", False))


# ---- segment everything ---------------------------------------------------------------------

#: the settings a client may change, with Meta's defaults
EVERYTHING_FIELDS = {"points_per_side": 32, "pred_iou_thresh": 0.88,
                     "stability_score_thresh": 0.95, "box_nms_thresh": 0.7}
#: a bound on the work one request can ask for (64 x 64 = 4096 prompts)
MAX_POINTS_PER_SIDE = 64


@dataclass(frozen=True)
class EverythingRequest:
    points_per_side: int = 32
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    box_nms_thresh: float = 0.7


def parse_everything_request(raw: bytes) -> EverythingRequest:
    """Optional JSON settings of a segment-everything request (an empty body: defaults)."""
    body = _object(raw, tuple(EVERYTHING_FIELDS), empty_ok=True)
    out = dict(EVERYTHING_FIELDS)
    n = body.get("points_per_side", out["points_per_side"])
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_POINTS_PER_SIDE:
        raise _bad("points_per_side", f"expected a whole number in 1..{MAX_POINTS_PER_SIDE}, "
                                      f"got {json.dumps(n)}")
    out["points_per_side"] = n
    for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh"):
        if name in body:
            v = _number(body[name], name)
            if not 0.0 <= v <= 1.0:
                raise _bad(name, f"must be in [0, 1], got {v:g}")
            out[name] = v
    return EverythingRequest(**out)
