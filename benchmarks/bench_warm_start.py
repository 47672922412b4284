"""Warm start of ``rlx segment``: a fresh process, a warm kernel cache, one click.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        python -m benchmarks.bench_warm_start --repeat 5
    # before/after: a second source tree (e.g. `git archive <old> | tar -x -C /tmp/old`);
    # --pause 0.3: a user's pause between set_image and the first click
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        python -m benchmarks.bench_warm_start --tree /tmp/old --tree . --repeat 5

Every measurement is a fresh Python process that does what ``rlx segment
IMAGE --point X,Y`` does (ViT-B, synthetic weights, default profile) and
reports, like the command's ``result.json``:

* ``import``: importing the SAM package;
* ``load_model``: ``build_sam`` (synthetic weights drawn, encoder and neck
  compiled -- with a warm cache: plans and kernels read from disk);
* ``set_image``: preprocessing and the encoder (or, with ``--no-encoder``, a
  random embedding handed over with ``set_image_embedding``);
* ``first_predict``: the first ``predict`` (the prompt graph's first run,
  and post-processing to the image size). In the background (see
  `models.sam.prefetch`), ``set_image`` compiles the graph -- a plan-cache
  hit -- and primes its memory (arenas and kept-result arrays written, so
  mapped in) and warms the post-processing of the image's size while
  the encoder runs, then runs the graph's per-image stage once the embedding
  exists. With ``--pause 0`` (default) the click comes right after
  ``set_image`` returns and waits for that last job (the worst case); a
  ``--pause`` of a few tenths of a second (a user looking at the image) lets
  it finish first. With ``--no-encoder`` there is nothing to overlap and the
  click waits for the compile;
* ``second_predict``: the same click again: the steady-state floor.

Each phase is also reported as CPU time of the main thread
(``time.thread_time``): on a machine shared with other work it moves far less
than wall clock, and the warm-start costs (imports, passes, code generation,
loading cached objects, weight drawing) all run on the main thread. It leaves
out the kernel threads' share of the encoder and decoder. And as the number
of page faults of the whole process (``ru_minflt``): fresh memory mapped in,
which does not depend on load at all -- on a VM a fault can cost ~100 us, and
the first click used to take ~1300 of them (now a handful: primed plans,
reused buffers).

Each run also says whether the one-click graph was compiled before the click
(``click_graph_ready``; trees without the background compile report 0).

Each tree gets its own kernel cache directory, warmed by one unmeasured run;
then the trees' runs are interleaved (A B A B ...) so that load from other
work on the machine hits them alike. Medians and the spread (min-max) are
printed; ``--json`` writes every sample. Nothing passes or fails on speed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from rlx.utils.fs import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "models" / "sam" / "assets" / "sample.png"
PHASES = ("import", "load_model", "set_image", "first_predict", "second_predict")

#: the measured child: prints one JSON line of phase -> seconds
CHILD = r"""
import json, resource, sys, time, warnings
clock = lambda: (time.perf_counter(), time.thread_time(),
                 resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
t0 = clock()
import numpy as np
from models.sam.image import load_image
from models.sam.model import SamPredictor, build_sam
from models.sam.predict import predict_detailed, set_image_embedding
from models.sam.weights import SyntheticWeightsWarning
t1 = clock()
image_path, model, encoder, x, y, pause = (sys.argv[1], sys.argv[2], sys.argv[3] == "1",
                                           *map(float, sys.argv[4:7]))
warnings.simplefilter("ignore", SyntheticWeightsWarning)
sam = build_sam(model, checkpoint=None, profile="default")
t2 = clock()
predictor = SamPredictor(sam)
image = load_image(image_path)
if encoder:
    predictor.set_image(image)
else:
    c = sam.config
    emb = np.random.default_rng(0).standard_normal(
        (1, c.prompt_embed_dim, c.image_embedding_size, c.image_embedding_size), np.float32)
    set_image_embedding(predictor, emb, image.shape[:2])
t3 = clock()
from models.sam.prompt_graph import decoder_for
ready = (2, False) in decoder_for(sam).buckets  # the one-click bucket
time.sleep(pause)  # a user looking at the image before the first click
t3p = clock()
pts, labels = np.array([[x, y]]), np.array([1])
predict_detailed(predictor, pts, labels, None, None, multimask_output=True)
t4 = clock()
predict_detailed(predictor, pts, labels, None, None, multimask_output=True)
t5 = clock()
spans = {"import": (t0, t1), "load_model": (t1, t2), "set_image": (t2, t3),
         "first_predict": (t3p, t4), "second_predict": (t4, t5)}
out = {}
for j, suffix in enumerate(("", "_cpu", "_faults")):
    out.update({n + suffix: b[j] - a[j] for n, (a, b) in spans.items()})
out["click_graph_ready"] = int(ready)
print(json.dumps(out))
"""


def run_child(tree: Path, cache: Path, args) -> dict:
    env = dict(os.environ, RLX_CACHE_DIR=str(cache), PYTHONPATH=str(tree))
    res = subprocess.run(
        [sys.executable, "-c", CHILD, str(args.image), args.model,
         "0" if args.no_encoder else "1", str(args.point[0]), str(args.point[1]),
         str(args.pause)],
        cwd=str(tree), env=env, capture_output=True, text=True, timeout=args.timeout)
    if res.returncode != 0:
        raise SystemExit(f"run in {tree} failed (exit {res.returncode}):\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def summarize(samples: list[dict]) -> dict:
    keys = [p + suffix for suffix in ("", "_cpu", "_faults") for p in PHASES]
    out = {k: {"median": statistics.median(s[k] for s in samples),
               "min": min(s[k] for s in samples), "max": max(s[k] for s in samples)}
           for k in keys if all(k in s for s in samples)}
    out["click_graph_ready"] = sum(s.get("click_graph_ready", 0) for s in samples)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tree", action="append", type=Path, default=[],
                   help="source tree to measure (repeatable; default: this one)")
    p.add_argument("--repeat", "-n", type=int, default=5, help="measured runs per tree")
    p.add_argument("--model", default="vit_b")
    p.add_argument("--image", type=Path, default=SAMPLE)
    p.add_argument("--point", type=lambda s: tuple(float(v) for v in s.split(",")),
                   default=(470.0, 240.0), help="X,Y of the click")
    p.add_argument("--no-encoder", action="store_true",
                   help="skip the encoder (a random embedding): quicker, same load/predict")
    p.add_argument("--pause", type=float, default=0.0,
                   help="seconds between set_image and the first click (a user looking at the "
                        "image; 0: the click right away, the worst case)")
    p.add_argument("--cache-root", type=Path, default=None,
                   help="where the per-tree kernel caches go (default: a temp dir, removed)")
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--json", type=Path, default=None, help="write every sample here")
    p.add_argument("--note", default="", help="free text stored in the JSON (CPU, load, trees)")
    args = p.parse_args(argv)
    trees = [t.resolve() for t in (args.tree or [ROOT])]
    tmp = None
    if args.cache_root is None:
        tmp = tempfile.TemporaryDirectory(prefix="rlx-warm-start-")
        args.cache_root = Path(tmp.name)
    caches = [args.cache_root / f"tree{i}" for i in range(len(trees))]
    samples: dict[int, list] = {i: [] for i in range(len(trees))}
    load_before = os.getloadavg()
    try:
        for i, tree in enumerate(trees):
            print(f"warming the cache of {tree} ...", file=sys.stderr, flush=True)
            run_child(tree, caches[i], args)
        for r in range(args.repeat):
            for i, tree in enumerate(trees):
                s = run_child(tree, caches[i], args)
                samples[i].append(s)
                print(f"run {r + 1}/{args.repeat} {tree.name or tree}: " +
                      ", ".join(f"{k} {v:.3f}" for k, v in s.items()), file=sys.stderr,
                      flush=True)
    finally:
        if tmp is not None:
            tmp.cleanup()
    print(f"warm start of `rlx segment` ({args.model}, synthetic weights, "
          f"{'no encoder' if args.no_encoder else 'encoder'}), fresh process each, "
          f"{args.repeat} runs per tree; median s (min-max)")
    results = {str(tree): {"summary": summarize(samples[i]), "samples": samples[i]}
               for i, tree in enumerate(trees)}
    for suffix, what in (("", "wall clock"), ("_cpu", "CPU time of the main thread (less "
                                               "sensitive to other load; excludes workers)"),
                         ("_faults", "page faults (fresh memory mapped in; insensitive to "
                                     "load)")):
        print(f"-- {what}")
        print(f"{'tree':<28}" + "".join(f"{ph:>22}" for ph in PHASES))
        for tree in trees:
            summary = results[str(tree)]["summary"]
            fmt = (lambda v: f"{v:.0f}") if suffix == "_faults" else (lambda v: f"{v:.3f}")
            cells = "".join(f"{fmt(summary[ph + suffix]['median']):>8} "
                            f"({fmt(summary[ph + suffix]['min'])}-"
                            f"{fmt(summary[ph + suffix]['max'])})".rjust(22) for ph in PHASES)
            print(f"{str(tree)[-28:]:<28}{cells}")
    for tree in trees:
        print(f"{str(tree)}: one-click graph compiled before the click in "
              f"{results[str(tree)]['summary']['click_graph_ready']} of {args.repeat} runs")
    if args.json:
        atomic_write_text(args.json, json.dumps({"model": args.model, "repeat": args.repeat,
                                                 "encoder": not args.no_encoder,
                                                 "pause": args.pause,
                                                 "load_average_before": load_before,
                                                 "load_average_after": os.getloadavg(),
                                                 "note": args.note, "trees": results},
                                                indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
