"""One compiled "prompt -> masks" graph per prompt-shape bucket.

Shapes are static in rlx, and the number of prompt tokens is a shape: one
click gives two sparse tokens (the click and the padding point), a box two
(its corners), three clicks plus a box five. A bucket is therefore the pair
(number of sparse tokens, mask prompt or not). Each bucket is one graph

    inputs : image_embedding [1, C, g, g]    (from the encoder + neck)
             sparse          [1, N, C]       (host: prompt_encoding.sparse_embeddings)
             mask_input      [1, 1, 4g, 4g]  (only in mask buckets)
    outputs: low_res_masks   [1, M, 4g, 4g]  (all 1 + 3 mask tokens)
             iou_predictions [1, M]

so a click after the image is encoded costs one compiled call. Buckets are
compiled on first use and kept per `PromptDecoder` (one per `Sam`); their
kernels go through the profile's kernel cache like any other graph's.

Each bucket is compiled *staged* (`rlx.runtime.staged`) with the image
embedding marked as a slow input: what depends on the image alone -- the
embedding in token layout plus the no-mask embedding, and the first
transformer layer's projections of it (keys and values of token->image,
queries of image->token; the builder picks that form for a static image
side) -- is computed once per image and kept; the clicks of one image only
run the rest. (With a mask prompt the dense embedding varies per click, and
only the token-layout embedding is kept.)

Why the dense positional encoding and the no-mask embedding are built *in*
the graph rather than passed in from the host: both depend on weights only,
so the fold-constants pass turns them into derived weights computed once when
the weights are bound. The compiled call then takes exactly what varies per
prompt, no per-click host work or extra 4 MB input copy is needed, and
``rlx dump-ir`` shows where every term comes from. (Sparse prompt embeddings
do vary per click and are a few hundred flops, so they stay on the host.)

All mask tokens are computed; picking the multimask outputs (tokens 1..3) or
the single-mask output (token 0) is a slice done by the caller, exactly as
the official ``MaskDecoder.forward`` does after ``predict_masks``.
"""

from __future__ import annotations

import threading
from typing import Dict, Mapping, Optional, Tuple
from weakref import WeakKeyDictionary

import numpy as np

from rlx.errors import InputError
from rlx.ir import Graph, GraphBuilder
from rlx.runtime import background
from rlx.runtime.gc_pause import gc_paused
from rlx.runtime.profile import CompileProfile, resolve_profile
from rlx.runtime.staged import StagedGraph, compile_staged

from .config import SamConfig, get_config
from .prefetch import enabled as prefetch_enabled
from .decoder import (
    DECODER_SUBGRAPHS,
    dense_positional_encoding,
    mask_downscale,
    mask_product_tokens,
    mlp_heads,
    no_mask_embedding,
    output_tokens,
    two_way_transformer,
    upscale_tokens,
)

__all__ = ["CLICK_BUCKET", "PROMPT_TO_MASKS", "IMAGE_INPUT", "PROMPT_SUBGRAPHS", "bucket_name",
           "build_prompt_to_masks", "PromptDecoder", "decoder_for"]

PROMPT_TO_MASKS = "prompt_to_masks"
#: the bucket graph input that changes once per image, not per click
IMAGE_INPUT = "image_embedding"
#: a sanity bound on prompt size: one graph is compiled per distinct count
MAX_SPARSE_TOKENS = 64

Bucket = Tuple[int, bool]
#: the bucket of the most common prompt, one click (plus its padding point) without a mask:
#: compiled in the background while an image is encoded (`PromptDecoder.prefetch`)
CLICK_BUCKET: Bucket = (2, False)


def bucket_name(num_sparse: int, has_mask: bool) -> str:
    return f"{PROMPT_TO_MASKS}_n{num_sparse}{'_mask' if has_mask else ''}"


def build_prompt_to_masks(config, num_sparse: int, has_mask: bool = False,
                          name: Optional[str] = None) -> Graph:
    """The whole prompt side of SAM for one bucket (see the module docstring)."""
    c = get_config(config)
    if not 0 <= num_sparse <= MAX_SPARSE_TOKENS:
        raise InputError(f"a prompt has 0..{MAX_SPARSE_TOKENS} sparse tokens, got {num_sparse}")
    d, g, s = c.prompt_embed_dim, c.image_embedding_size, c.mask_input_size
    b = GraphBuilder(name or bucket_name(num_sparse, has_mask))
    emb = b.input(IMAGE_INPUT, (1, d, g, g))
    sparse = b.input("sparse", (1, num_sparse, d)) if num_sparse else None
    mask = b.input("mask_input", (1, 1, s, s)) if has_mask else None

    def tokens(x):  # [1, C, g, g] -> [1, g*g, C]
        return b.transpose(b.reshape(x, shape=(1, d, g * g)), perm=(0, 2, 1))

    # Image tokens plus the dense prompt (a downscaled mask, or the learned no-mask row).
    if mask is not None:
        src = b.add(tokens(emb), tokens(mask_downscale(b, c, mask)))
    else:
        src = b.add(tokens(emb), no_mask_embedding(b, c))
    pe = dense_positional_encoding(b, c)
    points = output_tokens(b, c)
    if sparse is not None:
        points = b.concat(points, sparse, axis=1)
    queries, keys = two_way_transformer(b, c, src, pe, points, static_image=mask is None,
                                        out_tokens=1 + c.num_mask_tokens)
    hyper_in, iou = mlp_heads(b, c, queries)
    masks = mask_product_tokens(b, c, hyper_in, upscale_tokens(b, c, keys))
    b.output(masks, iou)
    return b.build()


class PromptDecoder:
    """Compiled prompt buckets for one model (config + weights + profile).

    ``run(embedding, sparse, mask_input)`` picks (and on first use compiles
    and binds) the bucket for the prompt's shape. Thread-safe for compiling;
    a compiled graph runs one call at a time, which a lock enforces. Buckets
    keep their image-only work for the last embedding they saw; pass the same
    read-only array for every click of an image (`SamPredictor` does) and it
    is recognised without looking at its contents.
    """

    def __init__(self, config, weights: Mapping[str, np.ndarray],
                 profile: "CompileProfile | str | None" = "default"):
        self.config: SamConfig = get_config(config)
        self.weights = weights
        self.profile = resolve_profile(profile)
        self._buckets: Dict[Bucket, StagedGraph] = {}
        self._lock = threading.RLock()
        self._prefetching: Dict[Bucket, threading.Thread] = {}
        self._primed: set = set()

    def bucket(self, num_sparse: int, has_mask: bool) -> StagedGraph:
        key = (int(num_sparse), bool(has_mask))
        with self._lock:
            compiled = self._buckets.get(key)
            if compiled is None:
                with gc_paused():  # thousands of small objects: see rlx.runtime.gc_pause
                    graph = build_prompt_to_masks(self.config, *key)
                compiled = compile_staged(graph, self.profile, self.weights, slow=[IMAGE_INPUT])
                self._buckets[key] = compiled
            return compiled

    def prefetch(self, num_sparse: int, has_mask: bool) -> Optional[threading.Thread]:
        """Compile and bind a bucket on a background thread (`rlx.runtime.background`).

        For a caller about to be busy in native code (``set_image``): the bucket's
        first use then finds it ready, or waits for the compile under way (same
        lock) instead of starting another. Returns the thread, or None when the
        bucket is compiled already, a prefetch of it is under way, or
        ``RLX_SAM_PREFETCH=0`` (`models.sam.prefetch`). A compile that fails in the
        background is repeated, and reported, by the first use.
        """
        key = (int(num_sparse), bool(has_mask))
        with self._lock:
            if key in self._buckets or not prefetch_enabled():
                return None
            running = self._prefetching.get(key)
            if running is not None and running.is_alive():
                return None
            self._prefetching[key] = thread = background.start(
                lambda: self.warm(*key), name=f"rlx-sam-prefetch-{bucket_name(*key)}")
            return thread

    def warm(self, num_sparse: int, has_mask: bool) -> StagedGraph:
        """Compile and bind a bucket, then prime its memory once (`StagedGraph.prime`
        with ``run=False``: arenas and kept-result arrays mapped in) so that its first
        real call runs like a later one.

        Memory only, no kernel run: this job runs while the encoder keeps both cores
        busy, and measured there (5 interleaved pairs) a run on zeros cost the encoder
        ~0.7 s more than preparing the memory, for the same first click (~0.03 s; it was
        ~0.13 s with neither: the click's ~1300 fresh pages were most of its cost).
        """
        key = (int(num_sparse), bool(has_mask))
        compiled = self.bucket(*key)
        with self._lock:
            if key not in self._primed:
                compiled.prime(run=False)
                self._primed.add(key)
        return compiled

    def prepare_image(self, embedding: np.ndarray, current=lambda: True) -> int:
        """Run the image-only stage of every compiled bucket for `embedding` now.

        For a background job started when a new image embedding exists: the first
        click then finds the per-image work done (the staged graphs recognise the
        same read-only array). `current()` is asked before each bucket, under the
        lock the clicks take: once it says False (another image was set), the rest
        is skipped. The one-click bucket goes first. Returns how many slow stages ran.
        """
        ran = 0
        with self._lock:
            keys = sorted(self._buckets, key=lambda k: k != CLICK_BUCKET)
        for key in keys:
            with self._lock:
                if not current():
                    break
                ran += bool(self._buckets[key].prepare(**{IMAGE_INPUT: embedding}))
        return ran

    @property
    def buckets(self) -> Dict[Bucket, StagedGraph]:
        """Buckets compiled so far: (sparse tokens, has mask) -> compiled graph."""
        return dict(self._buckets)

    def run(self, embedding: np.ndarray, sparse: np.ndarray,
            mask_input: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
        """(low-res logits ``[1, M, 4g, 4g]``, IoU ``[1, M]``) for every mask token."""
        c = self.config
        d, g, s = c.prompt_embed_dim, c.image_embedding_size, c.mask_input_size
        embedding = _as_f32(embedding, "image embedding", (1, d, g, g))
        sparse = _as_f32(sparse, "sparse prompt embeddings", None)
        if sparse.ndim != 3 or sparse.shape[0] != 1 or sparse.shape[2] != d:
            raise InputError(f"sparse prompt embeddings must be [1, N, {d}], got {sparse.shape}")
        inputs = [embedding]
        if sparse.shape[1]:
            inputs.append(sparse)
        if mask_input is not None:
            inputs.append(_as_f32(mask_input, "mask input", (1, 1, s, s)))
        compiled = self.bucket(sparse.shape[1], mask_input is not None)
        with self._lock:
            masks, iou = compiled(*inputs)
        return masks, iou


def _as_f32(x, what: str, shape) -> np.ndarray:
    a = np.ascontiguousarray(x, dtype=np.float32)
    if shape is not None and a.shape != tuple(shape):
        raise InputError(f"{what} must have shape {list(shape)}, got {list(a.shape)}")
    return a


_DECODERS: "WeakKeyDictionary[object, PromptDecoder]" = WeakKeyDictionary()
_DECODERS_LOCK = threading.Lock()


def decoder_for(sam) -> PromptDecoder:
    """The `PromptDecoder` of a `Sam` (created on first use, lives as long as the model)."""
    with _DECODERS_LOCK:
        dec = _DECODERS.get(sam)
        if dec is None:
            dec = PromptDecoder(sam.config, sam.weights, sam.profile)
            _DECODERS[sam] = dec
        return dec


#: every prompt-side subgraph, name -> builder(config, debug): the four decoder pieces and
#: the bucket of the most common prompt (one click + its padding point, no mask)
PROMPT_SUBGRAPHS = {
    **DECODER_SUBGRAPHS,
    PROMPT_TO_MASKS: lambda config, debug=None: build_prompt_to_masks(config, 2, False,
                                                                      name=PROMPT_TO_MASKS),
}
