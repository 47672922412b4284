"""torch stand-ins for the two torchvision box ops Meta's automatic mask generator calls.

torchvision cannot be installed beside the pinned torch here
(`tests.support.torchvision_shim` refuses its box ops), yet
``segment_anything.SamAutomaticMaskGenerator`` calls
``torchvision.ops.boxes.batched_nms`` and ``box_area``. These implement the
documented semantics plainly -- greedy NMS per category, candidates in
descending score order (ties in input order), a box dropped when its IoU with
a kept box is strictly greater than the threshold; area ``(x1-x0)*(y1-y0)`` --
so the official generator can run as the reference in tests and benchmarks.
`install()` puts them into the official module.
"""

from __future__ import annotations

import torch

__all__ = ["box_area", "batched_nms", "install"]


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                iou_threshold: float) -> torch.Tensor:
    b = boxes.float()
    area = box_area(b)
    order = torch.sort(scores, descending=True, stable=True).indices
    removed = torch.zeros(len(b), dtype=torch.bool)
    keep = []
    for i in order.tolist():
        if removed[i]:
            continue
        keep.append(i)
        w = (torch.minimum(b[i, 2], b[:, 2]) - torch.maximum(b[i, 0], b[:, 0])).clamp(min=0)
        h = (torch.minimum(b[i, 3], b[:, 3]) - torch.maximum(b[i, 1], b[:, 1])).clamp(min=0)
        inter = w * h
        iou = inter / (area[i] + area - inter)
        removed |= (iou > iou_threshold) & (idxs == idxs[i])
    return torch.tensor(keep, dtype=torch.int64)


def install() -> None:
    """Give ``segment_anything.automatic_mask_generator`` these two ops."""
    import segment_anything.automatic_mask_generator as amg

    amg.batched_nms = batched_nms
    amg.box_area = box_area
