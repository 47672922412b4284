"""Peer: the official PyTorch SAM (``segment-anything`` 1.0), eager and compiled.

Runners (see ``benchmarks.harness``):

* ``encoder``          image encoder + neck on ``[1,3,1024,1024]`` (eager, ``no_grad``)
* ``prompt_masks``     ``SamPredictor.predict(one point, multimask_output=True)``
                       after ``set_image`` on a 1500x2000 image: prompt encoder,
                       mask decoder and post-processing to 1500x2000 (bool masks)
* ``compiled_encoder`` ``torch.compile`` (inductor) of the encoder; the compile
                       (first call) is reported separately as ``info.compile_s``
* ``profile_encoder``  torch.profiler of one eager encoder pass (``mode="call"``)

Weights come from ``checkpoint`` or are re-drawn from ``seed``
(see ``_sam_common.redraw_weights``).
"""

from __future__ import annotations

import os
import time

from benchmarks.harness import Prepared
from benchmarks.peers import _sam_common as common


def _torch(threads: int):
    import torch

    torch.set_num_threads(int(threads))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set / parallel work already started
        pass
    return torch


def _versions(torch) -> dict:
    import segment_anything

    return {
        "torch": torch.__version__,
        "segment_anything": getattr(segment_anything, "__version__", "1.0"),
        "torch_threads": torch.get_num_threads(),
    }


def encoder(threads: int = 1, model: str = "vit_b", seed: int = 0, checkpoint: str | None = None):
    t0 = time.perf_counter()
    torch = _torch(threads)
    sam = common.build_sam(model, seed, checkpoint)
    enc = sam.image_encoder
    del sam  # only the encoder (+neck) is measured
    x = torch.from_numpy(common.encoder_input(seed))
    setup = time.perf_counter() - t0

    def run():
        with torch.no_grad():
            return enc(x)

    return Prepared(run, setup, {**_versions(torch), "input": list(x.shape)})


def prompt_masks(
    threads: int = 1, model: str = "vit_b", seed: int = 0, checkpoint: str | None = None,
    points: int = 1,
):
    t0 = time.perf_counter()
    torch = _torch(threads)
    sam = common.build_sam(model, seed, checkpoint)
    from segment_anything import SamPredictor

    predictor = SamPredictor(sam)
    image = common.prompt_image(seed)
    t1 = time.perf_counter()
    predictor.set_image(image)  # RGB uint8 HxWx3; runs the encoder once
    set_image_s = time.perf_counter() - t1
    coords, labels = common.prompt_point(points)
    setup = time.perf_counter() - t0

    def run():
        return predictor.predict(point_coords=coords, point_labels=labels, multimask_output=True)

    masks, scores, low_res = run()
    h, w = common.PROMPT_IMAGE_HW
    if masks.shape != (3, h, w) or masks.dtype != bool:
        raise RuntimeError(f"unexpected masks {masks.shape} {masks.dtype}")
    return Prepared(
        run,
        setup,
        {
            **_versions(torch),
            "image_hw": [h, w],
            "points": coords.tolist(),
            "set_image_s": set_image_s,
            "masks": [list(masks.shape), str(masks.dtype)],
            "mask_fraction": [float(m.mean()) for m in masks],
            "scores": [float(s) for s in scores],
        },
    )


def compiled_encoder(
    threads: int = 1,
    model: str = "vit_b",
    seed: int = 0,
    checkpoint: str | None = None,
    cold_cache: bool = True,
    mode: str | None = None,
):
    """``torch.compile(encoder, backend="inductor")``.

    With ``cold_cache`` (default) inductor gets a fresh, private cache dir and
    the FX-graph cache is off, so ``compile_s`` is an honest cold compile every
    time; otherwise the user's inductor cache is used (warm compiles).
    """
    t0 = time.perf_counter()
    tmp = None
    if cold_cache:
        import atexit
        import shutil
        import tempfile

        tmp = tempfile.mkdtemp(prefix="rlx-bench-inductor-")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tmp
        os.environ["TORCHINDUCTOR_FX_GRAPH_CACHE"] = "0"
        os.environ["TORCHINDUCTOR_AUTOGRAD_CACHE"] = "0"
        atexit.register(shutil.rmtree, tmp, True)
    torch = _torch(threads)
    sam = common.build_sam(model, seed, checkpoint)
    enc = sam.image_encoder
    del sam
    x = torch.from_numpy(common.encoder_input(seed))
    with torch.no_grad():
        ref = enc(x)
    build_s = time.perf_counter() - t0

    import torch._inductor.config as inductor_config  # noqa: F401

    if cold_cache:
        inductor_config.fx_graph_cache = False
    compiled = torch.compile(enc, backend="inductor", mode=mode, fullgraph=False)

    t1 = time.perf_counter()
    with torch.no_grad():
        out = compiled(x)  # compiles
    compile_s = time.perf_counter() - t1
    max_abs = float((out - ref).abs().max())

    def run():
        with torch.no_grad():
            return compiled(x)

    return Prepared(
        run,
        build_s + compile_s,
        {
            **_versions(torch),
            "compile_s": compile_s,
            "compile_note": "first call = compile + one run",
            "cold_cache": bool(cold_cache),
            "mode": mode,
            "max_abs_diff_vs_eager": max_abs,
        },
    )


def profile_encoder(
    threads: int = 1,
    model: str = "vit_b",
    seed: int = 0,
    checkpoint: str | None = None,
    top: int = 15,
    warmup: int = 1,
) -> dict:
    """Profile one eager encoder pass with torch.profiler; top ops by self CPU time.

    Returns two tables: ops grouped by name, and grouped by (name, input shapes)
    so that e.g. global vs windowed attention matmuls show separately.
    """
    torch = _torch(threads)
    from torch.profiler import ProfilerActivity, profile

    sam = common.build_sam(model, seed, checkpoint)
    enc = sam.image_encoder
    del sam
    x = torch.from_numpy(common.encoder_input(seed))
    with torch.no_grad():
        for _ in range(warmup):
            enc(x)
        t0 = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            enc(x)
        wall = time.perf_counter() - t0

    def rows(events, with_shapes):
        evs = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in events) or 1.0
        out = []
        for e in evs[:top]:
            r = {
                "op": e.key,
                "self_cpu_ms": e.self_cpu_time_total / 1e3,
                "self_pct": 100.0 * e.self_cpu_time_total / total,
                "cpu_total_ms": e.cpu_time_total / 1e3,
                "calls": e.count,
            }
            if with_shapes:
                r["input_shapes"] = str(e.input_shapes)
            out.append(r)
        return out, total / 1e3

    by_op, total_ms = rows(prof.key_averages(), False)
    by_shape, _ = rows(prof.key_averages(group_by_input_shape=True), True)
    return {
        **_versions(torch),
        "model": model,
        "wall_s_profiled_run": wall,
        "self_cpu_total_ms": total_ms,
        "top_by_op": by_op,
        "top_by_op_and_shape": by_shape,
    }
