"""Mask postprocessing on the host: low-res logits -> original-image logits.

The reference (``Sam.postprocess_masks``) does two bilinear resizes with
``align_corners=False``: low-res (256) -> encoder frame (1024), crop away the
padding, then -> original image size. Run literally in numpy that is slow
(and in torch it takes hundreds of ms at 1500x2000), yet it runs on every
click. Bilinear resizing is separable and linear, so the whole chain
(resize, crop, resize) collapses into one small matrix per axis:

    out[b, c] = Mh @ low[b, c] @ Mw.T      Mh: [H, h], Mw: [W, w]

Each row of Mh / Mw has at most three non-zeros (two taps of two taps that
overlap), so the matrices are banded. We apply them blockwise: every block of
output rows touches only a narrow band of input rows, which makes each step a
small dense BLAS matmul and keeps the cost near one write of the output.

On the predict path the matrices are applied by compiled kernels
(`postprocess_kernels`): the width pass on the low-res rows the crop keeps,
then a height pass that writes bool masks (or float32 logits) directly,
split over the kernel threads -- no float32 image-size intermediate and no
separate threshold pass. The blockwise BLAS version here is the fallback
(and the reference the kernels are tested against).

Index arithmetic copies PyTorch's CPU kernel: scale = float32(in) / out,
source index = scale * (dst + 0.5) - 0.5 rounded once to float32 (the kernel
is compiled with fused multiply-add on x86-64 with FMA; rounding twice instead
shifts a weight by up to ~1e-4), clamped at 0, and a same-size resize is a
plain copy.
"""

from __future__ import annotations

from functools import lru_cache
from typing import List, Sequence, Tuple

import numpy as np

from rlx.errors import InputError

__all__ = [
    "linear_resize_matrix",
    "postprocess_matrices",
    "postprocess_masks",
    "postprocess_binary",
    "threshold",
]

# Output rows per banded block. Smaller blocks waste fewer multiplications on
# zero taps; larger ones make fewer, bigger BLAS calls. 32 measured best for
# 256 -> ~2000.
_BLOCK = 32


def _source_index_and_lambda(n_in: int, n_out: int):
    """Per output index: first tap, second tap, and their weights (float32)."""
    ratio = np.float32(n_in) / np.float32(n_out)
    dst = np.arange(n_out, dtype=np.float64)
    # Product of a float32 and a half-integer is exact in float64; one final
    # rounding to float32 reproduces the fused multiply-add.
    src = (np.float64(ratio) * (dst + 0.5) - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0.0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    lam1 = np.clip(src - i0.astype(np.float32), np.float32(0.0), np.float32(1.0)).astype(np.float32)
    lam0 = np.float32(1.0) - lam1
    i1 = i0 + (i0 < n_in - 1)
    return i0, i1, lam0, lam1


def _taps(n_in: int, n_out: int):
    """Two taps per output: (i0, i1, w0, w1); a same-size resize is a copy."""
    if n_in <= 0 or n_out <= 0:
        raise InputError(f"cannot resize between sizes {n_in} and {n_out}")
    if n_in == n_out:
        idx = np.arange(n_out)
        return idx, idx, np.ones(n_out, np.float32), np.zeros(n_out, np.float32)
    return _source_index_and_lambda(n_in, n_out)


def linear_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Dense float64 [n_out, n_in] matrix of a 1-D bilinear resize (align_corners=False)."""
    i0, i1, w0, w1 = _taps(n_in, n_out)
    m = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    np.add.at(m, (rows, i0), w0.astype(np.float64))
    np.add.at(m, (rows, i1), w1.astype(np.float64))  # i1 == i0 at the last input
    return m


def _composite_matrix(n_low: int, img_size: int, n_input: int, n_orig: int) -> np.ndarray:
    """[n_orig, n_low] matrix of: resize n_low -> img_size, keep the first n_input, resize -> n_orig.

    Built from the taps directly (four per output row) rather than by
    multiplying dense matrices, so a new image size costs O(output) here.
    """
    a0, a1, aw0, aw1 = _taps(n_input, n_orig)  # cropped frame -> original
    b0, b1, bw0, bw1 = _taps(n_low, img_size)  # low-res -> encoder frame
    m = np.zeros((n_orig, n_low), dtype=np.float64)
    rows = np.arange(n_orig)
    for a, aw in ((a0, aw0), (a1, aw1)):
        aw = aw.astype(np.float64)
        np.add.at(m, (rows, b0[a]), aw * bw0[a])
        np.add.at(m, (rows, b1[a]), aw * bw1[a])
    return m


Block = Tuple[int, int, int, int, np.ndarray]


def _bands(m: np.ndarray, block: int) -> List[Block]:
    """Split [out, in] matrix into (o0, o1, p0, p1, dense m[o0:o1, p0:p1]) blocks."""
    out: List[Block] = []
    nz = m != 0
    for o0 in range(0, m.shape[0], block):
        o1 = min(o0 + block, m.shape[0])
        cols = np.flatnonzero(nz[o0:o1].any(axis=0))
        p0, p1 = int(cols[0]), int(cols[-1]) + 1
        sub = np.ascontiguousarray(m[o0:o1, p0:p1])
        sub.setflags(write=False)
        out.append((o0, o1, p0, p1, sub))
    return out


def _check_hw(value: Sequence[int], what: str) -> Tuple[int, int]:
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be (height, width), got {value!r}") from None
    if h <= 0 or w <= 0:
        raise InputError(f"{what} must be positive, got {value!r}")
    return h, w


@lru_cache(maxsize=32)
def _cached(low_hw, input_size, original_size, img_size):
    mats = []
    for axis in (0, 1):
        m = _composite_matrix(low_hw[axis], img_size, input_size[axis], original_size[axis])
        m = m.astype(np.float32)
        m.setflags(write=False)
        mats.append(m)
    bands = tuple(_bands(m, _BLOCK) for m in mats)
    return tuple(mats), bands


def postprocess_matrices(
    low_hw: Sequence[int], input_size: Sequence[int], original_size: Sequence[int], img_size: int
) -> Tuple[np.ndarray, np.ndarray]:
    """The composite (Mh [H, h], Mw [W, w]) float32 matrices; cached, read-only."""
    low_hw = _check_hw(low_hw, "low-res mask size")
    input_size = _check_hw(input_size, "input_size")
    original_size = _check_hw(original_size, "original_size")
    if input_size[0] > img_size or input_size[1] > img_size:
        raise InputError(f"input_size {input_size} exceeds the encoder input size {img_size}")
    mats, _ = _cached(low_hw, input_size, original_size, int(img_size))
    return mats


def _check_masks(masks, input_size, original_size, img_size):
    masks = np.asarray(masks)
    if masks.ndim != 4:
        raise InputError(f"masks must be [B, C, h, w], got shape {masks.shape}")
    if masks.dtype.kind != "f":
        raise InputError(f"masks must be floating point logits, got dtype {masks.dtype}")
    b, c, h, w = masks.shape
    if h == 0 or w == 0:
        raise InputError(f"masks have an empty spatial size: shape {masks.shape}")
    input_size = _check_hw(input_size, "input_size")
    original_size = _check_hw(original_size, "original_size")
    if input_size[0] > img_size or input_size[1] > img_size:
        raise InputError(f"input_size {input_size} exceeds the encoder input size {img_size}")
    return masks, input_size, original_size


def postprocess_masks(
    masks: np.ndarray,
    input_size: Sequence[int],
    original_size: Sequence[int],
    img_size: int = 1024,
    compiled: bool = True,
) -> np.ndarray:
    """Upscale decoder logits [B, C, h, w] to the original image: float32 [B, C, H, W].

    Equivalent to ``Sam.postprocess_masks`` (bilinear to img_size, crop to
    ``input_size``, bilinear to ``original_size``) within float32 rounding.
    ``compiled=False`` forces the blockwise BLAS version.
    """
    masks, input_size, original_size = _check_masks(masks, input_size, original_size, img_size)
    if compiled:
        out = _fused(masks, input_size, original_size, int(img_size), None)
        if out is not None:
            return out
    return _blockwise(masks, input_size, original_size, int(img_size))


def postprocess_binary(
    masks: np.ndarray,
    input_size: Sequence[int],
    original_size: Sequence[int],
    img_size: int = 1024,
    mask_threshold: float = 0.0,
    compiled: bool = True,
) -> np.ndarray:
    """`postprocess_masks` then `threshold`, in one pass: bool [B, C, H, W]."""
    masks, input_size, original_size = _check_masks(masks, input_size, original_size, img_size)
    if compiled:
        out = _fused(masks, input_size, original_size, int(img_size), float(mask_threshold))
        if out is not None:
            return out
    return threshold(_blockwise(masks, input_size, original_size, int(img_size)), mask_threshold)


def _blockwise(masks, input_size, original_size, img_size) -> np.ndarray:
    """The composite matrices applied as banded BLAS blocks (float32 [B, C, H, W])."""
    b, c, h, w = masks.shape
    _, (bands_h, bands_w) = _cached((h, w), input_size, original_size, img_size)
    oh, ow = original_size
    n = b * c
    x = np.ascontiguousarray(masks, dtype=np.float32).reshape(n * h, w)
    # Width first, while rows are still few (h), then expand the rows.
    y = np.empty((n * h, ow), dtype=np.float32)
    for o0, o1, p0, p1, sub in bands_w:
        y[:, o0:o1] = x[:, p0:p1] @ sub.T
    y = y.reshape(n, h, ow)
    out = np.empty((n, oh, ow), dtype=np.float32)
    for o0, o1, p0, p1, sub in bands_h:
        np.matmul(sub, y[:, p0:p1, :], out=out[:, o0:o1, :])
    return out.reshape(b, c, oh, ow)


@lru_cache(maxsize=32)
def _fused_tables(low_hw, input_size, original_size, img_size):
    """(rows used, width bands, height taps) for the compiled kernels, or None if the
    composite matrices do not fit them."""
    from .postprocess_kernels import bands_of, taps_of

    (mh, mw), _ = _cached(low_hw, input_size, original_size, img_size)
    taps = taps_of(mh)
    if taps is None:
        return None
    rows = int(taps[0].max()) + 1  # the crop: low-res rows below never reach the output
    base, bands = bands_of(mw)
    for a in (*taps, base, bands):
        a.setflags(write=False)
    return rows, base, bands, taps


def _fused(masks, input_size, original_size, img_size, thr, nthreads=None):
    """The compiled kernels' result (bool if `thr` is given, else float32), or None.

    Split over `nthreads` of the kernel thread pool (default: all of it)."""
    from rlx.backends.common import threads

    from .postprocess_kernels import kernels

    fns = kernels()
    b, c, h, w = masks.shape
    tables = _fused_tables((h, w), input_size, original_size, img_size) if fns else None
    if tables is None:
        return None
    width, height_masks, height_logits = fns
    rows, base, bands, (idx, wts) = tables
    oh, ow = original_size
    n = b * c
    x = np.ascontiguousarray(masks.reshape(n, h, w)[:, :rows], dtype=np.float32)
    nb, span, blk = bands.shape
    tmp = np.empty((n, rows, nb * blk), np.float32)
    threads.run_tasks(width, n * rows, (x, base, bands, tmp), n * rows * nb * blk * span,
                      nthreads)
    if thr is None:
        out = np.empty((n, oh, ow), np.float32)
        fn, t = height_logits, np.float32(0.0)
    else:
        out = np.empty((n, oh, ow), np.bool_)
        fn, t = height_masks, np.float32(thr)
    threads.run_tasks(fn, n * oh, (tmp, idx, wts, t, out), n * oh * ow * 4, nthreads)
    return out.reshape(b, c, oh, ow)


def threshold(masks: np.ndarray, t: float = 0.0) -> np.ndarray:
    """Binary masks: logits strictly greater than ``t`` (SAM's mask_threshold is 0.0)."""
    return np.asarray(masks) > t
