"""`rlx.utils.nms.box_nms` box for box against the torch reference of torchvision's semantics.

The reference (`tests.support.torch_box_ops.batched_nms`, one category) is
what the official segment-everything generator is run with in the parity
tests. Boxes are integer pixel boxes like SAM's, drawn so that many overlap
around the thresholds; scores include exact ties (the order among equal
scores must be the input order) and the 0/1 scores of the small-region pass.
"""

import numpy as np
import pytest
import torch

from rlx.utils.nms import box_area, box_nms
from tests.support import torch_box_ops


def _boxes(rng, n):
    xy = rng.integers(0, 200, size=(n, 2))
    wh = rng.integers(0, 120, size=(n, 2))  # includes empty boxes
    return np.concatenate([xy, xy + wh], axis=1)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("thr", [0.0, 0.3, 0.7, 0.95, 1.0])
def test_matches_reference(seed, thr):
    rng = np.random.default_rng(seed)
    n = 150
    boxes = _boxes(rng, n)
    boxes[n // 2:n // 2 + 10] = boxes[:10]  # duplicates
    if seed % 3 == 0:
        scores = rng.integers(0, 2, size=n).astype(np.float32)  # the 0/1 scores: many ties
    elif seed % 3 == 1:
        scores = rng.integers(0, 8, size=n).astype(np.float32) / 8
    else:
        scores = rng.random(n).astype(np.float32)
    got = box_nms(boxes, scores, thr)
    ref = torch_box_ops.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores),
                                    torch.zeros(n, dtype=torch.int64), thr).numpy()
    assert got.tolist() == ref.tolist()


def test_edge_cases():
    assert box_nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 20, 20], [20, 20, 20, 20]])
    # identical boxes: the later (equal score) one goes; empty boxes (IoU NaN) both stay
    assert box_nms(boxes, np.ones(4), 0.5).tolist() == [0, 2, 3]
    assert box_area(boxes).tolist() == [100, 100, 0, 0]
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        box_nms(np.zeros((3, 3)), np.zeros(3), 0.5)
    with pytest.raises(ValueError, match="scores"):
        box_nms(np.zeros((3, 4)), np.zeros(2), 0.5)
