"""Statistics of upscaled masks without writing them: areas at three thresholds and a box.

Segment-everything filters thousands of candidate masks by their stability
score -- ``area(logits > t + offset) / area(logits > t - offset)`` on the
logits upscaled to the image -- and needs each survivor's bounding box for
box NMS. Meta's generator upscales every candidate to a float32 image
(24 MB at 1500 x 2000) to compute them. Here the upscaled logits exist only
one row at a time inside a compiled kernel: per mask it runs the width pass
of `postprocess_kernels` on the low-res rows the crop keeps, then evaluates
each output row (the same four-tap sum, so the values are those of
`postprocess.postprocess_masks`) and counts, in the same sweep, the pixels
above ``t + offset``, above ``t - offset`` and above ``t`` (the mask itself:
its area and box). Rows whose taps all stay at or below the lowest threshold
are skipped without being evaluated: bilinear weights are non-negative and
sum to one, so an output value never exceeds the largest value it is made
of. Only the masks that survive everything are later upscaled for real.

One task per mask, split over the kernel threads; compiled on first use
(numba, ``cache=True``).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["mask_stats"]


@lru_cache(maxsize=None)
def _kernel():
    from numba import njit

    @njit(cache=True, nogil=True, error_model="numpy")
    def stats(task_lo, task_hi, low, base, bands, idx, wts, oh, ow, t_mask, t_hi, t_lo,
              counts, boxes):
        rows = low.shape[1]
        nb, span, blk = bands.shape
        tmp = np.empty((rows, nb * blk), np.float32)
        rowmax = np.empty(rows, np.float32)
        for task in range(task_lo, task_hi):
            src_all = low[task]
            for i in range(rows):  # width pass (as postprocess_kernels.width)
                src = src_all[i]
                dst = tmp[i]
                for b in range(nb):
                    s = src[base[b]:base[b] + span]
                    d = dst[b * blk:(b + 1) * blk]
                    wb = bands[b]
                    w0 = wb[0]
                    s0 = s[0]
                    for x in range(blk):
                        d[x] = w0[x] * s0
                    for j in range(1, span):
                        wj = wb[j]
                        sj = s[j]
                        for x in range(blk):
                            d[x] += wj[x] * sj
                m = dst[0]
                for x in range(1, ow):
                    if dst[x] > m:
                        m = dst[x]
                rowmax[i] = m
            n_mask = 0
            n_hi = 0
            n_lo = 0
            x0 = ow
            x1 = -1
            y0 = oh
            y1 = -1
            for y in range(oh):
                i0, i1, i2, i3 = idx[y, 0], idx[y, 1], idx[y, 2], idx[y, 3]
                w0, w1, w2, w3 = wts[y, 0], wts[y, 1], wts[y, 2], wts[y, 3]
                top = rowmax[i0]
                for r in (i1, i2, i3):
                    if rowmax[r] > top:
                        top = rowmax[r]
                if top <= t_lo and top <= t_mask:
                    continue
                r0, r1, r2, r3 = tmp[i0], tmp[i1], tmp[i2], tmp[i3]
                c_mask = 0
                c_hi = 0
                c_lo = 0
                for x in range(ow):
                    v = ((w0 * r0[x] + w1 * r1[x]) + w2 * r2[x]) + w3 * r3[x]
                    c_mask += v > t_mask
                    c_hi += v > t_hi
                    c_lo += v > t_lo
                n_mask += c_mask
                n_hi += c_hi
                n_lo += c_lo
                if c_mask:
                    if y < y0:
                        y0 = y
                    y1 = y
                    for x in range(ow):  # leftmost and rightmost mask pixel of this row
                        v = ((w0 * r0[x] + w1 * r1[x]) + w2 * r2[x]) + w3 * r3[x]
                        if v > t_mask:
                            if x < x0:
                                x0 = x
                            break
                    for x in range(ow - 1, -1, -1):
                        v = ((w0 * r0[x] + w1 * r1[x]) + w2 * r2[x]) + w3 * r3[x]
                        if v > t_mask:
                            if x > x1:
                                x1 = x
                            break
            counts[task, 0] = n_mask
            counts[task, 1] = n_hi
            counts[task, 2] = n_lo
            if n_mask:
                boxes[task, 0] = x0
                boxes[task, 1] = y0
                boxes[task, 2] = x1
                boxes[task, 3] = y1
            else:  # an empty mask gets the box [0, 0, 0, 0], as in Meta's batched_mask_to_box
                boxes[task, 0] = 0
                boxes[task, 1] = 0
                boxes[task, 2] = 0
                boxes[task, 3] = 0

    return stats


def mask_stats(low_res: np.ndarray, input_size, original_size, img_size: int,
               mask_threshold: float, offset: float):
    """Per mask of ``low_res`` ``[n, h, w]``: (counts int64 ``[n, 3]``, boxes int64 ``[n, 4]``).

    Counts are the pixels of the upscaled logits (`postprocess.postprocess_masks`
    to ``original_size``) above ``mask_threshold``, above ``mask_threshold +
    offset`` and above ``mask_threshold - offset``; boxes are XYXY with
    inclusive ends around the first count's pixels (``[0, 0, 0, 0]`` if none).
    """
    from rlx.backends.common import threads

    from .postprocess import _check_hw, _fused_tables

    low_res = np.asarray(low_res)
    n, h, w = low_res.shape
    input_size = _check_hw(input_size, "input_size")
    original_size = _check_hw(original_size, "original_size")
    tables = _fused_tables((h, w), input_size, original_size, int(img_size))
    if tables is None:  # pragma: no cover - SAM's resize chains always fit four taps
        raise ValueError(f"no tap tables for {h}x{w} -> {original_size}")
    rows, base, bands, (idx, wts) = tables
    oh, ow = original_size
    x = np.ascontiguousarray(low_res[:, :rows], dtype=np.float32)
    counts = np.zeros((n, 3), np.int64)
    boxes = np.zeros((n, 4), np.int64)
    if n == 0:
        return counts, boxes
    t = np.float32(mask_threshold)
    hi, lo = np.float32(mask_threshold + offset), np.float32(mask_threshold - offset)
    threads.run_tasks(_kernel(), n, (x, base, bands, idx, wts, oh, ow, t, hi, lo, counts, boxes),
                      n * oh * ow * 8)
    return counts, boxes
