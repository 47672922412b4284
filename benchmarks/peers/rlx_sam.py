"""Peer: rlx itself, on the same weights and inputs as the torch and ONNX peers.

``prepare`` (run once by the harness, in its own subprocess) writes the
re-drawn official weights (``_sam_common.build_sam``: the exact tensors the
torch and ORT peers use) to ``<bench cache>/rlx/<key>.safetensors`` with
Meta's key names, then builds the rlx model once under the requested profile
-- a cold compile into the kernel cache, whose time it reports -- and checks
the rlx embedding against torch's on the benchmark input, storing max |delta|
and relative L2 in ``meta.json``. So every system computes the same function,
and the timed children start warm like a user's second run.

Timed runners import no torch:

* ``encoder``:       encoder + neck on the ``[1,3,1024,1024]`` benchmark input;
* ``prompt_masks``:  ``SamPredictor.predict`` for one point with
                     ``multimask_output=True`` after ``set_image`` on the
                     1500x2000 benchmark image (post-processing included).

``profile`` is an rlx compile profile (preset name or file; ``rlx-<profile>``
as a system name); ``threads`` overrides the profile's thread count.
"""

from __future__ import annotations

import json
import os
import time
import warnings

import numpy as np

from benchmarks.harness import Prepared
from benchmarks.peers import _sam_common as common


def _weights_path(model: str, seed: int, checkpoint: str | None) -> str:
    if checkpoint:
        return checkpoint
    return os.path.join(common.cache_dir(), "rlx", f"{common.weights_key(model, seed, None)}"
                                                   ".safetensors")


def _profile(profile: str, threads: int):
    from rlx.runtime import resolve_profile

    return resolve_profile(profile).replace(threads=int(threads))


def _build(model: str, seed: int, checkpoint: str | None, profile: str, threads: int):
    from models.sam import sam_model_registry

    path = _weights_path(model, seed, checkpoint)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing; the harness runs rlx_sam.prepare first")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sam_model_registry[model](checkpoint=path, profile=_profile(profile, threads))


def prepare(threads: int = 1, model: str = "vit_b", seed: int = 0,
            checkpoint: str | None = None, profile: str = "default") -> dict:
    """Export the shared weights (once), compile cold, check parity against torch."""
    from rlx.utils.fs import atomic_write_text
    from rlx.weights import WeightStore

    path = _weights_path(model, seed, checkpoint)
    meta_path = f"{path}.{profile.replace(os.sep, '_')}.meta.json"
    torch_emb = None
    if not checkpoint and not os.path.isfile(path):
        import torch

        torch.set_num_threads(int(threads))
        sam = common.build_sam(model, seed, None)
        state = {k: v.detach().numpy() for k, v in sam.state_dict().items()}
        WeightStore(state).save_safetensors(path)
        with torch.no_grad():
            torch_emb = sam.image_encoder(torch.from_numpy(common.encoder_input(seed))).numpy()
        del sam
    if os.path.isfile(meta_path):
        with open(meta_path) as f:
            return {**json.load(f), "cache": "hit"}
    t0 = time.perf_counter()
    sam = _build(model, seed, checkpoint, profile, threads)
    cold = time.perf_counter() - t0
    meta = {"weights": path, "profile": profile, "cold_build_s": cold,
            "subgraphs": {n: {"kernels": c.report.kernels, "from_cache": c.report.from_cache,
                              "compile_s": c.report.seconds}
                          for n, c in sam.compiled.items()}}
    if torch_emb is None:
        import torch

        torch.set_num_threads(int(threads))
        ref = common.build_sam(model, seed, checkpoint)
        with torch.no_grad():
            torch_emb = ref.image_encoder(torch.from_numpy(common.encoder_input(seed))).numpy()
    emb = sam.image_embedding(common.encoder_input(seed))
    diff = emb.astype(np.float64) - torch_emb
    meta["encoder_max_abs_diff"] = float(np.abs(diff).max())
    meta["encoder_rel_l2"] = float(np.linalg.norm(diff) / np.linalg.norm(torch_emb))
    atomic_write_text(meta_path, json.dumps(meta, indent=1))
    print(f"rlx {profile}: cold build {cold:.1f} s; encoder vs torch max|d|="
          f"{meta['encoder_max_abs_diff']:.2e} relL2={meta['encoder_rel_l2']:.2e}")
    return meta


def _info(sam, t_build: float) -> dict:
    import rlx

    return {"rlx": rlx.__version__, "profile": sam.profile.name, "backend": sam.profile.backend,
            "threads": sam.profile.effective_threads, "build_s": t_build,
            "warm_start": all(c.report.from_cache for c in sam.compiled.values())}


def encoder(threads: int = 1, model: str = "vit_b", seed: int = 0,
            checkpoint: str | None = None, profile: str = "default"):
    t0 = time.perf_counter()
    sam = _build(model, seed, checkpoint, profile, threads)
    build = time.perf_counter() - t0
    x = common.encoder_input(seed)
    return Prepared(lambda: sam.image_embedding(x), time.perf_counter() - t0,
                    {**_info(sam, build), "input": list(x.shape)})


def prompt_masks(threads: int = 1, model: str = "vit_b", seed: int = 0,
                 checkpoint: str | None = None, profile: str = "default", points: int = 1):
    from models.sam import SamPredictor

    t0 = time.perf_counter()
    sam = _build(model, seed, checkpoint, profile, threads)
    build = time.perf_counter() - t0
    predictor = SamPredictor(sam)
    image = common.prompt_image(seed)
    t1 = time.perf_counter()
    predictor.set_image(image)
    set_image_s = time.perf_counter() - t1
    coords, labels = common.prompt_point(points)

    def run():
        return predictor.predict(point_coords=coords, point_labels=labels, multimask_output=True)

    masks, scores, _ = run()
    h, w = common.PROMPT_IMAGE_HW
    if masks.shape != (3, h, w) or masks.dtype != bool:
        raise RuntimeError(f"unexpected masks {masks.shape} {masks.dtype}")
    return Prepared(run, time.perf_counter() - t0,
                    {**_info(sam, build), "set_image_s": set_image_s,
                     "scores": [float(s) for s in scores]})
