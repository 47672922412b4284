"""``SAM2ImagePredictor``: Meta's SAM 2 image predictor API on rlx-compiled graphs.

    predictor = SAM2ImagePredictor(build_sam2("sam2.1_hiera_t", checkpoint=...))
    predictor.set_image(image)                     # HxWx3 uint8 RGB, a PIL image or a path
    masks, scores, logits = predictor.predict(point_coords=[[420, 310]], point_labels=[1])

Same arguments, shapes and meaning as ``sam2.sam2_image_predictor``:
``masks`` ``[C, H, W]`` float32 0/1 (logits with ``return_logits=True``),
``iou_predictions`` ``[C]``, ``low_res_masks`` ``[C, 4g, 4g]`` logits clamped to
[-32, 32] (C = 3 with ``multimask_output``, else 1); with B prompts at once
(``point_coords`` ``[B, N, 2]``, ``box`` ``[B, 4]``) every result gains a
leading B axis. What each step does, and how it follows the official one:

1. the prompt is checked (one `InputError` naming the culprit; clicks or box
   corners outside the image are refused, not clipped), then mapped into the
   square model frame (`models.sam2.prompt`: x * S / W, y * S / H);
2. the sparse embedding is computed on the host (box corners first as points
   labelled 2 / 3, the clicks, then the padding point);
3. the compiled bucket of that prompt shape runs (`decoder_buckets`); its
   image-only work ran once at the first click after ``set_image``;
4. the outputs are picked like ``MaskDecoder.forward``: mask tokens 1..3 for
   multimask, else token 0 -- unless its mask is *unstable* (area above +0.05
   over area above -0.05 below 0.98; ``dynamic_multimask_via_stability``), when
   the best-scoring multimask token replaces it;
5. the low-res logits are resized to the original image in one bilinear step
   (no padding to crop: the image was stretched, not padded), thresholded at
   ``mask_threshold`` on the way (the SAM v1 fused kernels, `models.sam.postprocess`).

``max_hole_area`` / ``max_sprinkle_area`` (off by default) need connected
components on the low-res mask, which the official code runs as a CUDA
extension; they are refused here rather than silently skipped.
"""

from __future__ import annotations

import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from rlx.errors import InputError, RlxError

from models.sam.postprocess import postprocess_binary, postprocess_masks

from .build import Sam2Model
from .decoder import MAX_SPARSE_TOKENS
from .predictor_image import preprocess
from .prompt import sparse_embeddings, transform_coords

__all__ = ["SAM2ImagePredictor", "ImageNotSetError", "stability_scores"]

#: clicks per prompt: room for the box's two corners and the padding point
MAX_POINTS = MAX_SPARSE_TOKENS - 3
#: ``SAM2ImagePredictor._predict`` clamps the returned low-res logits to this
LOW_RES_CLAMP = 32.0


class ImageNotSetError(RlxError, RuntimeError):
    """A prediction or embedding was asked for before ``set_image``."""


def stability_scores(logits: np.ndarray, delta: float) -> np.ndarray:
    """IoU of the masks at thresholds +delta and -delta: ``[..., h, w]`` -> ``[...]``."""
    flat = logits.reshape(logits.shape[:-2] + (-1,))
    inter = np.count_nonzero(flat > delta, axis=-1).astype(np.float32)
    union = np.count_nonzero(flat > -delta, axis=-1).astype(np.float32)
    return np.where(union > 0, inter / np.maximum(union, 1), np.float32(1.0))


def _numeric(value, what: str) -> np.ndarray:
    try:
        a = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise InputError(f"{what} is not an array: {exc}") from None
    if a.dtype.kind not in "iuf" or a.size and not np.all(np.isfinite(a)):
        raise InputError(f"{what} must be finite numbers, got dtype {a.dtype}")
    return a


class SAM2ImagePredictor:
    """Computes an image's features once, for repeated prompting (like Meta's)."""

    def __init__(self, sam_model: Sam2Model, mask_threshold: float = 0.0,
                 max_hole_area: float = 0.0, max_sprinkle_area: float = 0.0, **kwargs):
        if not isinstance(sam_model, Sam2Model):
            raise InputError(f"SAM2ImagePredictor needs a model from build_sam2, got "
                             f"{type(sam_model).__name__}")
        if max_hole_area or max_sprinkle_area:
            raise InputError("max_hole_area / max_sprinkle_area are not supported (the official "
                             "code needs its CUDA extension for them); leave them at 0")
        try:
            self.mask_threshold = float(mask_threshold)
        except (TypeError, ValueError):
            raise InputError(f"mask_threshold must be a number, got {mask_threshold!r}") from None
        self.model = sam_model
        #: per-step seconds of the last predict call (prompt, decoder, postprocess, total)
        self.timings: Dict[str, float] = {}
        self.reset_predictor()

    # ---- image ------------------------------------------------------------------------

    def set_image(self, image) -> None:
        """Compute the features of ``image``: HxWx3 uint8 RGB array, PIL image or file path."""
        c = self.model.config
        x, orig_hw = preprocess(image, c.image_size, c.pixel_mean, c.pixel_std)
        self.reset_predictor()
        self.set_features(self.model.image_features(x), orig_hw)

    def set_image_batch(self, image_list: List) -> None:
        """Features of several images (each encoded on its own); use `predict_batch`."""
        if not isinstance(image_list, (list, tuple)) or not image_list:
            raise InputError("set_image_batch needs a non-empty list of images")
        c = self.model.config
        feats, sizes = [], []
        for image in image_list:
            x, orig_hw = preprocess(image, c.image_size, c.pixel_mean, c.pixel_std)
            feats.append(self._frozen(self.model.image_features(x)))
            sizes.append(orig_hw)
        self.reset_predictor()
        self._features, self._orig_hw = feats, sizes
        self._is_image_set = self._is_batch = True

    def set_features(self, features: Dict[str, np.ndarray], orig_hw: Sequence[int]) -> None:
        """Use precomputed features (``high_res_0``, ``high_res_1``, ``image_embed``) of an
        image of size ``orig_hw`` (h, w) instead of running the image side."""
        try:
            h, w = (int(v) for v in orig_hw)
        except (TypeError, ValueError):
            raise InputError(f"orig_hw must be (height, width), got {orig_hw!r}") from None
        if h <= 0 or w <= 0:
            raise InputError(f"orig_hw must be positive, got {orig_hw!r}")
        shapes = self.model.decoder.feature_shapes()
        for name, shape in shapes.items():
            if name not in features:
                raise InputError(f"features lack {name!r} (need {', '.join(shapes)})")
            if tuple(np.shape(features[name])) != shape:
                raise InputError(f"feature {name!r} must have shape {list(shape)}, "
                                 f"got {list(np.shape(features[name]))}")
        self.reset_predictor()
        self._features, self._orig_hw = [self._frozen(features)], [(h, w)]
        self._is_image_set = True

    @staticmethod
    def _frozen(features: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        # Own read-only copies: the staged prompt graphs recognise an unchanged image by
        # identity of frozen arrays (rlx.runtime.staged) and keep work derived from them.
        out = {}
        for name, value in features.items():
            a = np.array(value, dtype=np.float32, order="C", copy=True)
            a.setflags(write=False)
            out[name] = a
        return out

    def get_image_embedding(self) -> np.ndarray:
        """The S/16 image embedding ``[1, C, g, g]`` of the current image (read-only)."""
        self._check_set()
        return self._features[0]["image_embed"]

    @property
    def features(self) -> Optional[Dict[str, np.ndarray]]:
        """The feature levels of the current image (read-only arrays), or None."""
        return self._features[0] if self._features else None

    @property
    def orig_hw(self) -> Optional[Tuple[int, int]]:
        return self._orig_hw[0] if self._orig_hw else None

    def reset_predictor(self) -> None:
        """Forget the current image."""
        self._is_image_set = False
        self._is_batch = False
        self._features: Optional[List[Dict[str, np.ndarray]]] = None
        self._orig_hw: Optional[List[Tuple[int, int]]] = None

    def _check_set(self) -> None:
        if not self._is_image_set:
            raise ImageNotSetError("An image must be set with .set_image(...) before mask "
                                   "prediction.")

    # ---- prediction ---------------------------------------------------------------------

    def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None,
                multimask_output: bool = True, return_logits: bool = False,
                normalize_coords: bool = True):
        """``(masks, iou_predictions, low_res_masks)`` for a prompt on the current image.

        ``point_coords`` N x 2 (x, y) pixels of the image (in [0, 1] with
        ``normalize_coords=False``) with ``point_labels`` N (1 foreground, 0
        background); ``box`` x0, y0, x1, y1; ``mask_input`` 1 x 4g x 4g logits
        (a previous ``low_res_masks`` entry). B prompts at once: B x N x 2 points,
        B x 4 boxes, B x 1 x 4g x 4g masks.
        """
        self._check_set()
        return self._predict_image(0, point_coords, point_labels, box, mask_input,
                                   multimask_output, return_logits, normalize_coords)

    def predict_batch(self, point_coords_batch=None, point_labels_batch=None, box_batch=None,
                      mask_input_batch=None, multimask_output: bool = True,
                      return_logits: bool = False, normalize_coords: bool = True):
        """`predict` per image of `set_image_batch`: lists of masks, IoUs and low-res logits."""
        self._check_set()
        if not self._is_batch:
            raise InputError("predict_batch needs images set with set_image_batch")
        outs = ([], [], [])
        for i in range(len(self._features)):
            def pick(x):
                return None if x is None else x[i]
            res = self._predict_image(i, pick(point_coords_batch), pick(point_labels_batch),
                                      pick(box_batch), pick(mask_input_batch),
                                      multimask_output, return_logits, normalize_coords)
            for acc, value in zip(outs, res):
                acc.append(value)
        return outs

    def _prompts(self, point_coords, point_labels, box, mask_input, normalize_coords,
                 orig_hw) -> Tuple[int, list]:
        """Validated prompts, one (coords, labels, box, mask) tuple per object, model frame."""
        if point_coords is None and box is None and mask_input is None:
            raise InputError("empty prompt: give point_coords with point_labels, a box, "
                             "a mask_input, or a combination")
        h, w = orig_hw
        limit = (w, h) if normalize_coords else (1.0, 1.0)
        frame = f"the {w}x{h} image" if normalize_coords else "[0, 1] (normalize_coords=False)"
        batch = None
        coords = labels = boxes = masks = None
        if point_coords is not None or point_labels is not None:
            if point_coords is None or point_labels is None:
                raise InputError("point_labels must be supplied with point_coords "
                                 "(1 = foreground, 0 = background)")
            coords = _numeric(point_coords, "point_coords").astype(np.float32)
            if coords.ndim == 2:
                coords = coords[None]
            if coords.ndim != 3 or coords.shape[2] != 2 or coords.shape[1] == 0:
                raise InputError(f"point_coords must be N x 2 (or B x N x 2) (x, y) "
                                 f"coordinates, got shape {np.shape(point_coords)}")
            if coords.shape[1] > MAX_POINTS:
                raise InputError(f"at most {MAX_POINTS} points per prompt, got {coords.shape[1]}")
            labels = _numeric(point_labels, "point_labels")
            if labels.ndim == 1:
                labels = labels[None]
            if labels.shape != coords.shape[:2]:
                raise InputError(f"point_labels must have one label per point: points "
                                 f"{list(coords.shape[:2])}, labels {list(np.shape(point_labels))}")
            bad = ~np.isin(labels, (1, 0, -1))
            if bad.any():
                raise InputError(f"point_labels must be 1 (foreground) or 0 (background) "
                                 f"(-1: ignored point); got {np.unique(labels[bad]).tolist()}")
            labels = labels.astype(np.int64)
            x, y = coords[..., 0], coords[..., 1]
            out = (x < 0) | (x > limit[0]) | (y < 0) | (y > limit[1])
            if out.any():
                i = np.argwhere(out)[0]
                raise InputError(f"point {tuple(i.tolist())} (x={x[tuple(i)]:g}, "
                                 f"y={y[tuple(i)]:g}) is outside {frame}")
            batch = coords.shape[0]
        if box is not None:
            boxes = _numeric(box, "box").astype(np.float32)
            if boxes.ndim == 1:
                boxes = boxes[None]
            if boxes.ndim != 2 or boxes.shape[1] != 4:
                raise InputError(f"box must be 4 numbers x0, y0, x1, y1 (or B x 4), got shape "
                                 f"{np.shape(box)}")
            if np.any(boxes[:, 2] < boxes[:, 0]) or np.any(boxes[:, 3] < boxes[:, 1]):
                raise InputError(f"box must have x0 <= x1 and y0 <= y1, got {boxes.tolist()}")
            xs, ys = boxes[:, 0::2], boxes[:, 1::2]
            if np.any(xs < 0) or np.any(xs > limit[0]) or np.any(ys < 0) or np.any(ys > limit[1]):
                raise InputError(f"box {boxes.tolist()} is outside {frame}")
            if batch is not None and boxes.shape[0] != batch:
                raise InputError(f"{batch} point prompts but {boxes.shape[0]} boxes")
            batch = boxes.shape[0]
        if mask_input is not None:
            s = self.model.decoder.mask_size
            masks = _numeric(mask_input, "mask_input").astype(np.float32)
            if masks.ndim == 3:
                masks = masks[None]
            if masks.ndim != 4 or masks.shape[1:] != (1, s, s):
                raise InputError(f"mask_input must be 1 x {s} x {s} (a low_res_masks entry of a "
                                 f"previous prediction, e.g. low_res_masks[best][None]), got "
                                 f"shape {list(np.shape(mask_input))}")
            if batch is not None and masks.shape[0] not in (1, batch):
                raise InputError(f"{batch} prompts but {masks.shape[0]} mask inputs")
            batch = batch or masks.shape[0]
        size = self.model.image_size
        objects = []
        for i in range(batch):
            c = l = bx = m = None
            if coords is not None:
                c = transform_coords(coords[i], (h, w), size, normalize_coords)
                l = labels[i]
            if boxes is not None:
                bx = transform_coords(boxes[i].reshape(2, 2), (h, w), size, normalize_coords)
            if masks is not None:
                m = masks[i if masks.shape[0] > 1 else 0][None]
            objects.append((c, l, bx, m))
        return batch, objects

    def _select(self, low: np.ndarray, iou: np.ndarray, multimask: bool):
        """``MaskDecoder.forward``'s choice among the mask tokens (one object)."""
        if multimask:
            return low[:, 1:], iou[:, 1:]
        c = self.model.config
        if c.dynamic_multimask_via_stability:
            stable = stability_scores(low[0, 0], c.dynamic_multimask_stability_delta) \
                >= c.dynamic_multimask_stability_thresh
            if not stable:
                best = 1 + int(np.argmax(iou[0, 1:]))
                return low[:, best:best + 1], iou[:, best:best + 1]
        return low[:, 0:1], iou[:, 0:1]

    def _predict_image(self, index, point_coords, point_labels, box, mask_input,
                       multimask_output, return_logits, normalize_coords):
        t0 = time.perf_counter()
        feats, orig_hw = self._features[index], self._orig_hw[index]
        batch, objects = self._prompts(point_coords, point_labels, box, mask_input,
                                       normalize_coords, orig_hw)
        dec = self.model.decoder
        lows, ious = [], []
        t_prompt = t_dec = 0.0
        for coords, labels, bx, mask in objects:
            ta = time.perf_counter()
            sparse = sparse_embeddings(self.model.weights, self.model.image_size, coords, labels, bx)
            tb = time.perf_counter()
            low_all, iou_all, _ = dec.run(feats, sparse, mask)
            low, iou = self._select(low_all, iou_all, bool(multimask_output))
            lows.append(low)
            ious.append(iou)
            t_prompt += tb - ta
            t_dec += time.perf_counter() - tb
        low = np.concatenate(lows, axis=0)  # [B, C, 4g, 4g]
        iou = np.concatenate(ious, axis=0)
        t1 = time.perf_counter()
        s = low.shape[-1]
        if return_logits:
            masks = postprocess_masks(low, (s, s), orig_hw, s)
        else:
            masks = postprocess_binary(low, (s, s), orig_hw, s, self.mask_threshold)
            masks = masks.astype(np.float32)  # the official predictor returns 0/1 floats
        low = np.clip(low, -LOW_RES_CLAMP, LOW_RES_CLAMP)
        t2 = time.perf_counter()
        self.timings = {"prompt_encoding": t_prompt, "decoder": t_dec, "postprocess": t2 - t1,
                        "total": t2 - t0}
        if batch == 1:  # the official .squeeze(0)
            return masks[0], np.ascontiguousarray(iou[0]), np.ascontiguousarray(low[0])
        return masks, iou, low

    @property
    def device(self) -> str:
        return "cpu"
