"""Greedy box non-maximum suppression on the host (numpy).

Detection-style post-processing (SAM's segment-everything, any box detector)
keeps the best-scoring box and drops every remaining box that overlaps it by
more than a threshold, then repeats. The number of boxes is small (hundreds
to a few thousand) and the loop is inherently sequential, so this is host
code, not a graph op: one vectorised IoU row per kept box.

The semantics are those of the usual reference (torchvision's ``nms``), so
results can be compared box for box:

* boxes are ``(x0, y0, x1, y1)`` with area ``(x1 - x0) * (y1 - y0)`` (no +1);
* candidates are visited in descending score order, ties in input order
  (a stable sort);
* a box is dropped when its IoU with a kept box is strictly greater than the
  threshold; IoU is computed in float32 (an IoU of two empty boxes is NaN,
  which drops nothing);
* the result is the kept indices in visiting order (best first).
"""

from __future__ import annotations

import numpy as np

__all__ = ["box_nms", "box_area"]


def box_area(boxes: np.ndarray) -> np.ndarray:
    """``(x1 - x0) * (y1 - y0)`` per XYXY box."""
    b = np.asarray(boxes)
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def box_nms(boxes, scores, iou_threshold: float) -> np.ndarray:
    """Indices (int64) of the boxes greedy NMS keeps, best score first (see module doc)."""
    b = np.asarray(boxes, dtype=np.float32)
    s = np.asarray(scores)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must be [N, 4] (x0, y0, x1, y1), got shape {b.shape}")
    if s.shape != (b.shape[0],):
        raise ValueError(f"scores must be [N] = [{b.shape[0]}], got shape {s.shape}")
    n = b.shape[0]
    if n == 0:
        return np.zeros(0, np.int64)
    # Stable descending order: negate, so equal scores keep their input order.
    order = np.argsort(-s.astype(np.float64), kind="stable")
    x0, y0, x1, y1 = (b[:, i] for i in range(4))
    area = (x1 - x0) * (y1 - y0)
    alive = np.ones(n, bool)
    keep = []
    thr = float(iou_threshold)
    with np.errstate(invalid="ignore", divide="ignore"):
        for pos in range(n):
            i = order[pos]
            if not alive[i]:
                continue
            keep.append(i)
            rest = order[pos + 1:]
            rest = rest[alive[rest]]
            if rest.size == 0:
                break
            w = np.maximum(np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]),
                           np.float32(0))
            h = np.maximum(np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]),
                           np.float32(0))
            inter = w * h
            iou = inter / (area[i] + area[rest] - inter)
            alive[rest[iou.astype(np.float64) > thr]] = False
    return np.asarray(keep, dtype=np.int64)
