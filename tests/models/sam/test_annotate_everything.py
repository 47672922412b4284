"""``rlx annotate --everything``: the automatic mask generator's records, as COCO annotations.

The generator itself is tested against Meta's elsewhere; here the question is
whether every record it returns for an image reaches the COCO file intact:
same masks (RLE), same predicted IoU and stability score, ``bbox`` / ``area``
from the RLE, ``point_coords`` / ``crop_box`` kept, corrupt images in
``errors``. Low thresholds and a 4 x 4 grid make the small model keep a few
masks per image within seconds.
"""

import json
import warnings

import numpy as np
import pytest

from tests.models.sam.annotate_fixtures import CORRUPT, IMAGES, decode, rlx, write_dataset
from tests.models.sam.decoder_fixtures import small_official
from tests.support import official_sam

GENERATOR = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("annotate_everything")
    src, _ = write_dataset(d)
    ckpt = official_sam.save_official_checkpoint(small_official(), str(d / "sam_small.pth"))
    out = d / "everything.json"
    opts = [x for k, v in GENERATOR.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    r = rlx("annotate", str(src), "--out", str(out), "--everything", "--model", "small",
            "--checkpoint", ckpt, "--profile", "reference", *opts)
    assert r.returncode == 1, r.stderr  # the corrupt image: exit 1, file written
    return {"src": src, "ckpt": ckpt, "coco": json.loads(out.read_text()), "out": out}


def test_every_generator_record_reaches_the_coco_file(run):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    from models.sam import build_sam
    from models.sam.automatic import SamAutomaticMaskGenerator
    from models.sam.image import load_image

    coco = run["coco"]
    assert len(COCO(str(run["out"])).anns) == len(coco["annotations"])
    assert [e["file_name"] for e in coco["errors"]] == [CORRUPT]
    assert sorted(i["file_name"] for i in coco["images"]) == sorted(IMAGES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sam = build_sam("small", checkpoint=run["ckpt"], profile="reference")
    gen = SamAutomaticMaskGenerator(sam, output_mode="coco_rle", **GENERATOR)
    total = 0
    for img in coco["images"]:
        records = gen.generate(load_image(str(run["src"] / img["file_name"])))
        ours = [a for a in coco["annotations"] if a["image_id"] == img["id"]]
        assert len(ours) == len(records) > 0, img["file_name"]
        total += len(ours)
        for ann, rec in zip(ours, records):
            want = rec["segmentation"]
            counts = want["counts"]
            assert ann["segmentation"]["counts"] == (counts.decode() if isinstance(counts, bytes)
                                                     else counts)
            assert ann["segmentation"]["size"] == list(want["size"]) == [img["height"],
                                                                        img["width"]]
            assert ann["predicted_iou"] == pytest.approx(float(rec["predicted_iou"]), abs=1e-6)
            assert ann["score"] == ann["predicted_iou"]
            assert ann["stability_score"] == pytest.approx(float(rec["stability_score"]),
                                                           abs=1e-6)
            assert np.allclose(ann["point_coords"], rec["point_coords"])
            assert list(ann["crop_box"]) == list(rec["crop_box"])
            m = decode(ann)
            assert ann["area"] == int(m.sum()) == int(rec["area"])
            enc = dict(ann["segmentation"], counts=ann["segmentation"]["counts"].encode())
            assert ann["bbox"] == [float(v) for v in mask_utils.toBbox(enc)]
    print(f"\n[everything] {total} masks over {len(coco['images'])} images reached the file")


def test_generator_options_are_checked_before_any_model_loads(run, tmp_path):
    r = rlx("annotate", str(run["src"]), "--out", str(tmp_path / "o.json"), "--everything",
            "--model", "small", "--points-per-side", "0", timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "rlx annotate: error: bad --points-per-side '0': must be at least 1"]
    r = rlx("annotate", str(run["src"]), "--out", str(tmp_path / "o.json"), "--everything",
            "--model", "small", "--pred-iou-thresh", "high", timeout=120)
    assert r.returncode == 2 and "malformed --pred-iou-thresh 'high'" in r.stderr
