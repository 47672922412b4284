"""Compiled kernels for mask post-processing: low-res logits -> original-size masks.

`postprocess` reduces SAM's resize -> crop -> resize chain to one banded
matrix per axis (at most four taps per output pixel). Applied with dense
BLAS blocks it still writes the float32 logits at the original size (36 MB
for three 1500x2000 masks) and then thresholds them in a second pass. These
kernels apply the taps directly, split over the kernel threads:

* `width`: every needed low-res row -> a row of the original width
  (``[n, R, W']``, R = the low-res rows the height taps touch -- the crop
  drops the rest; W' = W rounded up to whole blocks), with the width matrix
  cut into dense blocks of 16 output columns (`bands_of`): per block a few
  input values times a small weight block, unit-stride, no gathers;
* `height_masks` / `height_logits`: each output row is a weighted sum of at
  most four such rows, thresholded straight into bool (or stored as float32
  logits when the caller asked for them).

The height tap table has exactly four columns (unused taps have weight 0),
so its inner loop is branch-free and vectorizes along the row. Compiled on
first use (numba, ``cache=True``: later processes load the machine code).
"""

from __future__ import annotations

import threading

import numpy as np

from rlx.runtime import background

from .prefetch import enabled as prefetch_enabled

__all__ = ["BAND", "TAPS", "bands_of", "kernels", "prefetch", "taps_of"]

#: taps per output pixel: bilinear (2 taps) of bilinear (2 taps)
TAPS = 4
#: output columns per dense block of the width pass (one AVX-512 register of float32)
BAND = 16


def taps_of(m: np.ndarray):
    """(idx int64 [n_out, TAPS], weights float32 [n_out, TAPS]) of a banded [n_out, n_in]
    matrix; None when a row has more than TAPS non-zeros."""
    n_out = m.shape[0]
    rows, cols = np.nonzero(m)
    counts = np.bincount(rows, minlength=n_out)
    if counts.max(initial=0) > TAPS or counts.min(initial=1) == 0:
        return None
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(rows.size) - first[rows]
    # Unused slots repeat the row's first tap with weight 0 (any valid index will do).
    idx = np.repeat(cols[first][:, None], TAPS, axis=1).astype(np.int64)
    wts = np.zeros((n_out, TAPS), np.float32)
    idx[rows, slot] = cols
    wts[rows, slot] = m[rows, cols]
    return idx, wts


def bands_of(m: np.ndarray, block: int = BAND):
    """A banded [n_out, n_in] matrix as dense blocks for `width`.

    Output columns go in blocks of `block`; block b reads the `span` input
    columns from ``base[b]`` (span = the widest block's, so every block has
    the same shape; a block near the end starts earlier instead of reading
    past the input). Returns (base int64 [nb], bands float32 [nb, span, block]),
    ``bands[b, j, x]`` = weight of input ``base[b] + j`` in output
    ``b*block + x``; outputs past n_out (the last block's padding) get zeros.
    """
    n_out, n_in = m.shape
    nb = -(-n_out // block)
    spans = []
    for b in range(nb):
        cols = np.flatnonzero((m[b * block:(b + 1) * block] != 0).any(axis=0))
        spans.append((int(cols[0]), int(cols[-1]) + 1) if cols.size else (0, 1))
    span = max(e - s for s, e in spans)
    base = np.array([min(s, n_in - span) for s, _ in spans], np.int64)
    bands = np.zeros((nb, span, block), np.float32)
    for b in range(nb):
        blk = m[b * block:(b + 1) * block, base[b]:base[b] + span]
        bands[b, :, :blk.shape[0]] = blk.T
    return base, bands


_UNSET = object()
_kernels = _UNSET
_kernels_lock = threading.Lock()
_prefetching: threading.Thread | None = None


def kernels():
    """(width, height_masks, height_logits) compiled functions, or None without numba.

    Loaded once per process (thread-safe: a caller arriving while `prefetch`'s
    thread loads them waits for that load instead of starting another)."""
    global _kernels
    with _kernels_lock:
        if _kernels is _UNSET:
            _kernels = _load()
        return _kernels


def prefetch() -> None:
    """Load the kernels on a background thread, once per process.

    Why: the first use of numba in a process costs about a second (its typing
    and lowering registries, and the scipy import they pull in), even when the
    machine code comes from numba's cache. A `SamPredictor` calls this when it
    is created, so the load overlaps ``set_image`` (whose encoder runs in
    native code, the GIL released) instead of delaying the first ``predict``.
    ``RLX_SAM_PREFETCH=0`` turns it off (the load then happens on first use; see
    `models.sam.prefetch`).
    """
    global _prefetching
    if _kernels is not _UNSET or _prefetching is not None:
        return
    if not prefetch_enabled():
        return
    # rlx.runtime.background: one warm-up job at a time (this one drives numba's LLVM)
    _prefetching = background.start(kernels, name="rlx-sam-postprocess-load")


def _load():
    try:
        from numba import njit
        from numba import types as nt
    except ImportError:  # pragma: no cover - numba is a dependency of the default backend
        return None
    f32c = nt.Array(nt.float32, 3, "C")
    idx_t = nt.Array(nt.int64, 2, "C", readonly=True)
    wts_t = nt.Array(nt.float32, 2, "C", readonly=True)
    opts = dict(cache=True, nogil=True, error_model="numpy")

    @njit(nt.void(nt.int64, nt.int64, nt.Array(nt.float32, 3, "C", readonly=True),
                  nt.Array(nt.int64, 1, "C", readonly=True),
                  nt.Array(nt.float32, 3, "C", readonly=True), f32c), **opts)
    def width(task_lo, task_hi, low, base, bands, out):
        rows = out.shape[1]
        nb, span, blk = bands.shape
        for task in range(task_lo, task_hi):
            c = task // rows
            i = task - c * rows
            src = low[c, i]
            dst = out[c, i]
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

    height_sig = (nt.int64, nt.int64, nt.Array(nt.float32, 3, "C", readonly=True), idx_t, wts_t,
                  nt.float32)

    @njit(nt.void(*height_sig, nt.Array(nt.boolean, 3, "C")), **opts)
    def height_masks(task_lo, task_hi, tmp, idx, wts, thr, out):
        h = out.shape[1]
        w = out.shape[2]
        for task in range(task_lo, task_hi):
            c = task // h
            y = task - c * h
            r0, r1 = tmp[c, idx[y, 0]], tmp[c, idx[y, 1]]
            r2, r3 = tmp[c, idx[y, 2]], tmp[c, idx[y, 3]]
            w0, w1, w2, w3 = wts[y, 0], wts[y, 1], wts[y, 2], wts[y, 3]
            o = out[c, y]
            for x in range(w):
                o[x] = (((w0 * r0[x] + w1 * r1[x]) + w2 * r2[x]) + w3 * r3[x]) > thr

    @njit(nt.void(*height_sig, f32c), **opts)
    def height_logits(task_lo, task_hi, tmp, idx, wts, thr, out):
        h = out.shape[1]
        w = out.shape[2]
        for task in range(task_lo, task_hi):
            c = task // h
            y = task - c * h
            r0, r1 = tmp[c, idx[y, 0]], tmp[c, idx[y, 1]]
            r2, r3 = tmp[c, idx[y, 2]], tmp[c, idx[y, 3]]
            w0, w1, w2, w3 = wts[y, 0], wts[y, 1], wts[y, 2], wts[y, 3]
            o = out[c, y]
            for x in range(w):
                o[x] = ((w0 * r0[x] + w1 * r1[x]) + w2 * r2[x]) + w3 * r3[x]

    return width, height_masks, height_logits
