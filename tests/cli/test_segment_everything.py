"""``rlx segment IMAGE --everything`` end to end, as a subprocess (small test config).

Checks: the files (``masks.json`` with COCO RLE that decodes to the per-mask
PNGs, ``everything.png``), the synthetic-weights warning, agreement with the
official generator on an official-format checkpoint, and bad arguments: exit
code 2, one line on stderr, nothing written.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from tests.models.sam.decoder_fixtures import small_official
from tests.support import official_sam, synthetic_images, torch_box_ops

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
H, W = 240, 320
LOOSE = ["--points-per-side", "6", "--pred-iou-thresh", "0", "--stability-thresh", "0"]


def rlx(*args, timeout=600):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "rlx.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("everything")
    image = synthetic_images.make_image(H, W, seed=21)
    img = synthetic_images.write_image(str(d / "photo.png"), image)
    ckpt = official_sam.save_official_checkpoint(small_official(), str(d / "sam_small.pth"))
    return {"dir": d, "image": image, "img": img, "ckpt": ckpt}


def _decode(seg):
    return mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()}).astype(bool)


def test_writes_coco_json_overlay_and_pngs(files):
    out = files["dir"] / "out_synth"
    r = rlx("segment", files["img"], "--model", "small", "--everything", *LOOSE, "--png",
            "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "SYNTHETIC" in r.stderr
    doc = json.loads((out / "masks.json").read_text())
    assert doc["info"]["synthetic_weights"] is True
    assert doc["images"] == [{"id": 1, "file_name": "photo.png", "height": H, "width": W}]
    anns = doc["annotations"]
    assert anns, "no masks at all with every filter off"
    for a in anns:
        m = _decode(a["segmentation"])
        assert m.shape == (H, W) and a["area"] == int(m.sum())
        with Image.open(out / a["file"]) as im:
            assert np.array_equal(np.asarray(im) == 255, m)
        assert set(a) >= {"bbox", "area", "predicted_iou", "stability_score", "point_coords"}
    with Image.open(out / "everything.png") as im:
        assert im.size == (W, H) and im.mode == "RGB"


def test_matches_official_generator(files, monkeypatch):
    import segment_anything.automatic_mask_generator as official_amg

    out = files["dir"] / "out_ckpt"
    r = rlx("segment", files["img"], "--model", "small", "--checkpoint", files["ckpt"],
            "--everything", *LOOSE, "--out", str(out))
    assert r.returncode == 0, r.stderr
    anns = json.loads((out / "masks.json").read_text())["annotations"]
    monkeypatch.setattr(official_amg, "batched_nms", torch_box_ops.batched_nms)
    monkeypatch.setattr(official_amg, "box_area", torch_box_ops.box_area)
    with torch.no_grad():
        ref = official_amg.SamAutomaticMaskGenerator(
            small_official(), points_per_side=6, pred_iou_thresh=0.0,
            stability_score_thresh=0.0, output_mode="coco_rle").generate(files["image"])
    assert len(anns) == len(ref) and ref
    for a, b in zip(anns, ref):
        ma, mb = _decode(a["segmentation"]), _decode(b["segmentation"])
        assert (ma & mb).sum() / max((ma | mb).sum(), 1) >= 0.9
        assert abs(a["predicted_iou"] - b["predicted_iou"]) <= 1e-3
        assert abs(a["stability_score"] - b["stability_score"]) <= 1e-3


BAD = {
    "with a point": (["--point", "10,10"], "--everything takes no --point"),
    "points per side": (["--points-per-side", "0"], "bad --points-per-side '0'"),
    "crop layers": (["--crop-layers", "x"], "malformed --crop-layers 'x'"),
    "region area": (["--min-region-area", "-4"], "bad --min-region-area '-4'"),
    "iou threshold": (["--pred-iou-thresh", "2"], "bad --pred-iou-thresh '2'"),
    "missing image": ([], "image file not found"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_arguments_exit_2_with_one_line_and_write_nothing(files, case):
    args, message = BAD[case]
    image = str(files["dir"] / "nope.png") if case == "missing image" else files["img"]
    out = files["dir"] / f"out_bad_{case.replace(' ', '_')}"
    r = rlx("segment", image, "--model", "small", "--everything", *args, "--profile",
            "reference", "--out", str(out))
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("rlx segment: error: ") and message in lines[0], lines[0]
    assert not out.exists()
