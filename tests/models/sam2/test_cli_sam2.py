"""``rlx segment IMAGE --model sam2.1_hiera_t``: files, JSON, the same masks as the predictor, errors."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from models.sam import segment_cli
from models.sam2 import SAM2ImagePredictor, build_sam2
from models.sam2.predictor_cli import run_sam2
from rlx.errors import InputError


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    rng = np.random.default_rng(0)
    img = (rng.random((90, 120, 3)) * 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("sam2cli") / "img.png"
    Image.fromarray(img).save(path)
    return path


def _args(argv):
    p = argparse.ArgumentParser()
    segment_cli.add_arguments(p)
    args = p.parse_args(argv)
    args.sam2_image_size = 256
    return args


def test_segment_writes_masks_matching_the_predictor(image_path, tmp_path, capsys):
    out = tmp_path / "out"
    args = _args([str(image_path), "--model", "sam2.1_hiera_t", "--point", "60,40",
                  "--point", "10,80,0", "--box", "5,5,100,85", "--multimask", "--out", str(out)])
    assert segment_cli.run(args) == 0
    assert "SYNTHETIC" in capsys.readouterr().err
    result = json.loads((out / "result.json").read_text())
    assert result["model"] == "sam2.1_hiera_t" and result["synthetic_weights"]
    assert len(result["masks"]) == 3 and (out / "overlay.png").is_file()
    pred = SAM2ImagePredictor(build_sam2("sam2.1_hiera_t", image_size=256))
    pred.set_image(str(image_path))
    masks, iou, _ = pred.predict([[60, 40], [10, 80]], [1, 0], np.array([5, 5, 100, 85]))
    for i, entry in enumerate(result["masks"]):
        png = np.array(Image.open(out / entry["file"])) > 0
        np.testing.assert_array_equal(png, masks[i] > 0.5)
        assert entry["iou_prediction"] == pytest.approx(float(iou[i]), abs=1e-6)


@pytest.mark.parametrize("argv, message", [
    (["--model", "sam2.1_hiera_q", "--point", "1,1"], "unknown --model"),
    (["--model", "sam2_hiera_s"], "at least one --point"),
    (["--model", "sam2_hiera_s", "--point", "500,1"], "outside the 120x90 image"),
    (["--model", "sam2_hiera_s", "--box", "1,1,200,50"], "outside the 120x90 image"),
    (["--model", "sam2_hiera_s", "--point", "1,1", "--checkpoint", "nope.pt"],
     "checkpoint not found"),
])
def test_bad_arguments(image_path, tmp_path, argv, message):
    args = _args([str(image_path), "--out", str(tmp_path / "o")] + argv)
    with pytest.raises(InputError, match=message):
        run_sam2(args)
    assert not (tmp_path / "o").exists()


def test_cli_exit_code(image_path, tmp_path):
    """Through the real command line: one line on stderr, exit 2, nothing written."""
    proc = subprocess.run([sys.executable, "-m", "rlx.cli", "segment", str(image_path),
                           "--model", "sam2.1_hiera_t", "--point", "1000,5",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "outside the 120x90 image" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_zoo_registration():
    """The zoo knows every config by zoo name and Meta's names; subgraphs build; bench peer."""
    from models.sam2.registration import MODEL_NAMES
    from rlx import zoo

    spec = zoo.get_model("sam2.1-hiera-t")
    assert zoo.get_model("sam2.1_hiera_tiny") is spec and zoo.get_model("sam2.1_hiera_t") is spec
    assert set(MODEL_NAMES.values()) <= {s.name for s in zoo.list_models()}
    assert list(spec.subgraphs) == ["image_features", "prompt_to_masks", "prompt_to_masks_box_mask"]
    graph = spec.build("prompt_to_masks")
    assert [v.name for v in graph.inputs] == ["image_embed", "high_res_0", "high_res_1", "sparse"]
    assert "torch" in spec.peers


def test_dump_ir_command():
    proc = subprocess.run([sys.executable, "-m", "rlx.cli", "dump-ir", "sam2.1-hiera-t",
                           "--subgraph", "prompt_to_masks_box_mask"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "@sam_mask_decoder.obj_score_token.weight" in proc.stdout
    assert "%mask_input: f32[1,1,256,256]" in proc.stdout
