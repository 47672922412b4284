"""SAM ViT-B on precision bf16 against the official f32 ``SamPredictor`` (issue 14's budget).

The bf16 semantics are those the precision pass gives the graph (every matrix
product on bf16-rounded operands with f32 accumulation, the rest f32); they are
computed here by the reference interpreter, so the budget is checked on any CPU.
A compiled backend's bf16 kernels are held to the reference on the same rounded
inputs (tests/backends), so this bounds them too.

Full size (ViT-B at 1024x1024, the re-drawn official checkpoint and the official
embedding shared with the other ViT-B tests, so only rlx's encoder run is added):
the f32 reference encoder takes ~40 s on 2 idle cores, bf16 adds the roundings
(estimated ~1.3x); measured 265 s on a machine at load average 15 (where the
official set_image took 126 s).
Budget: embedding rel-L2 <= 1e-2, low-res logits rel-L2 <= 2e-2, IoU |d| <= 5e-3,
>= 99.5 % identical mask pixels. Measured (2026-12-05): 5.9e-3, 7.9e-3, 1.5e-3,
99.74 %.
"""

import time

import numpy as np
import pytest
import torch

from models.sam import SamPredictor, sam_model_registry
from rlx.runtime.profile import PRESETS
from tests.models.sam.fixtures_encoder import _vit_b_official, vit_b_case  # noqa: F401
from tests.support import official_sam

PROMPTS = {
    "one_point": dict(point_coords=[[700.0, 400.0]], point_labels=[1]),
    "box_points": dict(point_coords=[[500.0, 600.0], [900.0, 300.0]], point_labels=[1, 0],
                       box=[300.0, 200.0, 1100.0, 900.0]),
}


def rel_l2(got, ref) -> float:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(got - ref) / np.linalg.norm(ref))


@pytest.mark.slow
def test_vit_b_bf16_predictor_within_budget_of_official_f32(vit_b_case):  # noqa: F811
    profile = PRESETS["reference"].replace(precision="bf16", name="reference-bf16")
    sam = sam_model_registry["vit_b"](checkpoint=vit_b_case.checkpoint, profile=profile)
    assert sam.profile.precision == "bf16"
    ours = SamPredictor(sam)
    t0 = time.perf_counter()
    ours.set_image(vit_b_case.image)
    emb = ours.get_image_embedding()
    print(f"\n[timing] rlx ViT-B set_image (reference, bf16) {time.perf_counter() - t0:.1f} s")
    e = rel_l2(emb, vit_b_case.embedding)

    official = official_sam.official_predictor(_vit_b_official()[0])
    official.features = torch.from_numpy(vit_b_case.embedding)
    official.original_size = vit_b_case.original_size
    official.input_size = vit_b_case.input_size
    official.is_image_set = True
    report = [f"embedding rel-L2 {e:.2e}"]
    worst = {"logits": 0.0, "iou": 0.0, "agree": 1.0}
    for name, prompt in PROMPTS.items():
        prompt = {k: np.asarray(v) for k, v in prompt.items()}
        for multimask in (True, False):
            masks, iou, low = ours.predict(**prompt, multimask_output=multimask)
            ref_masks, ref_iou, ref_low = official.predict(**prompt, multimask_output=multimask)
            assert masks.shape == ref_masks.shape and 0.0 < ref_masks.mean() < 1.0
            worst["logits"] = max(worst["logits"], rel_l2(low, ref_low))
            worst["iou"] = max(worst["iou"], float(np.abs(iou - ref_iou).max()))
            worst["agree"] = min(worst["agree"], float((masks == ref_masks).mean()))
    report.append(f"low-res logits rel-L2 {worst['logits']:.2e}, IoU |d| {worst['iou']:.2e}, "
                  f"mask agreement {worst['agree']:.5f}")
    print("\n[parity] ViT-B bf16 vs official f32: " + "; ".join(report))
    assert e <= 1e-2
    assert 0 < worst["logits"] <= 2e-2
    assert worst["iou"] <= 5e-3
    assert worst["agree"] >= 0.995
