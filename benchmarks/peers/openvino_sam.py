"""Peer: the official SAM run by OpenVINO, from the ONNX files the ONNX peer exports.

Two systems share this module:

* ``openvino`` -- OpenVINO's *default* CPU settings. On CPUs with bf16 matrix
  units (AMX, AVX512-BF16) OpenVINO then computes in bf16 on its own: that is
  what a user gets without asking, so it is the figure rlx's bf16 profile is
  compared with (issue 14).
* ``openvino-f32`` -- the same with ``INFERENCE_PRECISION_HINT = f32``: the
  like-for-like peer of rlx's f32 profiles.

The models are ``encoder.onnx`` / ``decoder.onnx`` of `onnx_sam` (same cache,
same re-drawn weights; ``prepare`` exports them if missing), read by
``openvino.Core().read_model``. ``prepare`` also checks OpenVINO's encoder
output against torch and stores the difference, so a figure from a model that
computes something else cannot pass unnoticed. Timed runners import no torch.

Settings: device ``CPU``, ``PERFORMANCE_HINT = LATENCY``,
``INFERENCE_NUM_THREADS = --threads``, one infer request run synchronously.
"""

from __future__ import annotations

import os
import time

import numpy as np

from benchmarks.harness import Prepared
from benchmarks.peers import _sam_common as common
from benchmarks.peers import onnx_sam


def _compiled(path: str, threads: int, precision: str | None):
    import openvino as ov

    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": int(threads)}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    core = ov.Core()
    return core.compile_model(core.read_model(path), "CPU", config)


def _info(compiled, threads: int) -> dict:
    import openvino as ov

    def prop(name):
        try:
            return str(compiled.get_property(name))
        except Exception as e:  # a property this version does not report
            return f"unavailable ({type(e).__name__})"

    return {
        "openvino": ov.__version__,
        "threads": int(threads),
        "inference_precision": prop("INFERENCE_PRECISION_HINT"),
        "cpu_capabilities": ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"),
    }


def _check_encoder(d: str, threads: int, precision: str | None, seed: int) -> dict:
    """OpenVINO's embedding against the torch reference stored at export time."""
    ref_path = os.path.join(d, "encoder_torch_output.npy")
    x = common.encoder_input(seed)
    got = _compiled(os.path.join(d, "encoder.onnx"), threads, precision)([x])[0]
    if not os.path.isfile(ref_path):
        return {"encoder_check": "no torch reference stored (exported by an older onnx_sam)"}
    ref = np.load(ref_path)
    rel = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
    print(f"OpenVINO ({precision or 'default precision'}) vs torch encoder: rel-L2 {rel:.3e}")
    return {"encoder_rel_l2_vs_torch": rel}


def prepare(threads: int = 1, model: str = "vit_b", seed: int = 0,
            checkpoint: str | None = None, precision: str | None = None) -> dict:
    meta = onnx_sam.prepare(threads=threads, model=model, seed=seed, checkpoint=checkpoint)
    d = meta["dir"]
    ref_path = os.path.join(d, "encoder_torch_output.npy")
    if not os.path.isfile(ref_path):
        import torch

        torch.set_num_threads(int(threads))
        sam = common.build_sam(model, seed, checkpoint)
        with torch.no_grad():
            ref = sam.image_encoder(torch.from_numpy(common.encoder_input(seed))).numpy()
        tmp = f"{ref_path}.tmp-{os.getpid()}.npy"
        np.save(tmp, ref)
        os.replace(tmp, ref_path)
    return {"dir": d, **_check_encoder(d, threads, precision, seed)}


def encoder(threads: int = 1, model: str = "vit_b", seed: int = 0,
            checkpoint: str | None = None, precision: str | None = None):
    t0 = time.perf_counter()
    d = onnx_sam._find_cached(model, seed, checkpoint)
    compiled = _compiled(os.path.join(d, "encoder.onnx"), threads, precision)
    request = compiled.create_infer_request()
    feed = [common.encoder_input(seed)]
    setup = time.perf_counter() - t0

    def run():
        return request.infer(feed)

    return Prepared(run, setup, {**_info(compiled, threads), "model_dir": d})


def prompt_masks(threads: int = 1, model: str = "vit_b", seed: int = 0,
                 checkpoint: str | None = None, points: int = 1, precision: str | None = None):
    t0 = time.perf_counter()
    d = onnx_sam._find_cached(model, seed, checkpoint)
    image = common.prompt_image(seed)
    hw = image.shape[:2]
    enc = _compiled(os.path.join(d, "encoder.onnx"), threads, precision)
    embedding = np.asarray(enc([common.preprocess_image(image)])[0])
    del enc  # like the predictor, keep only the embedding
    dec = _compiled(os.path.join(d, "decoder.onnx"), threads, precision)
    request = dec.create_infer_request()
    setup = time.perf_counter() - t0

    def run():
        out = request.infer(onnx_sam._decoder_inputs(embedding, hw, points))
        masks, iou, low_res = (np.asarray(v) for v in out.values())
        # all 4 mask tokens come back; multimask output = tokens 1..3
        return masks[0, 1:] > 0.0, iou[0, 1:], low_res[0, 1:]

    masks, scores, _ = run()
    if masks.shape != (3,) + tuple(hw):
        raise RuntimeError(f"unexpected masks {masks.shape}")
    return Prepared(run, setup, {**_info(dec, threads), "model_dir": d,
                                 "scores": [float(s) for s in scores]})
