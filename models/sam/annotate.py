"""``rlx annotate``: a folder of images in, one COCO instance-segmentation file out.

    rlx annotate photos/ --out annotations.json --prompts prompts.json --checkpoint sam_vit_b.pth
    rlx annotate photos/ --out annotations.json --everything --checkpoint sam_vit_b.pth
    rlx annotate list.txt --out annotations.json --everything --engine ray --ray-address HOST:6379

The generic machinery -- sources, the work folder and resume, the engines,
the progress bar, COCO assembly -- is `rlx.datasets`; this module adds what
is SAM's: checking the options, the per-image function
(`annotate_worker.SamAnnotator`), the prompt file (`annotate_prompts`) and
the generator options (`annotate_everything`).

Order of work: every argument, the source, the prompt file and the profile
are checked before any model is loaded (one error line, exit 2). Then the
job runs; each image's outcome lands in ``<out stem>.work/`` as soon as it
is done, and the final file is written atomically at the end. The work
folder is removed after a run without errors; with errors it is kept, so a
rerun after fixing the images redoes only those (``--keep-work`` keeps it
always), and the exit status is 1 (the file is written all the same). Interrupted (Ctrl-C, a kill), the same command resumes.

``--model small`` (hidden) selects the tiny test configuration, as in
``rlx segment``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from typing import Any, Dict

from rlx.errors import InputError

from . import annotate_everything
from .cli_args import add_model_arguments
from .segment_cli import HIDDEN_MODELS, MODELS, SYNTHETIC_NOTE

__all__ = ["COMMAND", "add_arguments", "run", "job_settings"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", metavar="SRC",
                   help="folder of images (recursive: jpg, jpeg, png, webp, tif, bmp) or a text "
                        "file with one image path per line")
    p.add_argument("--out", required=True, metavar="FILE", help="output COCO JSON file")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--everything", action="store_true",
                      help="segment everything (automatic mask generator) in every image")
    mode.add_argument("--prompts", metavar="FILE",
                      help="JSON file of per-image clicks/boxes: "
                           "{\"images\": {\"a.jpg\": [{\"points\": [[x, y]]}, {\"box\": [x0, y0, "
                           "x1, y1]}]}}")
    p.add_argument("--engine", default="local", choices=("local", "ray"),
                   help="local: worker processes on this machine (default); ray: Ray Data, "
                        "here or on a cluster (pip install -e '.[ray]')")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="join this Ray cluster (e.g. HOST:6379 or 'auto'); default: start a "
                        "local Ray instance")
    p.add_argument("--workers", type=str, default=None, metavar="N",
                   help="worker processes (local) or actors (ray), one model each "
                        "(default: one per 4 cores, at least 1)")
    p.add_argument("--threads", type=str, default=None, metavar="N",
                   help="threads per worker (default: the cores shared out over the workers)")
    add_model_arguments(p)
    p.add_argument("--category", default="object", metavar="NAME",
                   help="the one COCO category every annotation gets (default 'object')")
    p.add_argument("--keep-work", action="store_true",
                   help="keep the work folder (<out stem>.work/) even after a clean run")
    p.add_argument("--seed", type=str, default="0", help=argparse.SUPPRESS)
    annotate_everything.add_arguments(p)


def _positive(text, name):
    if text is None:
        return None
    try:
        v = int(text)
    except ValueError:
        raise InputError(f"malformed {name} {text!r}: expected a whole number") from None
    if v < 1:
        raise InputError(f"{name} must be at least 1, got {v}")
    return v


def _checkpoint_identity(path):
    if path is None:
        return None
    st = os.stat(path)
    return {"path": os.path.abspath(path), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def job_settings(args, profile, generator_params) -> Dict[str, Any]:
    """What the per-image results depend on: a work folder is reused only if these match."""
    prof = profile.to_dict()
    for k in ("threads", "cache_dir", "cache", "verify"):
        prof.pop(k, None)  # how, not what, is computed
    return {
        "tool": "rlx annotate",
        "model": args.model,
        "checkpoint": _checkpoint_identity(args.checkpoint),
        "seed": None if args.checkpoint else int(args.seed),
        "profile": prof,
        "mode": "everything" if args.everything else "prompts",
        "generator": generator_params,
    }


def run(args: argparse.Namespace) -> int:
    from rlx.datasets import list_images, plan_workers, run_job
    from rlx.datasets.coco import build_coco
    from rlx.datasets.engines import available_cores
    from rlx.datasets.workdir import WorkDir, work_dir_for
    from rlx.runtime.profile import resolve_profile
    from rlx.utils.fs import atomic_write_text

    from .annotate_prompts import _normalise, load_prompts, match_images
    from .annotate_worker import AnnotatorSpec, SamAnnotator

    # 1. Everything that can be checked without a model.
    if args.model not in MODELS + HIDDEN_MODELS:
        raise InputError(f"unknown --model {args.model!r}; choose from {', '.join(MODELS)}")
    try:
        seed = int(args.seed)
    except ValueError:
        raise InputError(f"malformed --seed {args.seed!r}: expected an integer") from None
    workers, threads = _positive(args.workers, "--workers"), _positive(args.threads, "--threads")
    if args.engine == "local":
        workers, threads = plan_workers(available_cores(), workers, threads)
    # (ray: what is not given is planned from the cluster's CPUs, by the engine)
    if args.ray_address and args.engine != "ray":
        raise InputError("--ray-address needs --engine ray")
    if args.engine == "ray":
        from rlx.datasets.engines.ray import import_ray

        import_ray()  # the missing extra is reported now, not after the source is listed
    if args.checkpoint is not None and not os.path.isfile(args.checkpoint):
        raise InputError(f"checkpoint not found: {args.checkpoint}")
    out = os.path.abspath(args.out)
    if os.path.isdir(out):
        raise InputError(f"--out {args.out} is a folder; give a file name such as "
                         f"annotations.json")
    generator_params = annotate_everything.chosen_parameters(args)
    if generator_params and not args.everything:
        raise InputError("--" + next(iter(generator_params)).replace("_", "-") +
                         " only applies to --everything")
    if args.everything:
        annotate_everything.generator_class()
    profile = resolve_profile(args.profile, args.checkpoint)

    items = list_images(args.src)
    skipped = 0
    if args.prompts is not None:
        prompts = load_prompts(args.prompts)
        match_images(prompts, [it.key for it in items], args.prompts)
        from rlx.datasets import Item

        chosen = [it for it in items if _normalise(it.key) in prompts]
        skipped = len(items) - len(chosen)
        items = [Item(it.key, it.path, {"prompts": prompts[_normalise(it.key)]})
                 for it in chosen]

    # 2. The job.
    synthetic = args.checkpoint is None
    if synthetic:
        print(f"WARNING: {SYNTHETIC_NOTE}", file=sys.stderr)
    spec = AnnotatorSpec(
        model=args.model, checkpoint=os.path.abspath(args.checkpoint) if args.checkpoint
        else None, profile=profile,
        mode="everything" if args.everything else "prompts", seed=seed,
        generator_params=tuple(sorted(generator_params.items())))
    settings = job_settings(args, profile, generator_params)
    work = WorkDir(work_dir_for(out))
    t0 = time.perf_counter()
    try:
        summary = run_job(items, functools.partial(SamAnnotator, spec), work, settings,
                          engine=args.engine, workers=workers, threads=threads,
                          label="annotate", ray_address=args.ray_address)
    except KeyboardInterrupt:
        print(f"interrupted: finished images are kept in {work.path}; rerun the same command "
              f"to resume", file=sys.stderr)
        raise

    # 3. The COCO file, atomically.
    info = {"description": "rlx annotate", "mode": settings["mode"], "model": args.model,
            "checkpoint": spec.checkpoint, "synthetic_weights": synthetic,
            "profile": profile.name, "engine": args.engine,
            "date_created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if synthetic:
        info["warning"] = SYNTHETIC_NOTE
    coco = build_coco(items, summary.outcomes, category=args.category, info=info)
    atomic_write_text(out, json.dumps(coco) + "\n")
    if not summary.errors and not args.keep_work:
        work.remove()

    rate = summary.processed / summary.seconds * 60 if summary.seconds > 0 else 0.0
    print(f"annotated {len(coco['images'])} of {len(items)} images: "
          f"{len(coco['annotations'])} annotations, {len(summary.errors)} errors "
          f"({summary.processed} processed now at {rate:.1f} images/min, {summary.reused} "
          f"reused from {work.path.name}/; {_plan_text(workers, threads)}, "
          f"engine {args.engine}, {time.perf_counter() - t0:.1f} s)")
    if skipped:
        print(f"{skipped} image(s) in {args.src} have no prompts and were left out")
    for e in summary.errors[:10]:
        print(f"error: {e['key']}: {e['error']}", file=sys.stderr)
    if len(summary.errors) > 10:
        print(f"... {len(summary.errors) - 10} more errors, all listed under 'errors' in "
              f"{args.out}", file=sys.stderr)
    print(f"wrote {args.out}")
    if synthetic:
        print(f"WARNING: {SYNTHETIC_NOTE}", file=sys.stderr)
    # The file is complete either way; a script still has to learn that images are missing.
    return 1 if summary.errors else 0


def _plan_text(workers, threads) -> str:
    w = f"{workers} worker(s)" if workers else "workers from the cluster"
    t = f"{threads} thread(s)" if threads else "threads from the cluster"
    return f"{w} x {t}"


def _command():
    from rlx.zoo import Command

    return Command(name="annotate",
                   help="annotate a folder of images with SAM (clicks/boxes or everything) "
                        "into a COCO file; resumable; local or Ray",
                   add_arguments=add_arguments, run=run)


COMMAND = _command()
