"""``SamAutomaticMaskGenerator``: segment everything in an image, fast on the CPU.

    from models.sam import SamAutomaticMaskGenerator, sam_model_registry
    sam = sam_model_registry["vit_b"](checkpoint="sam_vit_b_01ec64.pth")
    masks = SamAutomaticMaskGenerator(sam).generate(image)  # list of dicts

Same constructor, same output records and the same filtering as Meta's
generator (``segment_anything.SamAutomaticMaskGenerator``): a grid of
single-click prompts per crop, every multimask output kept if its predicted
IoU is above ``pred_iou_thresh`` and its stability score at least
``stability_score_thresh``, masks touching a crop edge dropped, box NMS per
crop and between crops, optional small-region cleanup. Where the time goes
differs:

1. **The image side is shared, and what a prompt adds to it stays
   factored.** Prompts go through compiled graphs per batch size
   (`automatic_factored`, `rlx.runtime.buckets`) that take the embedding
   once; the image-only work of the decoder runs once per image, not once
   per prompt (Meta repeats the embedding for every prompt). A prompt only
   adds low-rank terms (attention weights times a few factor rows) and
   per-pixel LayerNorm scales to the image tokens, so the graphs carry
   those instead of a dense image per prompt (about half the multiply-adds
   and a fifth of the memory). The decoder runs in two halves: the
   transformer and heads for every prompt, the upscaling into mask logits
   only for prompts with a mask whose predicted IoU passes the filter.
2. **Nothing is upscaled to be thrown away.** The decoder returns 256 x 256
   logits. The IoU filter needs only the scores; the stability score, area
   and box of the IoU survivors are counted by a kernel that evaluates the
   upscaled logits a row at a time and never stores them
   (`automatic_kernels`). Masks are upscaled to the image only for the final
   survivors of both NMS rounds, in the output format asked for.
3. **Crops encode each crop once** (the whole image is crop 0).

The numbers are those of the official generator up to float32 rounding:
predicted IoU and stability score of matching masks agree to ~1e-6 (the
upscaled logits are the same four-tap sums as `postprocess`).

Reusing an embedding: `generate_from_predictor(predictor)` (or
``generate(image, predictor=predictor)``) takes a `SamPredictor` whose
``set_image`` (or `set_image_embedding`) already ran and decodes against that
embedding: the whole-image encoder pass is skipped. With ``crop_n_layers >=
1`` the crops still need the image's pixels (pass ``image=``).

The decoder graph runs at most `MAX_BATCH` prompts at a time whatever
``points_per_batch`` says: results do not depend on the batch. `REPLICAS`
batches run at once, each on its own worker thread and its own copy of the
compiled graphs with its share of the cores: the factored graphs are ~100
small kernels per batch, and whole batches per core beat splitting every
kernel across the cores (no fork-join hand-off per kernel, each core streams
its own arrays). 16 prompts per batch amortize the per-kernel overhead; two
batches in flight keep the memory of one batch of 32.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple
from weakref import WeakKeyDictionary

import numpy as np

from rlx.errors import InputError
from rlx.runtime.buckets import BatchBuckets
from rlx.utils.nms import box_area, box_nms
from rlx.utils.progress import Progress

from . import prompt_encoding
from .automatic_factored import (FACTOR_INPUTS, build_factored_masks, build_factored_tokens,
                                 factored_supported)
from .automatic_graph import (HYPER_INPUT, KEYS_INPUT, SPARSE_INPUT, build_points_to_tokens,
                              build_tokens_to_masks)
from .automatic_kernels import mask_stats
from .automatic_utils import (
    build_all_layer_point_grids,
    box_near_crop_edge,
    coco_rle,
    generate_crop_boxes,
    mask_to_box,
    mask_to_rle,
    remove_small_regions,
    require_scipy,
)
from .postprocess import postprocess_binary
from .prompt_graph import IMAGE_INPUT
from .transforms import apply_coords

__all__ = ["SamAutomaticMaskGenerator", "OUTPUT_MODES", "MAX_BATCH", "warmup_grid"]

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
#: prompts per compiled decoder call (see the module docstring)
MAX_BATCH = 16
#: batches decoded at once, each on a replica of the graphs with its share of the
#: threads (`rlx.runtime.buckets`): the factored graphs are ~100 small kernels per
#: batch, which scale better as whole batches per core than split kernel by kernel
REPLICAS = 2
#: the same for the plain (unfactored) graphs, whose prompts carry a dense image each
PLAIN_MAX_BATCH = 16
#: prompts per call of the upscaling half (image-sized features per prompt: ~17 MB of
#: arena each, per replica)
MASKS_MAX_BATCH = 4
#: masks upscaled to the image at a time when encoding RLEs (bounds memory)
_UPSCALE_CHUNK = 16


def warmup_grid() -> np.ndarray:
    """A point grid (normalised, for ``point_grids=[...]``) of exactly one full batch per
    replica: a warm-up ``generate`` on it compiles every replica of the full-batch
    graphs a 32 x 32 grid uses, and no other bucket."""
    n = MAX_BATCH * REPLICAS
    return np.stack([np.linspace(0.05, 0.95, n), np.linspace(0.1, 0.9, n)], axis=1)


# ---- parameter checks ---------------------------------------------------------------------


def _int_param(name: str, value, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{name} must be an integer, got {value!r}")
    if value < lo:
        raise InputError(f"{name} must be at least {lo}, got {value}")
    return int(value)


def _float_param(name: str, value, lo: float, hi: float, hi_open: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v) or v < lo or v > hi or (hi_open and v == hi):
        raise InputError(f"{name} must be in [{lo:g}, {hi:g}{')' if hi_open else ']'}, "
                         f"got {value!r}")
    return v


def _grids(points_per_side, point_grids, crop_n_layers: int, factor: int) -> List[np.ndarray]:
    if (points_per_side is None) == (point_grids is None):
        raise InputError("give exactly one of points_per_side and point_grids "
                         f"(got {'both' if points_per_side is not None else 'neither'})")
    if points_per_side is not None:
        n = _int_param("points_per_side", points_per_side, 1)
        smallest = int(n / factor ** crop_n_layers)
        if smallest < 1:
            raise InputError(f"points_per_side={n} leaves no points in crop layer "
                             f"{crop_n_layers} (downscaled by {factor}^{crop_n_layers})")
        return build_all_layer_point_grids(n, crop_n_layers, factor)
    grids = list(point_grids)
    if len(grids) < crop_n_layers + 1:
        raise InputError(f"point_grids must hold one grid per crop layer: "
                         f"{crop_n_layers + 1} needed, got {len(grids)}")
    out = []
    for i, g in enumerate(grids):
        a = np.asarray(g, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != 2 or a.shape[0] == 0:
            raise InputError(f"point_grids[{i}] must be an [N, 2] array of (x, y) in [0, 1], "
                             f"got shape {list(a.shape)}")
        if not np.all(np.isfinite(a)) or a.min() < 0 or a.max() > 1:
            raise InputError(f"point_grids[{i}] must hold (x, y) values in [0, 1]")
        out.append(a)
    return out


# ---- per-crop candidates -------------------------------------------------------------------


@dataclass
class _Crop:
    """Candidate masks of one crop (crop frame until `uncrop`)."""

    box: List[int]            # XYXY in the image
    input_size: Tuple[int, int]
    size: Tuple[int, int]     # (h, w) of the crop
    low: List[np.ndarray] = field(default_factory=list)     # [k, 4g, 4g] per batch
    iou: List[np.ndarray] = field(default_factory=list)
    stability: List[np.ndarray] = field(default_factory=list)
    points: List[np.ndarray] = field(default_factory=list)  # crop-frame (x, y)
    boxes: List[np.ndarray] = field(default_factory=list)   # crop-frame XYXY


@dataclass
class _Decoder:
    """The two batched halves of the decoder for one model.

    ``factored`` (`automatic_factored`, SAM's two-block decoder): points ->
    (hyper_in, iou, *factors of the image side), then factors -> logits.
    Otherwise the plain graphs (`automatic_graph`): points -> (keys, hyper_in,
    iou), then keys -> logits.
    """

    tokens: BatchBuckets
    masks: BatchBuckets
    factored: bool

    @property
    def max_batch(self) -> int:
        return self.tokens.max_batch

    @property
    def replicas(self) -> int:
        """How many batches may run at once (one per worker thread)."""
        return self.tokens.replicas

    def run(self, n: int, features: np.ndarray, sparse: np.ndarray):
        """(hyper_in, iou, per-prompt state for `masks_for`) of n prompts."""
        outs = self.tokens.run(n, **{IMAGE_INPUT: features, SPARSE_INPUT: sparse})
        if self.factored:
            return outs[0], outs[1], outs[2:]
        return outs[1], outs[2], outs[:1]

    def masks_for(self, features: np.ndarray, hyper: np.ndarray, state, rows) -> np.ndarray:
        """Low-res logits ``[len(rows), M-1, 4g, 4g]`` of the prompts ``rows`` of a `run`.

        In chunks of the masks graph's own (smaller) batch: its activations
        are image-sized per prompt (the upscaled features).
        """
        out = []
        for start in range(0, len(rows), self.masks.max_batch):
            part = rows[start:start + self.masks.max_batch]
            if self.factored:
                inputs = {name: a[part] for name, a in zip(FACTOR_INPUTS, state)}
                inputs[IMAGE_INPUT] = features
            else:
                inputs = {KEYS_INPUT: state[0][part]}
            out.append(self.masks.run(len(part), **{HYPER_INPUT: hyper[part]}, **inputs)[0])
        return out[0] if len(out) == 1 else np.concatenate(out)


_BUCKETS: "WeakKeyDictionary[object, _Decoder]" = WeakKeyDictionary()
_BUCKETS_LOCK = threading.Lock()


def points_to_masks_for(sam) -> _Decoder:
    """The batched decoder graphs of a `Sam` (see `_Decoder`).

    Compiled per batch size on first use and kept as long as the model.
    """
    with _BUCKETS_LOCK:
        dec = _BUCKETS.get(sam)
        if dec is None:
            config = sam.config
            replicas = max(1, min(REPLICAS, sam.profile.effective_threads))
            kw = dict(profile=sam.profile, weights=sam.weights, replicas=replicas)
            if factored_supported(config):
                tokens = BatchBuckets(lambda n: build_factored_tokens(config, n), MAX_BATCH,
                                      batched=[SPARSE_INPUT], slow=[IMAGE_INPUT], **kw)
                masks = BatchBuckets(lambda n: build_factored_masks(config, n),
                                     MASKS_MAX_BATCH, batched=[HYPER_INPUT, *FACTOR_INPUTS],
                                     slow=[IMAGE_INPUT], **kw)
                dec = _Decoder(tokens, masks, True)
            else:
                tokens = BatchBuckets(lambda n: build_points_to_tokens(config, n),
                                      PLAIN_MAX_BATCH, batched=[SPARSE_INPUT],
                                      slow=[IMAGE_INPUT], **kw)
                masks = BatchBuckets(lambda n: build_tokens_to_masks(config, n),
                                     MASKS_MAX_BATCH, batched=[KEYS_INPUT, HYPER_INPUT], **kw)
                dec = _Decoder(tokens, masks, False)
            _BUCKETS[sam] = dec
        return dec


class SamAutomaticMaskGenerator:
    """Masks for everything in an image (Meta's constructor; see the module docstring).

    Arguments as in ``segment_anything``: ``points_per_side`` (or explicit
    ``point_grids``, normalised to [0, 1], one per crop layer),
    ``points_per_batch``, ``pred_iou_thresh``, ``stability_score_thresh``,
    ``stability_score_offset``, ``box_nms_thresh``, ``crop_n_layers``,
    ``crop_nms_thresh``, ``crop_overlap_ratio``,
    ``crop_n_points_downscale_factor``, ``min_mask_region_area`` (needs
    scipy: ``pip install 'rlx[everything]'``), ``output_mode``
    (``binary_mask``, ``uncompressed_rle`` or ``coco_rle``). Every parameter
    is checked here; a bad one raises `InputError` before any work.
    ``progress``: a progress line on stderr (None: only on a terminal).
    """

    def __init__(
        self,
        model,
        points_per_side: Optional[int] = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: Optional[List[np.ndarray]] = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        progress: Optional[bool] = None,
    ) -> None:
        from .model import Sam, SamPredictor

        if not isinstance(model, Sam):
            raise InputError(f"SamAutomaticMaskGenerator needs a Sam model (from "
                             f"sam_model_registry), got {type(model).__name__}")
        if output_mode not in OUTPUT_MODES:
            raise InputError(f"unknown output_mode {output_mode!r}; choose from "
                             f"{', '.join(OUTPUT_MODES)}")
        self.crop_n_layers = _int_param("crop_n_layers", crop_n_layers, 0)
        self.crop_n_points_downscale_factor = _int_param(
            "crop_n_points_downscale_factor", crop_n_points_downscale_factor, 1)
        self.point_grids = _grids(points_per_side, point_grids, self.crop_n_layers,
                                  self.crop_n_points_downscale_factor)
        self.points_per_batch = _int_param("points_per_batch", points_per_batch, 1)
        self.pred_iou_thresh = _float_param("pred_iou_thresh", pred_iou_thresh, 0.0, 1.0)
        self.stability_score_thresh = _float_param("stability_score_thresh",
                                                   stability_score_thresh, 0.0, 1.0)
        self.stability_score_offset = _float_param("stability_score_offset",
                                                   stability_score_offset, 0.0, float("inf"),
                                                   hi_open=True)
        self.box_nms_thresh = _float_param("box_nms_thresh", box_nms_thresh, 0.0, 1.0)
        self.crop_nms_thresh = _float_param("crop_nms_thresh", crop_nms_thresh, 0.0, 1.0)
        self.crop_overlap_ratio = _float_param("crop_overlap_ratio", crop_overlap_ratio, 0.0,
                                               1.0, hi_open=True)
        area = _float_param("min_mask_region_area", min_mask_region_area, 0.0, float("inf"),
                            hi_open=True)
        self.min_mask_region_area = int(area) if float(area).is_integer() else area
        if self.min_mask_region_area > 0:
            require_scipy()
        if output_mode == "coco_rle":
            try:
                from pycocotools import mask as _  # noqa: F401
            except ImportError:
                raise InputError("output_mode='coco_rle' needs pycocotools "
                                 "(pip install pycocotools)") from None
        self.output_mode = output_mode
        self.progress = progress
        self.model = model
        # no click graph compiled in the background: the generator decodes with its own
        self.predictor = SamPredictor(model, prefetch_click=False)
        #: seconds per step of the last generate() (encoder, decoder, stats, ...); steps
        #: that run on several worker threads add up their busy seconds
        self.timings: Dict[str, float] = {}
        self._timings_lock = threading.Lock()

    # ---- public entry points -------------------------------------------------------------

    def generate(self, image, predictor=None) -> List[Dict[str, Any]]:
        """Mask records for ``image`` (HxWx3 uint8 RGB array, or a path), like Meta's.

        Each record: ``segmentation`` (bool HxW, or an RLE dict for the RLE
        modes), ``area``, ``bbox`` (XYWH), ``predicted_iou``,
        ``point_coords``, ``stability_score``, ``crop_box`` (XYWH).
        ``predictor``: a `SamPredictor` of the same model whose current
        embedding is of ``image`` (its ``set_image`` already ran): the
        whole-image encoder pass is skipped (crops are still encoded).
        """
        from .image import load_image

        array = load_image(image)
        if predictor is not None:
            self._check_predictor(predictor, array.shape[:2])
        return self._generate(array, array.shape[:2], predictor)

    def generate_from_predictor(self, predictor, image=None) -> List[Dict[str, Any]]:
        """Mask records from the embedding ``predictor`` already holds (no encoder run).

        ``predictor`` is a `SamPredictor` of this generator's model after
        ``set_image`` / `set_image_embedding` (a server keeps one per image).
        ``image`` (its pixels) is needed only with ``crop_n_layers >= 1``.
        """
        from .image import load_image

        if not getattr(predictor, "is_image_set", False) or predictor.features is None:
            from .model import ImageNotSetError

            raise ImageNotSetError("generate_from_predictor needs a predictor whose image is "
                                   "set (call set_image first)")
        size = tuple(int(v) for v in predictor.original_size)
        array = None
        if image is not None:
            array = load_image(image)
            self._check_predictor(predictor, array.shape[:2])
        elif self.crop_n_layers > 0:
            raise InputError("crop_n_layers >= 1 needs the image's pixels: pass image= to "
                             "generate_from_predictor")
        return self._generate(array, size, predictor)

    def _check_predictor(self, predictor, size) -> None:
        if getattr(predictor, "model", None) is not self.model:
            raise InputError("the predictor belongs to another model than this generator")
        if not getattr(predictor, "is_image_set", False) or predictor.features is None:
            from .model import ImageNotSetError

            raise ImageNotSetError("the predictor has no image set (call set_image first)")
        if tuple(predictor.original_size) != tuple(size):
            raise InputError(f"the predictor's image is {tuple(predictor.original_size)} "
                             f"(h, w) but the image given is {tuple(size)}")

    # ---- the pipeline --------------------------------------------------------------------

    def _generate(self, image: Optional[np.ndarray], orig_size, predictor) -> List[Dict]:
        self.timings = {}
        h, w = (int(v) for v in orig_size)
        crop_boxes, layers = generate_crop_boxes((h, w), self.crop_n_layers,
                                                 self.crop_overlap_ratio)
        per = points_to_masks_for(self.model).max_batch
        n_batches = sum(-(-len(self.point_grids[layer]) // per) for layer in layers)
        bar = Progress(n_batches, label="segment everything", unit="batches",
                       enabled=self.progress, count_errors=False)
        kept = 0

        def batch_done(n_kept: int) -> None:
            nonlocal kept
            kept += n_kept
            bar.note = f"{kept} masks kept"
            bar.update()

        crops = []
        try:
            for box, layer in zip(crop_boxes, layers):
                crops.append(self._process_crop(image, box, layer, (h, w),
                                                predictor if layer == 0 else None,
                                                batch_done))
        finally:
            bar.close()
        t0 = time.perf_counter()
        cand = self._merge(crops)
        if len(crop_boxes) > 1 and len(cand["iou"]):
            areas = box_area(np.asarray(cand["crop_boxes"], np.int64)).astype(np.float32)
            keep = box_nms(cand["boxes"], np.float32(1.0) / areas, self.crop_nms_thresh)
            cand = _take(cand, keep)
        self._add("nms", t0)
        return self._records(cand, crops, (h, w))

    def _add(self, key: str, t0: float) -> None:
        """Add the seconds since ``t0`` to step ``key`` (summed over worker threads)."""
        dt = time.perf_counter() - t0
        with self._timings_lock:
            self.timings[key] = self.timings.get(key, 0.0) + dt

    def _embedding(self, image, box, predictor):
        """(features, input_size, crop size) of one crop: reused, or encoded now."""
        t0 = time.perf_counter()
        if predictor is not None:
            return predictor.features, tuple(predictor.input_size), \
                tuple(predictor.original_size)
        x0, y0, x1, y1 = box
        crop = np.ascontiguousarray(image[y0:y1, x0:x1, :])
        self.predictor.set_image(crop)
        p = self.predictor
        self._add("encoder", t0)
        return p.features, tuple(p.input_size), tuple(p.original_size)

    def _process_crop(self, image, box, layer, orig_size, predictor, batch_done) -> _Crop:
        features, input_size, size = self._embedding(image, box, predictor)
        crop = _Crop(box=list(box), input_size=input_size, size=size)
        ch, cw = size
        points = self.point_grids[layer] * np.array([[cw, ch]], np.float64)
        decoder = points_to_masks_for(self.model)
        per = decoder.max_batch
        batches = [points[s:s + per] for s in range(0, len(points), per)]

        def work(pts):
            return self._decode_batch(decoder, features, pts, box, orig_size, input_size, size)

        def collect(parts) -> None:
            for name, part in zip(("low", "iou", "stability", "points", "boxes"), parts):
                getattr(crop, name).append(part)
            batch_done(len(parts[1]))

        if decoder.replicas > 1 and len(batches) > 1:
            # one batch per replica at a time; map() hands results back in batch order
            with ThreadPoolExecutor(decoder.replicas, thread_name_prefix="rlx-everything") \
                    as pool:
                for parts in pool.map(work, batches):
                    collect(parts)
        else:
            for pts in batches:
                collect(work(pts))
        t0 = time.perf_counter()
        for name in ("low", "iou", "stability", "points", "boxes"):
            parts = getattr(crop, name)
            setattr(crop, name, np.concatenate(parts) if parts else np.zeros((0,)))
        if len(crop.iou):
            keep = box_nms(crop.boxes, crop.iou, self.box_nms_thresh)
            for name in ("low", "iou", "stability", "points", "boxes"):
                setattr(crop, name, getattr(crop, name)[keep])
        self._add("nms", t0)
        return crop

    def _decode_batch(self, decoder, features, pts, box, orig_size, input_size, size):
        """(low-res logits, iou, stability, points, boxes) of one batch's surviving masks.

        Runs on the generator's worker threads: touches nothing shared but the
        timings (under a lock) and the decoder (whose buckets hand each call a
        replica of its own).
        """
        c = self.model.config
        thr = float(c.mask_threshold)
        n = len(pts)
        t0 = time.perf_counter()
        coords = apply_coords(pts, size, c.image_size).astype(np.float32)
        sparse = prompt_encoding.embed_points(coords[:, None, :], np.ones((n, 1), np.int64),
                                              True, self.model.weights,
                                              input_image_size=c.image_size)
        hyper, iou, state = decoder.run(n, features, np.ascontiguousarray(sparse))
        k = iou.shape[1]
        iou = iou.reshape(n * k)
        pts_rep = np.repeat(pts, k, axis=0)
        keep = np.flatnonzero(iou > self.pred_iou_thresh) if self.pred_iou_thresh > 0 \
            else np.arange(n * k)
        # masks only for the prompts with a mask left after the IoU filter
        need = np.unique(keep // k)
        side = c.mask_input_size
        low = np.zeros((0, side, side), np.float32)
        if need.size:
            low = decoder.masks_for(features, hyper, state, need)
            low = low.reshape(len(need) * k, *low.shape[2:])
        del state
        row = np.searchsorted(need, keep // k) * k + keep % k  # kept mask -> row of low
        self._add("decoder", t0)
        t0 = time.perf_counter()
        counts, boxes = mask_stats(low[row], input_size, size, c.image_size, thr,
                                   self.stability_score_offset)
        with np.errstate(invalid="ignore", divide="ignore"):
            stability = counts[:, 1].astype(np.float32) / counts[:, 2].astype(np.float32)
        ok = stability >= self.stability_score_thresh if self.stability_score_thresh > 0 \
            else np.ones(len(keep), bool)
        ok &= ~box_near_crop_edge(boxes, box, [0, 0, orig_size[1], orig_size[0]])
        sel = keep[ok]
        self._add("filter", t0)
        return low[row[ok]], iou[sel], stability[ok], pts_rep[sel], boxes[ok]

    def _merge(self, crops: Sequence[_Crop]) -> Dict[str, np.ndarray]:
        """All crops' survivors in the image frame, with (crop, index) back-references."""
        out = {"iou": [], "stability": [], "points": [], "boxes": [], "crop_boxes": [],
               "ref": []}
        for ci, crop in enumerate(crops):
            n = len(crop.iou)
            if n == 0:
                continue
            x0, y0 = crop.box[0], crop.box[1]
            out["iou"].append(crop.iou)
            out["stability"].append(crop.stability)
            out["points"].append(crop.points + np.array([[x0, y0]], np.float64))
            out["boxes"].append(crop.boxes + np.array([[x0, y0, x0, y0]], np.int64))
            out["crop_boxes"].append(np.repeat(np.array([crop.box], np.int64), n, axis=0))
            out["ref"].append(np.stack([np.full(n, ci), np.arange(n)], axis=1))
        empty = {"iou": (0,), "stability": (0,), "points": (0, 2), "boxes": (0, 4),
                 "crop_boxes": (0, 4), "ref": (0, 2)}
        return {k: (np.concatenate(v) if v else np.zeros(empty[k], np.int64)) for k, v in
                out.items()}

    def _masks(self, cand, crops, orig_size, idx: Sequence[int]) -> List[np.ndarray]:
        """Full-image bool masks of candidates ``idx`` (upscaled now, crop by crop)."""
        h, w = orig_size
        c = self.model.config
        out: List[Optional[np.ndarray]] = [None] * len(idx)
        by_crop: Dict[int, List[Tuple[int, int]]] = {}
        for pos, i in enumerate(idx):
            ci, j = cand["ref"][i]
            by_crop.setdefault(int(ci), []).append((pos, int(j)))
        for ci, items in by_crop.items():
            crop = crops[ci]
            x0, y0, x1, y1 = crop.box
            low = crop.low[[j for _, j in items]]
            binary = postprocess_binary(low[None], crop.input_size, crop.size, c.image_size,
                                        float(c.mask_threshold))[0]
            for (pos, _), m in zip(items, binary):
                if (x0, y0, x1, y1) == (0, 0, w, h):
                    out[pos] = m
                else:
                    full = np.zeros((h, w), bool)
                    full[y0:y1, x0:x1] = m
                    out[pos] = full
        return out

    def _records(self, cand, crops, orig_size) -> List[Dict[str, Any]]:
        t0 = time.perf_counter()
        n = len(cand["iou"])
        boxes = cand["boxes"].copy()
        fixed: Dict[int, np.ndarray] = {}
        order = np.arange(n)
        if self.min_mask_region_area > 0 and n:
            masks = self._masks(cand, crops, orig_size, range(n))
            scores = np.zeros(n, np.float32)
            new_boxes = np.zeros((n, 4), np.int64)
            for i, m in enumerate(masks):
                m2, changed_h = remove_small_regions(m, self.min_mask_region_area, "holes")
                m2, changed_i = remove_small_regions(m2, self.min_mask_region_area, "islands")
                scores[i] = 0.0 if (changed_h or changed_i) else 1.0
                new_boxes[i] = mask_to_box(m2)
                if scores[i] == 0.0:
                    fixed[i] = m2
            order = box_nms(new_boxes, scores,
                            max(self.box_nms_thresh, self.crop_nms_thresh))
            for i in order:
                if i in fixed:
                    boxes[i] = new_boxes[i]
            del masks
        self._add("small_regions", t0)
        t0 = time.perf_counter()
        records = []
        for start in range(0, len(order), _UPSCALE_CHUNK):
            chunk = [int(i) for i in order[start:start + _UPSCALE_CHUNK]]
            todo = [i for i in chunk if i not in fixed]
            made = dict(zip(todo, self._masks(cand, crops, orig_size, todo)))
            for i in chunk:
                m = fixed[i] if i in fixed else made[i]
                records.append(self._record(cand, i, m, boxes[i]))
        self._add("upscale_encode", t0)
        return records

    def _record(self, cand, i: int, mask: np.ndarray, box) -> Dict[str, Any]:
        if self.output_mode == "binary_mask":
            seg: Any = mask
        elif self.output_mode == "coco_rle":
            seg = coco_rle(mask)
        else:
            seg = mask_to_rle(mask)
        x0, y0, x1, y1 = (int(v) for v in box)
        cx0, cy0, cx1, cy1 = (int(v) for v in cand["crop_boxes"][i])
        return {
            "segmentation": seg,
            "area": int(np.count_nonzero(mask)),
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "predicted_iou": float(cand["iou"][i]),
            "point_coords": [[float(v) for v in cand["points"][i]]],
            "stability_score": float(cand["stability"][i]),
            "crop_box": [cx0, cy0, cx1 - cx0, cy1 - cy0],
        }


def _take(cand: Dict[str, np.ndarray], idx: np.ndarray) -> Dict[str, np.ndarray]:
    return {k: v[idx] for k, v in cand.items()}
