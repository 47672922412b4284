"""SAM 2 image model on the CPU: rlx against the official torch model (and ONNX Runtime), one run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        python -m benchmarks.bench_sam2 --models sam2.1_hiera_t,sam2.1_hiera_b+ --threads 2 \\
            --repeat 3 --systems torch,onnxruntime,rlx --json out.json

Tasks, per model (official 1024 configs, the same seeded synthetic weights
for every system -- `models.sam2.weights.synthetic_weights`, loaded into the
official model by name):

* ``encoder``: image ``[1,3,1024,1024]`` -> the three feature levels
  ``SAM2ImagePredictor.set_image`` keeps (Hiera trunk, FPN neck, conv_s0 /
  conv_s1, no_mem_embed). torch: ``forward_image`` +
  ``_prepare_backbone_features`` + no_mem_embed; onnxruntime: that same
  function exported with ``torch.onnx.export``; rlx: the compiled
  ``image_features`` graph;
* ``prompt``: ``SAM2ImagePredictor.predict`` for one foreground click with
  ``multimask_output=True`` on a 1500x2000 (HxW) image after ``set_image``
  (prompt encoding, mask decoder, post-processing to 1500x2000 and threshold
  included). torch: the official predictor; rlx: `models.sam2.SAM2ImagePredictor`.

Every measurement is a fresh subprocess (`benchmarks.harness`), systems
interleaved round by round; the table gives medians and the spread (min -
max over all timed calls). ``prepare`` (once per system and model, untimed)
warms rlx's kernel cache and exports the ONNX model.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

from benchmarks import harness
from benchmarks.harness import Job, Prepared, RunnerSpec

SYSTEMS = ("torch", "onnxruntime", "rlx")
TASKS = ("encoder", "prompt")
IMAGE_HW = (1500, 2000)
CLICK = (900.0, 700.0)  # (x, y) in the 1500x2000 image


def _cache_dir() -> str:
    d = os.path.join(os.environ.get("RLX_BENCH_CACHE", tempfile.gettempdir()), "rlx-bench-sam2")
    os.makedirs(d, exist_ok=True)
    return d


def _weights(model: str, seed: int):
    from models.sam2.weights import synthetic_weights

    return synthetic_weights(model, seed)


def _image_input(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 3, 1024, 1024)).astype(np.float32)


def _photo(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = IMAGE_HW
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([xx / w, yy / h, (xx + yy) / (h + w)], -1) * 255
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


# ---- the official torch model ----------------------------------------------------------


def _official(model: str, seed: int, threads: int):
    import torch
    from sam2.build_sam import build_sam2

    from models.sam2.config import get_config

    torch.set_num_threads(int(threads))
    folder = "sam2.1" if get_config(model).version == "2.1" else "sam2"
    m = build_sam2(f"configs/{folder}/{model}.yaml", ckpt_path=None, device="cpu", mode="eval")
    w = _weights(model, seed)
    state = m.state_dict()
    missing = [k for k in state if k not in w and not k.startswith(("memory_", "maskmem",
                                                                     "obj_ptr", "mask_downsample"))]
    m.load_state_dict({k: torch.from_numpy(np.array(w[k])) for k in state if k in w},
                      strict=False)
    return m, missing


class _Features:
    """forward_image + feature preparation + no_mem_embed, as set_image runs them."""

    def __init__(self, model):
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, image):
                out = self.m.forward_image(image)
                _, feats, _, sizes = self.m._prepare_backbone_features(out)
                feats[-1] = feats[-1] + self.m.no_mem_embed
                return tuple(f.permute(1, 2, 0).reshape(1, -1, s[0], s[1])
                             for f, s in zip(feats, sizes))

        self.module = Wrapped(model).eval()


def torch_encoder(threads: int, model: str, seed: int = 0, **_):
    import torch

    t0 = time.perf_counter()
    m, missing = _official(model, seed, threads)
    f = _Features(m).module
    x = torch.from_numpy(_image_input(seed))

    def run():
        with torch.no_grad():
            return f(x)

    return Prepared(run, time.perf_counter() - t0, {"missing_weights": missing[:5]})


def torch_prompt(threads: int, model: str, seed: int = 0, **_):
    from tests.support.official_sam2_predictor import official_predictor

    t0 = time.perf_counter()
    m, _ = _official(model, seed, threads)
    pred = official_predictor(m)
    pred.set_image(_photo(seed))
    pts, labels = np.array([CLICK]), np.array([1])

    def run():
        return pred.predict(point_coords=pts, point_labels=labels, multimask_output=True)

    return Prepared(run, time.perf_counter() - t0)


# ---- ONNX Runtime on the exported encoder ----------------------------------------------


def _onnx_path(model: str, seed: int) -> str:
    return os.path.join(_cache_dir(), f"{model}-seed{seed}-features.onnx")


def onnxruntime_encoder(threads: int, model: str, seed: int = 0, **_):
    import onnxruntime as ort

    t0 = time.perf_counter()
    path = _onnx_path(model, seed)
    if not os.path.isfile(path):
        raise ImportError(f"no exported model at {path} (prepare failed)")
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: _image_input(seed)}

    def run():
        return sess.run(None, feed)

    return Prepared(run, time.perf_counter() - t0)


# ---- rlx ---------------------------------------------------------------------------------


def _rlx_model(model: str, seed: int, threads: int):
    from rlx.runtime.profile import resolve_profile

    from models.sam2 import build_sam2

    profile = resolve_profile("default")
    import dataclasses

    profile = dataclasses.replace(profile, threads=int(threads))
    return build_sam2(model, checkpoint=_weights(model, seed), profile=profile)


def rlx_encoder(threads: int, model: str, seed: int = 0, **_):
    t0 = time.perf_counter()
    m = _rlx_model(model, seed, threads)
    x = _image_input(seed)
    return Prepared(lambda: m.image_features(x), time.perf_counter() - t0)


def rlx_prompt(threads: int, model: str, seed: int = 0, **_):
    from models.sam2 import SAM2ImagePredictor

    t0 = time.perf_counter()
    pred = SAM2ImagePredictor(_rlx_model(model, seed, threads))
    pred.set_image(_photo(seed))
    pts, labels = np.array([CLICK]), np.array([1])

    def run():
        return pred.predict(point_coords=pts, point_labels=labels, multimask_output=True)

    return Prepared(run, time.perf_counter() - t0)


def prepare(threads: int, system: str, model: str, seed: int = 0) -> dict:
    """Once per (system, model), untimed: rlx compiles into the kernel cache and checks its
    features against torch; onnxruntime exports the encoder."""
    info = {}
    if system == "rlx":
        import torch

        t0 = time.perf_counter()
        m = _rlx_model(model, seed, threads)
        info["compile_s"] = time.perf_counter() - t0
        x = _image_input(seed)
        ours = m.image_features(x)
        ref, _ = _official(model, seed, threads)
        with torch.no_grad():
            theirs = _Features(ref).module(torch.from_numpy(x))
        for name, t in zip(("high_res_0", "high_res_1", "image_embed"), theirs):
            info[f"max_abs_delta_{name}"] = float(np.abs(ours[name] - t.numpy()).max())
    elif system == "onnxruntime":
        import torch

        path = _onnx_path(model, seed)
        if not os.path.isfile(path):
            ref, _ = _official(model, seed, threads)
            t0 = time.perf_counter()
            tmp = path + ".tmp"
            torch.onnx.export(_Features(ref).module, (torch.from_numpy(_image_input(seed)),),
                              tmp, input_names=["image"],
                              output_names=["high_res_0", "high_res_1", "image_embed"],
                              opset_version=17, dynamo=False)
            os.replace(tmp, path)
            info["export_s"] = time.perf_counter() - t0
    print(json.dumps({"prepare": system, **info}))
    return info


RUNNERS = {
    ("torch", "encoder"): "torch_encoder", ("torch", "prompt"): "torch_prompt",
    ("onnxruntime", "encoder"): "onnxruntime_encoder",
    ("rlx", "encoder"): "rlx_encoder", ("rlx", "prompt"): "rlx_prompt",
}


def _fmt(s: float) -> str:
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def _encoder_gflop(key: str) -> float | None:
    """GFLOP of the image side (`benchmarks.flops_sam2`) for an ``<model>/encoder`` key."""
    model, _, task = key.partition("/")
    if task != "encoder":
        return None
    from benchmarks.flops_sam2 import image_side_flops

    return image_side_flops(model)["total"] / 1e9


def format_table(report: dict) -> str:
    lines = []
    for key, systems in report["results"].items():
        gflop = _encoder_gflop(key)
        lines.append(f"\n{key}" + (f" ({gflop:.1f} GFLOP, benchmarks/flops_sam2.py)" if gflop else ""))
        base = systems.get("torch", {})
        for name, s in systems.items():
            if s.get("status") != "ok":
                lines.append(f"  {name:<12s} {s.get('status')}: {str(s.get('error'))[:120]}")
                continue
            ratio = f"  {gflop / s['median_s']:.0f} GFLOP/s" if gflop else ""
            if base.get("status") == "ok" and name != "torch":
                ratio += f"  {s['median_s'] / base['median_s']:.2f}x torch"
            lines.append(f"  {name:<12s} median {_fmt(s['median_s']):>10s}  "
                         f"(min {_fmt(s['min_s'])}, max {_fmt(s['max_s'])}, {s['n_runs']} runs)  "
                         f"peak {s['peak_rss_mb_max']:.0f} MiB  other procs <= "
                         f"{s['foreign_cores_max']:.2f} cores{ratio}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="sam2.1_hiera_t,sam2.1_hiera_b+")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="fresh processes per system and task")
    ap.add_argument("--runs", type=int, default=3, help="timed calls per process (prompt: x10)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args(argv)
    jobs = []
    for model in args.models.split(","):
        for task in args.tasks.split(","):
            for system in args.systems.split(","):
                fn = RUNNERS.get((system, task))
                if fn is None:
                    continue
                runs = args.runs * (10 if task == "prompt" else 1)
                jobs.append(Job(system=system, task=f"{model}/{task}",
                                spec=RunnerSpec.make(f"benchmarks.bench_sam2:{fn}", system=system,
                                                     model=model, seed=args.seed),
                                warmup=2 if task == "prompt" else 1, runs=runs,
                                timeout_s=3600))
    t0 = time.time()
    report = harness.run_jobs(jobs, repeat=args.repeat, threads=args.threads)
    report["meta"] = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                      "machine": platform.processor() or platform.machine(),
                      "cpus": os.cpu_count(), "threads": args.threads,
                      "wall_s": time.time() - t0, "argv": sys.argv[1:],
                      "gflop": {k: _encoder_gflop(k) for k in report["results"]
                                if _encoder_gflop(k)}}
    print(format_table(report))
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump({k: v for k, v in report.items() if k != "raw"}, f, indent=2, default=str)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
