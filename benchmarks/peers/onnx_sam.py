"""Peer: the official SAM exported to ONNX by this suite, run with ONNX Runtime.

``prepare`` (run once by the harness in its own subprocess) exports

* ``encoder.onnx``: image encoder + neck, ``image [1,3,1024,1024] ->
  image_embeddings [1,256,64,64]``;
* ``decoder.onnx``: the official ``SamOnnxModel`` (prompt encoder + mask
  decoder + mask post-processing to the original image size; all 4 mask
  tokens, of which the runner keeps 1..3 as ``multimask_output=True`` does),
  as in segment-anything's own ``scripts/export_onnx_model.py``;

with torch's *legacy TorchScript exporter* (``dynamo=False``, opset 17): in
torch 2.13 the default ``dynamo=True`` exporter needs ``onnxscript`` and is
not what SAM's export script was written for; the legacy one exports both
graphs as they are. Files are cached under
``$RLX_BENCH_CACHE`` (default ``~/.cache/rlx/bench``)``/onnx/<key>/``, keyed by
model type and seed (or checkpoint identity), torch version and opset, and
written atomically (export into a temp dir, then rename). At export time the
ORT outputs are compared with torch and max |delta| is printed and stored in
``meta.json`` next to the models.

Timed runners import no torch (so the peak RSS is ORT's own):

* ``encoder``:       ``session.run`` of encoder.onnx on the benchmark input;
* ``prompt_masks``:  host-side coordinate transform + decoder.onnx + threshold,
                     i.e. the same work as ``SamPredictor.predict`` (one
                     point, multimask, bool masks at 1500x2000), with the
                     embedding from encoder.onnx computed at setup.

Session: CPUExecutionProvider, ``ORT_ENABLE_ALL`` graph optimisations,
``intra_op_num_threads = --threads``, ``inter_op_num_threads = 1``,
sequential execution.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np

from benchmarks.harness import Prepared
from benchmarks.peers import _sam_common as common

OPSET = 17


def _cache_paths(model: str, seed: int, checkpoint: str | None) -> str:
    try:
        import torch

        tv = torch.__version__.split("+")[0]
    except ImportError:
        tv = "notorch"
    key = f"{common.weights_key(model, seed, checkpoint)}-opset{OPSET}-torch{tv}"
    return os.path.join(common.cache_dir(), "onnx", key)


def _find_cached(model: str, seed: int, checkpoint: str | None) -> str:
    """The cache dir for these weights, located without importing torch."""
    root = os.path.join(common.cache_dir(), "onnx")
    prefix = f"{common.weights_key(model, seed, checkpoint)}-opset{OPSET}-torch"
    hits = sorted(d for d in os.listdir(root) if d.startswith(prefix)) if os.path.isdir(root) else []
    hits = [d for d in hits if os.path.isfile(os.path.join(root, d, "meta.json"))]
    if not hits:
        raise FileNotFoundError(
            f"no exported ONNX model for {prefix}* under {root}; "
            "run the harness (it calls onnx_sam.prepare) first"
        )
    return os.path.join(root, hits[-1])


def _session(path: str, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])


def _decoder_inputs(embedding: np.ndarray, original_hw, points: int = 1) -> dict:
    """Same prompt encoding inputs as SamPredictor.predict for ``points`` clicks."""
    coords, labels = common.prompt_point(points)
    coords = common.transform_coords(coords, original_hw)
    # the official ONNX example appends a padding point when there is no box
    coords = np.concatenate([coords, np.zeros((1, 2))], axis=0)[None].astype(np.float32)
    labels = np.concatenate([labels, np.array([-1])])[None].astype(np.float32)
    return {
        "image_embeddings": embedding,
        "point_coords": coords,
        "point_labels": labels,
        "mask_input": np.zeros((1, 1, 256, 256), dtype=np.float32),
        "has_mask_input": np.zeros(1, dtype=np.float32),
        "orig_im_size": np.array(original_hw, dtype=np.float32),
    }


def prepare(
    threads: int = 1, model: str = "vit_b", seed: int = 0, checkpoint: str | None = None
) -> dict:
    """Export encoder.onnx and decoder.onnx (if not cached) and verify them."""
    final = _cache_paths(model, seed, checkpoint)
    meta_path = os.path.join(final, "meta.json")
    if os.path.isfile(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        print(f"ONNX cache hit: {final}")
        print(
            f"  verified at export: encoder max|d|={meta['encoder_max_abs_diff']:.3e}, "
            f"decoder logits max|d|={meta['decoder_max_abs_diff']:.3e}"
        )
        return {**meta, "cache": "hit", "dir": final}

    import warnings

    import torch

    torch.set_num_threads(int(threads))
    sam = common.build_sam(model, seed, checkpoint)
    from segment_anything import SamPredictor
    from segment_anything.utils.onnx import SamOnnxModel

    parent = os.path.dirname(final)
    os.makedirs(parent, exist_ok=True)
    tmp = f"{final}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    meta: dict = {
        "model": model,
        "seed": seed,
        "checkpoint": checkpoint,
        "torch": torch.__version__,
        "opset": OPSET,
        "exporter": "torch.onnx.export(dynamo=False) (legacy TorchScript exporter)",
    }
    try:
        # ---- encoder -----------------------------------------------------
        enc = sam.image_encoder
        x = torch.from_numpy(common.encoder_input(seed))
        t0 = time.perf_counter()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                enc,
                (x,),
                os.path.join(tmp, "encoder.onnx"),
                dynamo=False,
                opset_version=OPSET,
                input_names=["image"],
                output_names=["image_embeddings"],
                do_constant_folding=True,
            )
        meta["encoder_export_s"] = time.perf_counter() - t0
        with torch.no_grad():
            ref = enc(x).numpy()
        sess = _session(os.path.join(tmp, "encoder.onnx"), threads)
        got = sess.run(None, {"image": x.numpy()})[0]
        meta["encoder_max_abs_diff"] = float(np.abs(got - ref).max())
        meta["encoder_ref_max_abs"] = float(np.abs(ref).max())
        print(
            f"encoder exported in {meta['encoder_export_s']:.1f} s; ORT vs torch: "
            f"max|d|={meta['encoder_max_abs_diff']:.3e} (|ref| max {meta['encoder_ref_max_abs']:.2f})"
        )
        del sess

        # ---- decoder (prompt encoder + mask decoder + postprocess) ---------
        onnx_model = SamOnnxModel(sam, return_single_mask=False)
        h, w = common.PROMPT_IMAGE_HW
        emb = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(seed))
        dummy = {
            "image_embeddings": emb,
            "point_coords": torch.randint(0, 1024, (1, 5, 2), dtype=torch.float),
            "point_labels": torch.randint(0, 4, (1, 5), dtype=torch.float),
            "mask_input": torch.zeros(1, 1, 256, 256),
            "has_mask_input": torch.tensor([1], dtype=torch.float),
            "orig_im_size": torch.tensor([h, w], dtype=torch.float),
        }
        t0 = time.perf_counter()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                onnx_model,
                tuple(dummy.values()),
                os.path.join(tmp, "decoder.onnx"),
                dynamo=False,
                opset_version=OPSET,
                input_names=list(dummy.keys()),
                output_names=["masks", "iou_predictions", "low_res_masks"],
                dynamic_axes={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}},
                do_constant_folding=True,
            )
        meta["decoder_export_s"] = time.perf_counter() - t0
        # verify against the official predictor on the benchmark image + point
        image = common.prompt_image(seed)
        predictor = SamPredictor(sam)
        predictor.set_image(image)
        coords, labels = common.prompt_point()
        ref_logits, ref_iou, _ = predictor.predict(
            coords, labels, multimask_output=True, return_logits=True
        )
        dec = _session(os.path.join(tmp, "decoder.onnx"), threads)
        inputs = _decoder_inputs(predictor.features.numpy(), (h, w))
        got_logits, got_iou, _ = dec.run(None, inputs)
        # SamOnnxModel(return_single_mask=False) returns all 4 mask tokens;
        # multimask_output=True means tokens 1..3, as in MaskDecoder.forward
        got_logits, got_iou = got_logits[:, 1:], got_iou[:, 1:]
        meta["decoder_max_abs_diff"] = float(np.abs(got_logits[0] - ref_logits).max())
        meta["decoder_iou_max_abs_diff"] = float(np.abs(got_iou[0] - ref_iou).max())
        meta["decoder_mask_agreement"] = float(((got_logits[0] > 0) == (ref_logits > 0)).mean())
        # the host-side preprocessing used by the ORT prompt runner vs the official one
        pre = common.preprocess_image(image)
        ref_pre = sam.preprocess(
            torch.as_tensor(predictor.transform.apply_image(image)).permute(2, 0, 1)[None]
            .float()
        ).numpy()
        meta["preprocess_max_abs_diff"] = float(np.abs(pre - ref_pre).max())
        print(
            f"decoder exported in {meta['decoder_export_s']:.1f} s; ORT vs SamPredictor: "
            f"logits max|d|={meta['decoder_max_abs_diff']:.3e}, "
            f"mask agreement {100 * meta['decoder_mask_agreement']:.4f}%, "
            f"host preprocess max|d|={meta['preprocess_max_abs_diff']:.3e}"
        )
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            json.dump(meta, f, indent=1)
        try:
            os.rename(tmp, final)  # atomic publish of the whole directory
        except OSError:
            if not os.path.isfile(meta_path):  # nobody else won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**meta, "cache": "miss", "dir": final}


def _ort_info(sess, threads) -> dict:
    import onnxruntime as ort

    return {
        "onnxruntime": ort.__version__,
        "providers": sess.get_providers(),
        "intra_op_threads": int(threads),
        "graph_optimization": "ORT_ENABLE_ALL",
        "execution_mode": "sequential",
    }


def encoder(threads: int = 1, model: str = "vit_b", seed: int = 0, checkpoint: str | None = None):
    t0 = time.perf_counter()
    d = _find_cached(model, seed, checkpoint)
    sess = _session(os.path.join(d, "encoder.onnx"), threads)
    feed = {"image": common.encoder_input(seed)}
    setup = time.perf_counter() - t0

    def run():
        return sess.run(None, feed)

    return Prepared(run, setup, {**_ort_info(sess, threads), "model_dir": d})


def prompt_masks(
    threads: int = 1, model: str = "vit_b", seed: int = 0, checkpoint: str | None = None,
    points: int = 1,
):
    t0 = time.perf_counter()
    d = _find_cached(model, seed, checkpoint)
    enc = _session(os.path.join(d, "encoder.onnx"), threads)
    image = common.prompt_image(seed)
    hw = image.shape[:2]
    t1 = time.perf_counter()
    embedding = enc.run(None, {"image": common.preprocess_image(image)})[0]
    set_image_s = time.perf_counter() - t1
    del enc  # like the predictor, keep only the embedding
    dec = _session(os.path.join(d, "decoder.onnx"), threads)
    setup = time.perf_counter() - t0

    def run():
        # the host part of SamPredictor.predict: transform the prompt, run, threshold
        inputs = _decoder_inputs(embedding, hw, points)
        masks, iou, low_res = dec.run(None, inputs)
        # all 4 mask tokens come back; multimask output = tokens 1..3
        return masks[0, 1:] > 0.0, iou[0, 1:], low_res[0, 1:]

    masks, scores, _ = run()
    if masks.shape != (3,) + tuple(hw):
        raise RuntimeError(f"unexpected masks {masks.shape}")
    return Prepared(
        run,
        setup,
        {
            **_ort_info(dec, threads),
            "model_dir": d,
            "set_image_s": set_image_s,
            "mask_fraction": [float(m.mean()) for m in masks],
            "scores": [float(s) for s in scores],
        },
    )
