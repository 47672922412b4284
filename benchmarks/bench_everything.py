"""Segment everything: rlx's SamAutomaticMaskGenerator against Meta's, in one run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        python -m benchmarks.bench_everything --model vit_b --threads 2 --repeat 1 \\
            --crop-layers 0,1 --json out.json

Both generators get the same weights (the official model re-drawn from
``--seed``, saved as a Meta ``.pth`` that rlx loads with its own loader), the
same synthetic 1500 x 2000 (HxW) image and the default parameters (32 x 32
grid, batches of 64, no crops unless ``--crop-layers``). Reported per system:

* ``generate_s``: the whole ``generate(image)`` call (encoder included);
* ``after_encoder_s``: the same minus the time spent encoding (both
  generators' ``predictor.set_image`` calls, timed by wrapping the method);
* ``cpu_s``: CPU seconds (all threads) of the ``generate`` call: on a shared
  machine less disturbed by other processes than wall time;
  ``after_encoder_cpu_s`` the same without the ``set_image`` calls;
* ``peak_rss_mb``: the process's peak resident memory (model, compile,
  generate), each measurement being a fresh process;
* the number of masks.

``--loose`` times a second setting as well: every candidate kept by the IoU
filter (``pred_iou_thresh=0``, ``stability_score_thresh=0.6``, offset
0.05). Synthetic weights predict low IoUs, so with the defaults no mask
survives the IoU filter and neither the upscaling half of the decoder nor the
post-processing runs; the loose row shows their cost (for both generators)
with every prompt's masks upscaled and dozens of masks kept, closer to what a
real checkpoint does (and its worst case for rlx).

rlx compiles its graphs before the timed call (a warm-up ``generate`` of one
full batch on a small image: the bucket graphs and kernels), as a server or
dataset job would have. The official generator needs torchvision's ``batched_nms``,
which cannot be installed beside the pinned torch here: it gets
`tests.support.torch_box_ops` (plain torch NMS; a few ms of the total).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

IMAGE_HW = (1500, 2000)
#: ``--loose``: every candidate passes the IoU filter, stability loosened (see above)
LOOSE = dict(pred_iou_thresh=0.0, stability_score_thresh=0.6, stability_score_offset=0.05)


def _image():
    from tests.support import synthetic_images

    return synthetic_images.make_image(*IMAGE_HW, seed=0)


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _time_encoder(predictor) -> dict:
    """Wall and CPU seconds spent in ``predictor.set_image`` (wrapped; totals in the dict)."""
    enc = {"s": 0.0, "cpu_s": 0.0}
    orig = predictor.set_image

    def timed_set_image(*a, **k):
        t, c = time.perf_counter(), _cpu_s()
        orig(*a, **k)
        enc["s"] += time.perf_counter() - t
        enc["cpu_s"] += _cpu_s() - c

    predictor.set_image = timed_set_image
    return enc


def child(system: str, model: str, checkpoint: str, crop_layers: int, threads: int,
          loose: bool = False) -> dict:
    image = _image()
    params = dict(crop_n_layers=crop_layers, **(LOOSE if loose else {}))
    if system == "official":
        from tests.support import torchvision_shim

        torchvision_shim.install()
        import torch

        torch.set_num_threads(threads)
        from segment_anything import sam_model_registry
        from segment_anything.automatic_mask_generator import SamAutomaticMaskGenerator

        from tests.support import torch_box_ops

        torch_box_ops.install()
        sam = sam_model_registry[model](checkpoint=checkpoint).eval()
        gen = SamAutomaticMaskGenerator(sam, **params)
        enc = _time_encoder(gen.predictor)
        t0, c0 = time.perf_counter(), _cpu_s()
        with torch.no_grad():
            records = gen.generate(image)
        total, cpu = time.perf_counter() - t0, _cpu_s() - c0
        steps = {}
    else:
        import warnings

        from models.sam import SamAutomaticMaskGenerator, build_sam

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sam = build_sam(model, checkpoint=checkpoint, profile="default")
        gen = SamAutomaticMaskGenerator(sam, progress=False, **params)
        from models.sam.automatic import warmup_grid

        # warm-up: compile the full-batch graphs of both decoder halves and the kernels,
        # every replica, and nothing else (a real 32 x 32 grid is 64 such batches); with
        # the IoU filter off every prompt is decoded, so the upscaling half compiles too
        SamAutomaticMaskGenerator(sam, points_per_side=None, point_grids=[warmup_grid()],
                                  pred_iou_thresh=0.0, progress=False).generate(
                                      image[:300, :400])
        enc = _time_encoder(gen.predictor)
        t0, c0 = time.perf_counter(), _cpu_s()
        records = gen.generate(image)
        total, cpu = time.perf_counter() - t0, _cpu_s() - c0
        steps = dict(gen.timings)
        steps["decoder_gflop_per_prompt"] = _decoder_gflop_per_prompt(sam.config)
    return {"system": system, "crop_layers": crop_layers, "loose": loose, "generate_s": total,
            "encoder_s": enc["s"], "after_encoder_s": total - enc["s"], "masks": len(records),
            "cpu_s": cpu, "after_encoder_cpu_s": cpu - enc["cpu_s"],
            "steps": steps, "peak_rss_mb": _peak_rss_mb()}


def _decoder_gflop_per_prompt(config) -> dict:
    """GFLOP one more prompt adds to rlx's two decoder halves (matmuls and convolutions,
    2 per multiply-add; the per-image work is not counted): with the prompt count, the
    floor on the time after the encoder at a given FLOP rate (``benchmarks.fma_peak``)."""
    from models.sam.automatic_factored import build_factored_masks, build_factored_tokens
    from models.sam.prompt_graph import IMAGE_INPUT
    from rlx.ir.analysis import graph_flops
    from rlx.passes.split_stages import split_stages

    out = {}
    for name, build in (("tokens", build_factored_tokens), ("masks", build_factored_masks)):
        per = [graph_flops(split_stages(build(config, b), [IMAGE_INPUT]).fast_graph)
               for b in (1, 2)]
        out[name] = (per[1] - per[0]) / 1e9
    return out


def _rounded(steps: dict) -> dict:
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in steps.items()}


def _run_child(system, model, checkpoint, crop_layers, threads, log, loose=False) -> dict:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RLX_THREADS",
                "NUMBA_NUM_THREADS"):
        env[var] = str(threads)
    cmd = [sys.executable, "-m", "benchmarks.bench_everything", "--child", system,
           "--model", model, "--checkpoint", checkpoint, "--crop-layers", str(crop_layers),
           "--threads", str(threads)] + (["--loose"] if loose else [])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{system} child failed:\n{out.stderr[-3000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    log(f"  {system:8s} crops={crop_layers}{' loose' if loose else ''}: generate {res['generate_s']:.2f} s, after encoder "
        f"{res['after_encoder_s']:.2f} s, CPU {res['cpu_s']:.1f} s (after encoder "
        f"{res['after_encoder_cpu_s']:.1f} s), {res['masks']} masks, peak RSS "
        f"{res['peak_rss_mb']:.0f} MB {_rounded(res['steps'])}")
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="vit_b")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--crop-layers", default="0", help="comma-separated, e.g. 0,1")
    p.add_argument("--systems", default="rlx,official")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--loose", action="store_true",
                   help="also time every candidate passing the IoU filter (see the docstring)")
    p.add_argument("--json", default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.model, args.checkpoint, int(args.crop_layers),
                               args.threads, args.loose)))
        return 0

    def log(msg):
        print(msg, flush=True)

    from tests.support import official_sam

    tmp = tempfile.mkdtemp(prefix="bench_everything_")
    ckpt = os.path.join(tmp, f"sam_{args.model}_seed{args.seed}.pth")
    official_sam.save_official_checkpoint(official_sam.build_official(args.model, args.seed), ckpt)
    systems = args.systems.split(",")
    results = []
    settings = [(int(c), loose) for c in args.crop_layers.split(",")
                for loose in ([False, True] if args.loose else [False])]
    for crops, loose in settings:
        log(f"crop_n_layers={crops}{', loose thresholds' if loose else ''}, {args.model}, "
            f"{args.threads} threads, image {IMAGE_HW[0]}x{IMAGE_HW[1]}")
        runs = {s: [] for s in systems}
        for _ in range(args.repeat):
            for s in systems:  # interleaved
                runs[s].append(_run_child(s, args.model, ckpt, crops, args.threads, log, loose))
        summary = {s: {k: statistics.median(r[k] for r in rs)
                       for k in ("generate_s", "after_encoder_s", "encoder_s", "cpu_s",
                                 "after_encoder_cpu_s", "peak_rss_mb", "masks")} for s, rs in runs.items()}
        if "rlx" in summary and "official" in summary:
            ratio = summary["rlx"]["generate_s"] / summary["official"]["generate_s"]
            ratio_after = (summary["rlx"]["after_encoder_s"]
                           / summary["official"]["after_encoder_s"])
            ratio_cpu = summary["rlx"]["cpu_s"] / summary["official"]["cpu_s"]
            log(f"  rlx / official: generate {ratio:.3f}x, after encoder {ratio_after:.3f}x "
                f"(CPU seconds: generate {ratio_cpu:.3f}x)")
            summary["ratio_generate"] = ratio
            summary["ratio_after_encoder"] = ratio_after
            summary["ratio_generate_cpu"] = ratio_cpu
        results.append({"crop_layers": crops, "loose": loose, "runs": runs, "summary": summary})
    if args.json:
        from rlx.utils.fs import atomic_write_text

        atomic_write_text(args.json, json.dumps({"model": args.model, "threads": args.threads,
                                                 "image": IMAGE_HW, "results": results},
                                                indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
