"""``SamPredictor.predict``: prompts in original-image pixels -> masks, scores, logits.

The steps, each in its own module:

1. validate the prompt (here) -- every mistake is one `InputError` naming
   the culprit;
2. rescale points / box into the 1024-frame (`transforms`) and compute the
   sparse prompt embeddings on the host (`prompt_encoding`);
3. run the compiled "prompt -> masks" graph of the prompt's bucket
   (`prompt_graph`);
4. pick the outputs exactly like the official ``MaskDecoder.forward``
   (multimask: mask tokens 1..3, else token 0);
5. upscale the low-res logits to the original image (`postprocess`) and
   threshold them (strictly greater than the threshold, 0.0 by default).

Coordinates outside the image are **rejected**, not clipped: a click or box
corner outside ``[0, W] x [0, H]`` is almost always a mix-up (swapped x/y,
coordinates of another image, a normalised coordinate), and silently
clipping it would return a confident mask for a prompt the user did not
give. The closed interval allows boxes that span the whole image
(``[0, 0, W, H]``).

A mask prompt alone (``mask_input`` without points or box) is allowed, as in
the official code; no prompt at all is an error.

Results match the official ``SamPredictor.predict``: ``masks`` ``[C, H, W]``
bool (float32 logits with ``return_logits=True``), ``iou_predictions``
``[C]`` float32, ``low_res_logits`` ``[C, 256, 256]`` float32, with C = 3
(multimask) or 1.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from rlx.errors import InputError

from . import prompt_encoding
from .config import SamConfig
from .postprocess import postprocess_binary, postprocess_masks
from .prefetch import start_image_stage
from .prompt_graph import MAX_SPARSE_TOKENS, PromptDecoder, decoder_for
from .transforms import apply_boxes, apply_coords, get_preprocess_shape

__all__ = ["MAX_POINTS", "Prediction", "predict", "predict_detailed", "predict_from_embedding",
           "set_image_embedding", "validate_prompt"]

#: points per prompt: every distinct count is one compiled graph; room for the box's two corners
MAX_POINTS = MAX_SPARSE_TOKENS - 2


@dataclass
class Prediction:
    """Everything one predict call produced (the CLI reports all of it)."""

    masks: np.ndarray            # [C, H, W] bool, or float32 logits
    iou_predictions: np.ndarray  # [C] float32
    low_res_logits: np.ndarray   # [C, 4g, 4g] float32
    bucket: Tuple[int, bool]     # (sparse tokens, mask prompt) of the compiled graph used
    timings: Dict[str, float] = field(default_factory=dict)  # seconds per step

    def as_tuple(self):
        return self.masks, self.iou_predictions, self.low_res_logits


@dataclass(frozen=True)
class Prompt:
    """A validated prompt, still in original-image pixels (float64)."""

    points: Optional[np.ndarray]  # [N, 2]
    labels: Optional[np.ndarray]  # [N] int64 in {1, 0, -1}
    box: Optional[np.ndarray]     # [4] x0, y0, x1, y1
    mask: Optional[np.ndarray]    # [1, 1, S, S] float32


# ---- validation --------------------------------------------------------------------------


def _numeric(value, what: str) -> np.ndarray:
    try:
        a = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise InputError(f"{what} is not an array: {exc}") from None
    if a.dtype.kind not in "iuf":
        raise InputError(f"{what} must be numeric, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise InputError(f"{what} contains NaN or infinite values")
    return a


def _check_inside(xy: np.ndarray, what: Sequence[str], original_size: Tuple[int, int]) -> None:
    h, w = original_size
    for name, (x, y) in zip(what, xy):
        if not (0.0 <= x <= w and 0.0 <= y <= h):
            raise InputError(
                f"{name} (x={x:g}, y={y:g}) is outside the {w}x{h} image "
                f"(x must be in [0, {w}], y in [0, {h}]; coordinates are (x, y) pixels "
                "of the original image)")


def validate_prompt(point_coords, point_labels, box, mask_input,
                    original_size: Tuple[int, int], mask_size: int) -> Prompt:
    """Check a prompt against the image size; raise `InputError` on the first problem."""
    if point_coords is None and point_labels is None and box is None and mask_input is None:
        raise InputError("empty prompt: give point_coords with point_labels, a box, "
                         "a mask_input, or a combination")
    points = labels = None
    if point_coords is not None or point_labels is not None:
        if point_coords is None:
            raise InputError("point_labels were given without point_coords")
        if point_labels is None:
            raise InputError("point_labels must be supplied with point_coords "
                             "(1 = foreground, 0 = background)")
        points = _numeric(point_coords, "point_coords")
        if points.ndim != 2 or points.shape[1] != 2:
            raise InputError(f"point_coords must be an N x 2 array of (x, y) pixels, "
                             f"got shape {points.shape}")
        if points.shape[0] == 0:
            raise InputError("point_coords holds no points (pass None to give no points)")
        if points.shape[0] > MAX_POINTS:
            raise InputError(f"at most {MAX_POINTS} points per prompt, got {points.shape[0]}")
        labels = _numeric(point_labels, "point_labels")
        if labels.ndim != 1 or labels.shape[0] != points.shape[0]:
            raise InputError(f"point_labels must have one label per point: "
                             f"{points.shape[0]} points, labels of shape {labels.shape}")
        bad = ~np.isin(labels, (1.0, 0.0, -1.0))
        if bad.any():
            raise InputError(f"point_labels must be 1 (foreground) or 0 (background) "
                             f"(-1: ignored point); got {np.unique(labels[bad]).tolist()}")
        labels = labels.astype(np.int64)
        _check_inside(points, [f"point {i}" for i in range(len(points))], original_size)
    if box is not None:
        box = _numeric(box, "box")
        if box.shape not in ((4,), (1, 4)):
            raise InputError(f"box must be 4 numbers x0, y0, x1, y1 (shape [4] or [1, 4]), "
                             f"got shape {box.shape}")
        box = box.reshape(4)
        x0, y0, x1, y1 = box
        if x1 < x0 or y1 < y0:
            raise InputError(f"box must have x0 <= x1 and y0 <= y1, got {box.tolist()}")
        _check_inside(box.reshape(2, 2), ["box corner (x0, y0)", "box corner (x1, y1)"],
                      original_size)
    mask = None
    if mask_input is not None:
        m = _numeric(mask_input, "mask_input")
        if m.shape != (1, mask_size, mask_size):
            raise InputError(
                f"mask_input must be 1 x {mask_size} x {mask_size} (a low_res_logits entry of "
                f"a previous prediction, e.g. low_res_logits[best][None]), got shape {m.shape}")
        mask = m.astype(np.float32)[None]
    return Prompt(points, labels, box, mask)


# ---- prediction --------------------------------------------------------------------------


def _threshold_value(value, config: SamConfig) -> float:
    if value is None:
        return float(config.mask_threshold)
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise InputError(f"mask_threshold must be a number, got {value!r}") from None
    if not np.isfinite(t):
        raise InputError(f"mask_threshold must be finite, got {t}")
    return t


def predict_from_embedding(
    decoder: PromptDecoder,
    features: np.ndarray,
    original_size: Tuple[int, int],
    point_coords=None,
    point_labels=None,
    box=None,
    mask_input=None,
    multimask_output: bool = True,
    return_logits: bool = False,
    mask_threshold: Optional[float] = None,
    input_size: Optional[Tuple[int, int]] = None,
) -> Prediction:
    """The predict logic on an explicit embedding (what `SamPredictor.predict` runs).

    ``features`` is the image embedding ``[1, C, g, g]`` of an image of
    ``original_size`` (h, w); ``input_size`` (the resized size inside the
    padded square) is derived from it unless given.
    """
    c = decoder.config
    timings: Dict[str, float] = {}
    t0 = time.perf_counter()
    h, w = (int(v) for v in original_size)
    if input_size is None:
        input_size = get_preprocess_shape(h, w, c.image_size)
    prompt = validate_prompt(point_coords, point_labels, box, mask_input, (h, w),
                             c.mask_input_size)
    thr = _threshold_value(mask_threshold, c)

    coords = labels = boxes = None
    if prompt.points is not None:
        coords = apply_coords(prompt.points, (h, w), c.image_size).astype(np.float32)[None]
        labels = prompt.labels[None]
    if prompt.box is not None:
        boxes = apply_boxes(prompt.box, (h, w), c.image_size).astype(np.float32)
    sparse = prompt_encoding.sparse_embeddings(coords, labels, boxes, decoder.weights,
                                               input_image_size=c.image_size)
    t1 = time.perf_counter()
    timings["prompt_encoding"] = t1 - t0

    bucket = (int(sparse.shape[1]), prompt.mask is not None)
    compiled_before = bucket in decoder.buckets
    low_res_all, iou_all = decoder.run(features, sparse, prompt.mask)
    t2 = time.perf_counter()
    timings["decoder" if compiled_before else "decoder_incl_compile"] = t2 - t1

    # The official selection: multimask -> mask tokens 1..M-1, else token 0.
    pick = slice(1, None) if multimask_output else slice(0, 1)
    low_res = low_res_all[:, pick]
    iou = iou_all[:, pick]
    if return_logits:
        masks = postprocess_masks(low_res, input_size, (h, w), c.image_size)
    else:  # thresholded while upscaling: no float32 masks at the original size
        masks = postprocess_binary(low_res, input_size, (h, w), c.image_size, thr)
    t3 = time.perf_counter()
    timings["postprocess"] = t3 - t2
    timings["total"] = t3 - t0
    return Prediction(masks=masks[0], iou_predictions=np.ascontiguousarray(iou[0]),
                      low_res_logits=np.ascontiguousarray(low_res[0]), bucket=bucket,
                      timings=timings)


def _image_state(predictor):
    if not getattr(predictor, "is_image_set", False) or predictor.features is None:
        from .model import ImageNotSetError

        raise ImageNotSetError("An image must be set with .set_image(...) before mask "
                               "prediction.")
    return predictor.features, predictor.original_size, predictor.input_size


def predict_detailed(predictor, point_coords=None, point_labels=None, box=None, mask_input=None,
                     multimask_output: bool = True, return_logits: bool = False,
                     mask_threshold: Optional[float] = None) -> Prediction:
    """`predict` returning a `Prediction` (with the bucket used and per-step timings)."""
    features, original_size, input_size = _image_state(predictor)
    return predict_from_embedding(
        decoder_for(predictor.model), features, original_size, point_coords, point_labels,
        box, mask_input, multimask_output, return_logits, mask_threshold, input_size)


def predict(predictor, point_coords=None, point_labels=None, box=None, mask_input=None,
            multimask_output: bool = True, return_logits: bool = False,
            mask_threshold: Optional[float] = None):
    """``(masks, iou_predictions, low_res_logits)`` like the official ``SamPredictor.predict``.

    ``point_coords`` N x 2 (x, y) pixels of the original image with
    ``point_labels`` N (1 foreground, 0 background); ``box`` x0, y0, x1, y1;
    ``mask_input`` 1 x 256 x 256 logits from a previous call's
    ``low_res_logits``; ``mask_threshold`` replaces the model's 0.0.
    """
    return predict_detailed(predictor, point_coords, point_labels, box, mask_input,
                            multimask_output, return_logits, mask_threshold).as_tuple()


def set_image_embedding(predictor, embedding: np.ndarray, original_size: Sequence[int]) -> None:
    """Give a predictor a precomputed image embedding instead of running ``set_image``.

    For embeddings computed elsewhere (cached on disk, a server, or -- in the
    parity tests -- the official encoder, so the decoder can be compared at
    full ViT-B width without running the ViT-B encoder twice).
    ``original_size`` is the (h, w) of the image the embedding belongs to.
    """
    c = predictor.model.config
    d, g = c.prompt_embed_dim, c.image_embedding_size
    # Our own read-only copy: the prompt graphs keep work derived from it (see prompt_graph).
    emb = np.array(embedding, dtype=np.float32, order="C", copy=True)
    if emb.shape != (1, d, g, g):
        raise InputError(f"image embedding must have shape [1, {d}, {g}, {g}], "
                         f"got {list(emb.shape)}")
    try:
        h, w = (int(v) for v in original_size)
    except (TypeError, ValueError):
        raise InputError(f"original_size must be (height, width), got {original_size!r}") \
            from None
    input_size = get_preprocess_shape(h, w, c.image_size)
    emb.setflags(write=False)
    predictor.reset_image()
    predictor.features = emb
    predictor.original_size = (h, w)
    predictor.input_size = input_size
    predictor.is_image_set = True
    # the click graph's image-only stage, in the background (models.sam.prefetch)
    if getattr(predictor, "prefetch_click", False):
        start_image_stage(predictor)
