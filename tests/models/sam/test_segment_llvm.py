"""``rlx segment --profile llvm`` end to end (subprocess), against the official predictor.

The small test configuration with an official-format checkpoint: the llvm
backend compiles the encoder, neck and prompt-to-masks graphs, and the mask
must agree with the official ``SamPredictor`` as tightly as the reference
profile's does (tests/models/sam/test_segment_cli.py).
"""

import json

import numpy as np

from tests.models.sam.decoder_fixtures import small_official
from tests.models.sam.test_segment_cli import _mask, files, rlx  # noqa: F401
from tests.support import official_sam


def test_segment_on_llvm_matches_official_predictor(files):  # noqa: F811
    out = files["dir"] / "out_llvm"
    box, point = [60.0, 40.0, 400.0, 300.0], [200.0, 150.0]
    r = rlx("segment", files["img"], "--checkpoint", files["ckpt"], "--model", "small",
            "--box", ",".join(map(str, box)), "--point", "200,150", "--profile", "llvm",
            "--out", str(out))
    assert r.returncode == 0, r.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["profile"]["backend"] == "llvm" and result["synthetic_weights"] is False

    official = official_sam.official_predictor(small_official())
    official.set_image(files["image"])
    masks, iou, _ = official.predict(point_coords=np.array([point]), point_labels=np.array([1]),
                                     box=np.array(box), multimask_output=False)
    ours = _mask(out / "mask_0.png")
    agreement = float((ours == masks[0]).mean())
    print(f"\n[parity] rlx segment (llvm) vs official predictor: mask agreement {agreement:.6f}, "
          f"iou {result['masks'][0]['iou_prediction']:.6f} vs {float(iou[0]):.6f}")
    assert 0.0 < masks[0].mean() < 1.0
    assert agreement >= 0.9999
    assert abs(result["masks"][0]["iou_prediction"] - float(iou[0])) <= 1e-4
