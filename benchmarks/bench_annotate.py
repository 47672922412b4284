"""``rlx annotate`` throughput: the local engine against a plain loop in one process.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.bench_annotate \\
        --images 6 --everything-images 3 --repeats 2

For each mode (``clicks``: four single clicks per image; ``everything``: the
automatic mask generator with Meta's defaults) two systems process the same
synthetic images with the same model (ViT-B, synthetic weights, the
``default`` profile, all cores):

* ``loop``: one process, the model built once, then per image
  ``load_image`` + ``set_image`` + ``predict`` per click (or
  ``generator.generate``) -- what a user's own script does;
* ``engine``: `rlx.datasets.run_job` with the local engine, i.e. what
  ``rlx annotate`` runs: a spawned worker process holding the model, the
  per-image function (`SamAnnotator`, which also encodes RLE and computes
  stability scores), every outcome written atomically into a work folder,
  then the COCO file.

Throughput is the steady state: images per minute between the first and the
last finished image (model build, compile and process start-up are one-off
costs and reported apart). Repeats are interleaved (loop, engine, loop,
engine, ...); the table gives medians and the spread. Synthetic weights:
the encoder and decoder cost the same as with a real checkpoint, but in
``everything`` mode fewer masks survive the filters, so the per-mask tail
(upscaling and RLE of the survivors) is cheaper than on real weights.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CLICKS = [(0.3, 0.3), (0.7, 0.7), (0.5, 0.45), (0.2, 0.8)]  # fractions of (width, height)


def write_images(d: Path, n: int, h: int, w: int):
    from tests.support import synthetic_images

    paths = []
    for i in range(n):
        p = d / f"img_{i:03d}.png"
        synthetic_images.write_image(str(p), synthetic_images.make_image(h, w, seed=100 + i))
        paths.append(p)
    return paths


def click_prompts(h: int, w: int):
    return [{"points": [[fx * w, fy * h]], "labels": [1]} for fx, fy in CLICKS]


def build(model: str, threads: int, mode: str):
    from models.sam.model import SamPredictor, build_sam
    from models.sam.weights import SyntheticWeightsWarning
    from rlx.runtime.profile import resolve_profile

    profile = resolve_profile("default", None).replace(threads=threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntheticWeightsWarning)
        sam = build_sam(model, profile=profile)
    predictor = SamPredictor(sam)
    gen = None
    if mode == "everything":
        from models.sam.automatic import SamAutomaticMaskGenerator

        gen = SamAutomaticMaskGenerator(sam, output_mode="coco_rle", progress=False)
    return predictor, gen


def run_loop(paths, mode, model, threads, h, w):
    import numpy as np

    from models.sam.image import load_image

    t0 = time.perf_counter()
    predictor, gen = build(model, threads, mode)
    setup = time.perf_counter() - t0
    done = []
    masks = 0
    for p in paths:
        image = load_image(str(p))
        if mode == "everything":
            masks += len(gen.generate(image))
        else:
            predictor.set_image(image)
            for pr in click_prompts(h, w):
                m, _, _ = predictor.predict(np.array(pr["points"]), np.array(pr["labels"]),
                                            multimask_output=True)
                masks += 1
        done.append(time.perf_counter())
    return {"setup_s": setup, "done": done, "masks": masks}


def run_engine(paths, mode, model, threads, h, w, tmp: Path):
    from models.sam.annotate_worker import AnnotatorSpec, SamAnnotator
    from rlx.datasets import Item, WorkDir, run_job
    from rlx.datasets.coco import build_coco
    from rlx.runtime.profile import resolve_profile
    from rlx.utils.fs import atomic_write_text

    payload = (lambda: None) if mode == "everything" else (
        lambda: {"prompts": click_prompts(h, w)})
    items = [Item(p.name, str(p), payload()) for p in paths]
    spec = AnnotatorSpec(model=model, checkpoint=None, profile=resolve_profile("default", None),
                         mode="everything" if mode == "everything" else "prompts")
    work = tmp / f"work_{time.time_ns()}"
    done = []
    t0 = time.perf_counter()
    summary = run_job(items, functools.partial(SamAnnotator, spec), WorkDir(work), {"b": 1},
                      engine="local", workers=1, threads=threads, progress=False,
                      on_outcome=lambda o: done.append(time.perf_counter()))
    coco = build_coco(items, summary.outcomes)
    atomic_write_text(tmp / "out.json", json.dumps(coco))
    total = time.perf_counter() - t0
    assert not summary.errors, summary.errors
    return {"setup_s": done[0] - t0, "done": done, "total_s": total,
            "masks": len(coco["annotations"])}


def per_minute(done):
    if len(done) < 2:
        return float("nan")
    return (len(done) - 1) / (done[-1] - done[0]) * 60.0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="vit_b")
    ap.add_argument("--images", type=int, default=6, help="images per run, clicks mode")
    ap.add_argument("--everything-images", type=int, default=3,
                    help="images per run, everything mode")
    ap.add_argument("--modes", default="clicks,everything",
                    help="comma-separated: clicks, everything")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--size", default="480x640", help="HxW of the synthetic images")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", help="write the raw results here")
    args = ap.parse_args(argv)
    h, w = (int(v) for v in args.size.split("x"))

    wanted = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(wanted) - {"clicks", "everything"}
    if unknown:
        ap.error(f"unknown mode(s): {', '.join(sorted(unknown))}")
    counts = {"clicks": args.images, "everything": args.everything_images}
    modes = [(m, counts[m]) for m in wanted if counts[m]]
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_annotate_") as td:
        tmp = Path(td)
        for mode, n in modes:
            (tmp / mode).mkdir()
            paths = write_images(tmp / mode, n, h, w)
            # warm the kernel cache so neither system pays the first compile
            run_loop(paths[:1], mode, args.model, args.threads, h, w)
            runs = {"loop": [], "engine": []}
            for r in range(args.repeats):
                for system in ("loop", "engine"):
                    if system == "loop":
                        res = run_loop(paths, mode, args.model, args.threads, h, w)
                    else:
                        res = run_engine(paths, mode, args.model, args.threads, h, w, tmp)
                    res["per_minute"] = per_minute(res["done"])
                    runs[system].append(res)
                    print(f"[{mode}] repeat {r + 1} {system:6s}: "
                          f"{res['per_minute']:.2f} images/min steady, setup "
                          f"{res['setup_s']:.1f} s, {res['masks']} masks", flush=True)
            results[mode] = runs

    print(f"\nSAM {args.model}, {h}x{w} images, {args.threads} threads, synthetic weights; "
          f"medians of {args.repeats} interleaved runs (min-max)")
    print(f"{'mode':11s} {'loop img/min':>18s} {'engine img/min':>18s} {'engine/loop':>12s}")
    summary = {}
    for mode, runs in results.items():
        lo = [r["per_minute"] for r in runs["loop"]]
        en = [r["per_minute"] for r in runs["engine"]]
        ratio = statistics.median(en) / statistics.median(lo)
        summary[mode] = {"loop": lo, "engine": en, "ratio": ratio}
        print(f"{mode:11s} {statistics.median(lo):8.2f} ({min(lo):.2f}-{max(lo):.2f}) "
              f"{statistics.median(en):8.2f} ({min(en):.2f}-{max(en):.2f}) {ratio:11.2f}x")
    if args.json:
        from rlx.utils.fs import atomic_write_text

        atomic_write_text(args.json, json.dumps(
            {"args": vars(args), "summary": summary,
             "runs": {m: {s: [{k: v for k, v in r.items() if k != "done"} for r in rs]
                          for s, rs in runs.items()}
                      for m, runs in results.items()}}, indent=2))


if __name__ == "__main__":
    main()
