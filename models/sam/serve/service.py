"""The model side of ``rlx serve``: encode an image, answer a prompt, keep clients apart.

One `SegmentService` wraps one compiled `Sam`. What may run at the same time:

* **Encoding** runs the compiled encoder, which (like every compiled plan)
  runs one call at a time: encodes are serialised by ``_encoder_lock``.
  Preprocessing (resize, normalise) happens before the lock.
* **A click** never touches the encoder or its lock. It takes the lock of
  its own image (`ImageEntry.lock`: one request at a time changes an image's
  refine state) and runs the prompt decoder, which serialises its compiled
  calls itself (`models.sam.prompt_graph.PromptDecoder`). So a click on an
  encoded image does not wait for another image's encoder; the two share
  the CPU.
* **Segment everything** runs `models.sam.automatic.SamAutomaticMaskGenerator`
  on the kept embedding (no encoder pass), one request at a time
  (``_everything_lock``: its batched decoder graphs run one call at a
  time; a second request meanwhile gets 503 instead of waiting on a
  request thread); clicks go ahead meanwhile.
* The state a `SamPredictor` keeps for its one image (embedding, original
  and input size) lives in each cache entry instead, and a click runs
  `models.sam.predict.predict_from_embedding` on it -- the function
  ``SamPredictor.predict`` itself runs -- so the masks are the predictor's
  for the same prompt, whichever image the previous request was on.
* After an upload, the image-only stage of the compiled prompt graphs runs
  for the new embedding in a background job (`models.sam.prefetch.
  start_embedding_stage`, under the prompt decoder's lock), with the
  post-processing warm-up for the image's size: the first click on the newest
  image then costs what the next ones do (1500x2000 ViT-B: ~45 -> ~28 ms).

PNG encoding of the returned masks happens outside every lock, one mask on
the request thread and the others on a small thread pool (the compiled
DEFLATE encoder in `deflate` releases the GIL).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Iterable, Optional, Tuple

import numpy as np

from rlx.errors import InputError

from .. import prefetch
from ..image import load_image, preprocess
from ..predict import predict_from_embedding
from ..prompt_graph import decoder_for
from .embeddings import EmbeddingCache, ImageEntry, new_image_id
from .errors import ApiError
from .limits import ServeLimits
from .png import mask_png, mask_png_and_area
from .prompts import EverythingRequest, MaskRequest

__all__ = ["SegmentService", "SYNTHETIC_NOTE"]


def _mask_part(mask: np.ndarray) -> Tuple[bytes, int]:
    """One mask of an answer: (base64 of its PNG, its area in pixels)."""
    png, area = mask_png_and_area(mask)
    return base64.b64encode(png), area


SYNTHETIC_NOTE = ("no checkpoint given: the model runs on SYNTHETIC random weights, the masks "
                  "are meaningless (start rlx serve with --checkpoint sam_vit_b_01ec64.pth)")


class SegmentService:
    """One compiled `Sam` serving many clients: the image cache, the locks, the answers."""

    def __init__(self, sam, limits: Optional[ServeLimits] = None, model_name: Optional[str] = None,
                 png_threads: int = 2):
        self.sam = sam
        self.config = sam.config
        self.limits = limits or ServeLimits()
        self.model_name = model_name or sam.config.name
        self.decoder = decoder_for(sam)
        self.cache = EmbeddingCache(self.limits.cache_images, self.limits.cache_bytes)
        c = self.config
        one = 4 * c.prompt_embed_dim * c.image_embedding_size ** 2 + 4 * c.mask_input_size ** 2
        if one > self.limits.cache_bytes:
            raise InputError(f"the embedding cache ({self.limits.cache_bytes / 2**20:.1f} MB) "
                             f"cannot hold one {self.model_name} image ({one / 2**20:.1f} MB); "
                             "raise --cache-mb")
        self._encoder_lock = threading.Lock()
        self._everything_lock = threading.Lock()
        #: the newest upload, whose image-only prompt work runs in the background
        self._latest: Optional[ImageEntry] = None
        self._stage_job = None
        self._generators: Dict[EverythingRequest, object] = {}
        self._png_pool = ThreadPoolExecutor(max_workers=max(1, png_threads),
                                            thread_name_prefix="rlx-serve-png")

    # ---- start-up -------------------------------------------------------------------------

    def compile_buckets(self, buckets: Iterable[Tuple[int, bool]]) -> None:
        """Compile prompt buckets now (sparse tokens, mask prompt) instead of on first click."""
        for n, has_mask in buckets:
            self.decoder.bucket(n, has_mask)

    def _blank(self) -> np.ndarray:
        c = self.config
        g = c.image_embedding_size
        blank = np.zeros((1, c.prompt_embed_dim, g, g), dtype=np.float32)
        blank.setflags(write=False)
        return blank

    def warm_up(self) -> None:
        """One prediction on a blank embedding, so the first real click does not pay for
        loading the post-processing kernels (numba's on-disk cache) and first-call set-up."""
        pred = predict_from_embedding(self.decoder, self._blank(), (32, 48),
                                      np.array([[10.0, 10.0]]), np.array([1]),
                                      multimask_output=True)
        mask_png(pred.masks[0])  # loads (or compiles) the PNG writer's DEFLATE kernel

    def warm_up_everything(self) -> None:
        """Compile the segment-everything decoder (a full batch per replica) on a blank
        embedding."""
        from ..automatic import SamAutomaticMaskGenerator, warmup_grid
        from ..model import SamPredictor
        from ..predict import set_image_embedding

        predictor = SamPredictor(self.sam, prefetch_click=False)  # never clicked
        set_image_embedding(predictor, self._blank(), (32, 48))
        gen = SamAutomaticMaskGenerator(self.sam, points_per_side=None,
                                        point_grids=[warmup_grid()], output_mode="coco_rle",
                                        progress=False)
        with self._everything_lock:
            gen.generate_from_predictor(predictor)

    def close(self) -> None:
        self._png_pool.shutdown(wait=False)

    # ---- requests ---------------------------------------------------------------------------

    def health(self) -> dict:
        p = self.sam.profile
        return {
            "status": "ok",
            "model": self.model_name,
            "profile": p.name,
            "backend": p.backend,
            "device": p.device,
            "threads": p.threads,
            "synthetic": bool(self.sam.synthetic),
            "warning": SYNTHETIC_NOTE if self.sam.synthetic else None,
            "image_size": self.config.image_size,
            "everything": True,
            "cache": self.cache.stats(),
            "limits": {"max_upload_bytes": self.limits.max_upload_bytes,
                       "max_pixels": self.limits.max_pixels},
        }

    def add_image(self, image: np.ndarray) -> Tuple[ImageEntry, float]:
        """Encode an HxWx3 uint8 RGB image and keep it: (entry, encode seconds)."""
        c = self.config
        array = load_image(image)
        x, input_size, original_size = preprocess(array, c.image_size, c.pixel_mean, c.pixel_std)
        t0 = time.perf_counter()
        with self._encoder_lock:
            features = self.sam.image_embedding(x)
        seconds = time.perf_counter() - t0
        # Read-only: the prompt graphs recognise an unchanged embedding by identity.
        features.setflags(write=False)
        entry = ImageEntry(id=new_image_id(), features=features, original_size=original_size,
                           input_size=input_size, mask_size=c.mask_input_size)
        self.cache.add(entry)
        self._prepare(entry)
        return entry, seconds

    def _prepare(self, entry: ImageEntry) -> None:
        """The newest upload is the likeliest to be clicked next: run the image-only stage
        of the compiled prompt graphs for it in the background (a job for an older upload
        still waiting is cancelled; one whose image is no longer the newest stops)."""
        self._latest = entry
        if self._stage_job is not None:
            self._stage_job.cancel()

        def current() -> bool:
            return self._latest is entry and entry.id in self.cache

        self._stage_job = prefetch.start_embedding_stage(
            self.decoder, entry.features, entry.input_size, entry.original_size, current)

    def entry(self, image_id: str) -> ImageEntry:
        entry = self.cache.get(image_id)
        if entry is None:
            raise ApiError(404, f"unknown image id {image_id!r} (never uploaded, deleted, or "
                                "evicted from the cache: upload it again)", "id")
        return entry

    def predict(self, entry: ImageEntry, request: MaskRequest):
        """The `Prediction` for ``request`` on ``entry`` (updates its refine state)."""
        with entry.lock:
            mask_input = None
            if request.refine:
                if entry.last_logits is None:
                    raise ApiError(422, "refine: there is no previous mask on this image to "
                                        "refine (send refine: false first)", "refine")
                mask_input = entry.last_logits
            try:
                pred = predict_from_embedding(
                    self.decoder, entry.features, entry.original_size, request.coords(),
                    request.labels(), request.box_array(), mask_input,
                    multimask_output=request.multimask, input_size=entry.input_size)
            except InputError as e:  # prompts.py checks first; this is the model's last word
                raise ApiError(422, str(e)) from None
            best = int(np.argmax(pred.iou_predictions))
            entry.last_logits = np.array(pred.low_res_logits[best][None], copy=True)
        return pred, best

    def masks_json(self, entry: ImageEntry, request: MaskRequest) -> bytes:
        """The answer of ``POST /api/images/{id}/masks``: the JSON body, as bytes.

        Written here rather than by ``json.dumps``: the three base64 PNGs are
        ~0.5 MB of text that ``json.dumps`` would scan for characters to escape
        (base64 has none) and copy twice more, a millisecond with the GIL held.
        Each mask's PNG, base64 text and area are made by one task: the
        first on this thread, the others on the pool meanwhile.
        """
        t0 = time.perf_counter()
        pred, best = self.predict(entry, request)
        t1 = time.perf_counter()
        masks = pred.masks
        rest = [self._png_pool.submit(_mask_part, m) for m in masks[1:]]
        parts = [_mask_part(masks[0])] + [f.result() for f in rest]
        t2 = time.perf_counter()
        items = []
        for (b64, area), score in zip(parts, pred.iou_predictions.tolist()):
            items += [b'{"png":"', b64, b'","score":', json.dumps(score).encode("ascii"),
                      b',"area":', b"%d" % area, b'},']
        if items:
            items[-1] = b"}"
        return b"".join([b'{"masks":[', *items, b'],"best":%d,"decode_ms":' % best,
                         json.dumps(round((t1 - t0) * 1e3, 3)).encode("ascii"),
                         b',"png_ms":', json.dumps(round((t2 - t1) * 1e3, 3)).encode("ascii"),
                         b"}"])

    def generator(self, settings: EverythingRequest):
        """The segment-everything generator for ``settings`` (COCO RLE output)."""
        from ..automatic import SamAutomaticMaskGenerator

        gen = self._generators.get(settings)
        if gen is None:
            if len(self._generators) >= 8:  # settings are few; do not let them pile up
                self._generators.clear()
            gen = SamAutomaticMaskGenerator(
                self.sam, points_per_side=settings.points_per_side,
                pred_iou_thresh=settings.pred_iou_thresh,
                stability_score_thresh=settings.stability_score_thresh,
                box_nms_thresh=settings.box_nms_thresh, output_mode="coco_rle", progress=False)
            self._generators[settings] = gen
        return gen

    def everything(self, entry: ImageEntry, settings: Optional[EverythingRequest] = None) -> dict:
        """The answer of ``POST /api/images/{id}/everything``: COCO-style annotations."""
        from ..model import SamPredictor
        from ..predict import set_image_embedding

        t0 = time.perf_counter()
        # holds this image's embedding for the generator (never clicked: no click warm-up)
        predictor = SamPredictor(self.sam, prefetch_click=False)
        set_image_embedding(predictor, entry.features, entry.original_size)
        # one at a time, and a second request is turned away rather than queued: a queued
        # request would hold one of the server's request threads, which uploads and clicks
        # share, for as long as the first runs
        if not self._everything_lock.acquire(blocking=False):
            raise ApiError(503, "busy: another segment-everything request is running; "
                                "retry when it has finished", "everything")
        try:
            gen = self.generator(settings or EverythingRequest())
            records = gen.generate_from_predictor(predictor)
        finally:
            self._everything_lock.release()
        annotations = [{"id": i + 1, "image_id": 1, "category_id": 1, "iscrowd": 0, **r}
                       for i, r in enumerate(records)]
        return {
            "images": [{"id": 1, "width": entry.width, "height": entry.height}],
            "annotations": annotations,
            "categories": [{"id": 1, "name": "object"}],
            "everything_ms": round((time.perf_counter() - t0) * 1e3, 3),
        }

    def delete(self, image_id: str) -> None:
        if not self.cache.remove(image_id):
            raise ApiError(404, f"unknown image id {image_id!r}", "id")

