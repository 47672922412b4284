"""``rlx annotate`` on the local engine, end to end (subprocesses, small SAM config).

One clean run gives the reference output: a COCO file pycocotools loads,
one annotation per prompt whose mask and predicted IoU match the official
``SamPredictor``, the grayscale and RGBA images annotated, the corrupt image
and the out-of-image prompt listed under ``errors``. A run killed after a
few images and rerun must give exactly that output, with the finished images
reused. Bad prompt files are one error line, exit 2, nothing written.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.models.sam.annotate_fixtures import (CORRUPT, IMAGES, PROMPTS, ROOT, decode,
                                                 official_masks, rlx, strip_volatile,
                                                 write_dataset)
from tests.models.sam.decoder_fixtures import small_official
from tests.support import official_sam

OK_IMAGES = sorted(n for n in IMAGES if n != "outside.png")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("annotate")
    src, prompts = write_dataset(d)
    ckpt = official_sam.save_official_checkpoint(small_official(), str(d / "sam_small.pth"))
    common = ["--prompts", str(prompts), "--model", "small", "--checkpoint", ckpt]
    out = d / "clean.json"
    r = rlx("annotate", str(src), "--out", str(out), *common)
    assert r.returncode == 1, r.stderr  # two images fail (corrupt, prompt outside): exit 1
    return {"dir": d, "src": src, "prompts": prompts, "ckpt": ckpt, "common": common,
            "out": out, "run": r, "coco": json.loads(out.read_text())}


def test_output_is_coco_pycocotools_loads(data):
    from pycocotools.coco import COCO

    coco = COCO(str(data["out"]))
    names = {img["file_name"]: img for img in coco.dataset["images"]}
    assert sorted(names) == OK_IMAGES
    for name in OK_IMAGES:
        h, w, _ = IMAGES[name]
        img = names[name]
        assert (img["height"], img["width"]) == (h, w)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))
        assert len(anns) == len(PROMPTS[name])
        for ann in anns:
            m = coco.annToMask(ann)
            assert m.shape == (h, w) and int(m.sum()) == ann["area"]
            for key in ("bbox", "area", "score", "predicted_iou", "stability_score"):
                assert key in ann
            assert 0.0 <= ann["stability_score"] <= 1.0
    assert [c["name"] for c in coco.dataset["categories"]] == ["object"]
    ids = [a["id"] for a in coco.dataset["annotations"]]
    assert ids == list(range(1, len(ids) + 1))


def test_errors_list_the_corrupt_image_and_the_prompt_outside_its_image(data):
    errors = {e["file_name"]: e["error"] for e in data["coco"]["errors"]}
    assert sorted(errors) == [CORRUPT, "outside.png"]
    assert "cannot read image" in errors[CORRUPT] and CORRUPT in errors[CORRUPT]
    assert errors["outside.png"].startswith("prompt 1: point 0 (x=70, y=10) is outside the "
                                            "64x64 image")
    r = data["run"]
    assert "2 errors" in r.stdout and f"error: {CORRUPT}:" in r.stderr
    assert "SYNTHETIC" not in r.stderr
    assert (data["dir"] / "clean.work").is_dir()  # kept: a rerun retries only the errors


def test_masks_and_scores_match_the_official_predictor(data):
    official = official_sam.official_predictor(small_official())
    coco = data["coco"]
    by_image = {img["id"]: img["file_name"] for img in coco["images"]}
    anns = {}
    for a in coco["annotations"]:
        anns.setdefault(by_image[a["image_id"]], []).append(a)
    worst = 1.0
    for name in OK_IMAGES:
        ref = official_masks(official, data["src"] / name, PROMPTS[name])
        ours = sorted(anns[name], key=lambda a: a["prompt_index"])
        assert len(ours) == len(ref)
        for ann, (mask, iou) in zip(ours, ref):
            m = decode(ann)
            assert 0.0 < mask.mean() < 1.0  # a real mask, not all or nothing
            agreement = float((m == mask).mean())
            worst = min(worst, agreement)
            assert agreement >= 0.999, (name, ann["prompt_index"], agreement)
            assert abs(ann["predicted_iou"] - iou) <= 1e-4
            ys, xs = np.nonzero(m)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                   ys.max() - ys.min() + 1]
    print(f"\n[parity] rlx annotate vs official predictor: worst mask agreement {worst:.6f}")


def test_killed_run_resumes_to_the_same_output_with_every_image_once(data):
    out = data["dir"] / "resumed.json"
    items = data["dir"] / "resumed.work" / "items"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "rlx.cli", "annotate", str(data["src"]), "--out", str(out),
           *data["common"]]
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        if items.is_dir() and len(list(items.glob("*.json"))) >= 2:  # complete files only
            break
        time.sleep(0.01)
    os.killpg(p.pid, signal.SIGKILL)  # driver and worker, mid-run
    p.wait()
    assert not out.exists(), "the run finished before it could be killed"
    done = [json.loads(f.read_text()) for f in items.glob("*.json")]
    assert 2 <= len(done) < len(PROMPTS)
    finished_ok = sum(o["ok"] for o in done)  # failed images are retried on the rerun

    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stderr  # the two bad images fail again
    assert f"{len(PROMPTS) - finished_ok} processed now" in r.stdout
    assert f"{finished_ok} reused" in r.stdout
    coco = json.loads(out.read_text())
    names = [img["file_name"] for img in coco["images"]] + [e["file_name"]
                                                            for e in coco["errors"]]
    assert sorted(names) == sorted(PROMPTS)  # every image exactly once
    assert strip_volatile(coco) == strip_volatile(data["coco"])


def test_images_without_prompts_are_left_out_and_named(data, tmp_path):
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"images": {"sub/c.png": PROMPTS["sub/c.png"]}}))
    out = tmp_path / "one.json"
    r = rlx("annotate", str(data["src"]), "--out", str(out), "--prompts", str(prompts),
            "--model", "small", "--checkpoint", data["ckpt"])
    assert r.returncode == 0, r.stderr
    assert "6 image(s) in" in r.stdout and "have no prompts" in r.stdout
    coco = json.loads(out.read_text())
    assert [i["file_name"] for i in coco["images"]] == ["sub/c.png"] and coco["errors"] == []
    assert not (tmp_path / "one.work").exists()  # a clean run cleans up its work folder


BAD_PROMPTS = {
    "not json": ("{images", "is not valid JSON"),
    "no images key": ({"a.png": []}, "expected an object {\"images\""),
    "prompts not a list": ({"images": {"a.png": {"box": [1, 2, 3, 4]}}},
                           "image 'a.png': expected a list of prompts"),
    "bad point": ({"images": {"a.png": [{"points": [[1, "x"]]}]}},
                  "image 'a.png', prompt 0: \"points\"[0] must be [x, y]"),
    "labels count": ({"images": {"b.jpg": [{"box": [0, 0, 5, 5]},
                                           {"points": [[1, 2]], "labels": [1, 0]}]}},
                     "image 'b.jpg', prompt 1: \"labels\" must be a list with one label per "
                     "point"),
    "bad label": ({"images": {"a.png": [{"points": [[1, 2]], "labels": [2]}]}},
                  "\"labels\"[0] must be 1 (foreground) or 0"),
    "box order": ({"images": {"a.png": [{"box": [9, 0, 5, 5]}]}},
                  "\"box\" needs x0 <= x1 and y0 <= y1"),
    "unknown field": ({"images": {"a.png": [{"pts": [[1, 2]]}]}}, "unknown field 'pts'"),
    "empty prompt": ({"images": {"a.png": [{}]}}, "a prompt needs \"points\" or a \"box\""),
    "unknown image": ({"images": {"a.png": [{"box": [0, 0, 5, 5]}], "zz.png": []}},
                      "1 image(s) not found in the source: 'zz.png'"),
}


@pytest.mark.parametrize("case", list(BAD_PROMPTS))
def test_bad_prompt_files_exit_2_with_one_line_naming_the_culprit(data, tmp_path, case):
    content, message = BAD_PROMPTS[case]
    prompts = tmp_path / "bad.json"
    prompts.write_text(content if isinstance(content, str) else json.dumps(content))
    out = tmp_path / "out.json"
    r = rlx("annotate", str(data["src"]), "--out", str(out), "--prompts", str(prompts),
            "--model", "small", timeout=120)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rlx annotate: error: "), r.stderr
    assert message in lines[0], lines[0]
    assert sorted(os.listdir(tmp_path)) == ["bad.json"]  # no output, no work folder


def test_a_broken_checkpoint_is_one_line_and_leaves_nothing(data, tmp_path):
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"PK\x03\x04 definitely not a checkpoint")
    out = tmp_path / "out.json"
    r = rlx("annotate", str(data["src"]), "--out", str(out), "--prompts", str(data["prompts"]),
            "--model", "small", "--checkpoint", str(bad), timeout=300)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("rlx annotate:")]
    assert len(lines) == 1 and "broken.pth" in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["broken.pth"]  # no output, no work folder


BAD_ARGS = {
    "missing source": (["nope/", "--prompts", "P"], "no such folder or image list: nope/"),
    "missing checkpoint": (["SRC", "--prompts", "P", "--checkpoint", "nope.pth"],
                           "checkpoint not found: nope.pth"),
    "workers": (["SRC", "--prompts", "P", "--workers", "0"], "--workers must be at least 1"),
    "ray address without ray": (["SRC", "--prompts", "P", "--ray-address", "auto"],
                                "--ray-address needs --engine ray"),
    "generator option with prompts": (["SRC", "--prompts", "P", "--points-per-side", "8"],
                                      "--points-per-side only applies to --everything"),
    "unknown profile": (["SRC", "--prompts", "P", "--profile", "bogus"],
                        "unknown profile 'bogus'"),
}


@pytest.mark.parametrize("case", list(BAD_ARGS))
def test_bad_arguments_exit_2_with_one_line(data, tmp_path, case):
    args, message = BAD_ARGS[case]
    args = [{"SRC": str(data["src"]), "P": str(data["prompts"])}.get(a, a) for a in args]
    out = tmp_path / "out.json"
    r = rlx("annotate", *args, "--out", str(out), "--model", "small", timeout=120)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert os.listdir(tmp_path) == []
