"""``rlx segment`` end to end, as a subprocess.

The runs use the small test configuration (``--model small``, hidden from
``--help``) so each takes seconds: once on synthetic weights (must say so),
once on an official-format checkpoint whose masks must equal the official
``SamPredictor``'s. Bad arguments must give exit code 2, exactly one line on
stderr, and leave nothing in ``--out``.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.models.sam.decoder_fixtures import small_official
from tests.support import official_sam, synthetic_images

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
H, W = 360, 540


def rlx(*args, timeout=300):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "rlx.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("segment")
    image = synthetic_images.make_image(H, W, seed=21)
    img = synthetic_images.write_image(str(d / "photo.png"), image)
    ckpt = official_sam.save_official_checkpoint(small_official(), str(d / "sam_small.pth"))
    bad = d / "not_an_image.png"
    bad.write_text("this is text, not a PNG\n")
    return {"dir": d, "image": image, "img": img, "ckpt": ckpt, "bad": str(bad)}


def _mask(path):
    with Image.open(path) as im:
        assert im.mode == "L"
        a = np.asarray(im)
    assert set(np.unique(a)) <= {0, 255}
    return a == 255


def test_synthetic_weights_run_writes_everything_and_says_so(files):
    out = files["dir"] / "out_synthetic"
    r = rlx("segment", files["img"], "--model", "small", "--point", "100,80",
            "--point", "300.5,200,0", "--multimask", "--profile", "reference", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "SYNTHETIC" in r.stderr and "meaningless" in r.stderr
    assert sorted(os.listdir(out)) == ["mask_0.png", "mask_1.png", "mask_2.png", "overlay.png",
                                       "result.json"]
    result = json.loads((out / "result.json").read_text())
    assert result["synthetic_weights"] is True and result["checkpoint"] is None
    assert "SYNTHETIC" in result["warning"]
    assert result["model"] == "small"
    assert result["profile"]["backend"] == "reference"
    assert result["image_size"] == {"height": H, "width": W}
    assert result["prompt"] == {
        "points": [{"x": 100.0, "y": 80.0, "label": 1}, {"x": 300.5, "y": 200.0, "label": 0}],
        "box": None, "multimask": True, "threshold": 0.0}
    scores = [m["iou_prediction"] for m in result["masks"]]
    assert len(scores) == 3 and result["best_mask"] == int(np.argmax(scores))
    for entry in result["masks"]:
        m = _mask(out / entry["file"])
        assert m.shape == (H, W) and int(m.sum()) == entry["area_pixels"]
    timings = result["timings_seconds"]
    for key in ("load_model", "set_image", "predict", "render", "total_before_write"):
        assert timings[key] >= 0.0
    assert {"prompt_encoding", "postprocess", "total"} <= set(timings["predict_steps"])
    assert result["decoder_bucket"] == {"sparse_tokens": 3, "mask_input": False}
    with Image.open(out / "overlay.png") as im:
        overlay = np.asarray(im.convert("RGB"))
    assert overlay.shape == (H, W, 3)
    # the overlay differs from the image (tint, markers) but keeps it recognisable
    assert not np.array_equal(overlay, files["image"])
    assert not [n for n in os.listdir(files["dir"]) if n.startswith(".out_synthetic")]


def test_checkpoint_run_matches_official_predictor(files):
    out = files["dir"] / "out_checkpoint"
    box, point = [60.0, 40.0, 400.0, 300.0], [200.0, 150.0]
    r = rlx("segment", files["img"], "--checkpoint", files["ckpt"], "--model", "small",
            "--box", ",".join(map(str, box)), "--point", "200,150", "--profile", "reference",
            "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "SYNTHETIC" not in r.stderr + r.stdout
    result = json.loads((out / "result.json").read_text())
    assert result["synthetic_weights"] is False and result["warning"] is None
    assert result["checkpoint"] == os.path.abspath(files["ckpt"])
    assert result["prompt"]["box"] == box and not result["prompt"]["multimask"]
    assert sorted(os.listdir(out)) == ["mask_0.png", "overlay.png", "result.json"]

    official = official_sam.official_predictor(small_official())
    official.set_image(files["image"])
    masks, iou, _ = official.predict(point_coords=np.array([point]), point_labels=np.array([1]),
                                     box=np.array(box), multimask_output=False)
    ours = _mask(out / "mask_0.png")
    agreement = float((ours == masks[0]).mean())
    print(f"\n[parity] rlx segment vs official predictor: mask agreement {agreement:.6f}, "
          f"iou {result['masks'][0]['iou_prediction']:.6f} vs {float(iou[0]):.6f}")
    assert 0.0 < masks[0].mean() < 1.0
    assert agreement >= 0.9999
    assert abs(result["masks"][0]["iou_prediction"] - float(iou[0])) <= 1e-4


BAD_ARGS = {
    "malformed point": (["--point", "12,abc"], "malformed --point '12,abc'"),
    "box x1 < x0": (["--box", "300,10,100,200"], "need X0 <= X1"),
    "missing image": (["--point", "10,10"], "image file not found"),
    "unreadable image": (["--point", "10,10"], "cannot read image"),
    "point outside image": (["--point", f"{W + 5},10"], "outside the"),
    "no prompt": ([], "give at least one --point"),
    "bad label": (["--point", "10,10,2"], "LABEL must be 1"),
    "unknown profile": (["--point", "10,10", "--profile", "bogus"], "unknown profile 'bogus'"),
}


@pytest.mark.parametrize("case", list(BAD_ARGS))
def test_bad_arguments_exit_2_with_one_line_and_write_nothing(files, case):
    args, message = BAD_ARGS[case]
    image = {"missing image": str(files["dir"] / "nope.png"),
             "unreadable image": files["bad"]}.get(case, files["img"])
    out = files["dir"] / f"out_bad_{case.replace(' ', '_')}"
    if "--profile" not in args:
        args = [*args, "--profile", "reference"]
    r = rlx("segment", image, "--model", "small", *args, "--out", str(out))
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("rlx segment: error: ") and message in lines[0], lines[0]
    assert not out.exists()
    assert not [n for n in os.listdir(files["dir"]) if n.startswith(f".{out.name}")]


def test_existing_output_directory_is_updated_in_place(files):
    out = files["dir"] / "out_existing"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = rlx("segment", files["img"], "--model", "small", "--box", "10,10,200,200",
            "--profile", "reference", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(out)) == ["keep.txt", "mask_0.png", "overlay.png", "result.json"]
    assert (out / "keep.txt").read_text() == "mine"
