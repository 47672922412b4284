"""Full-size parity: ViT-B encoder + neck at 1024x1024 against the official model.

One official forward (cached in `fixtures_encoder.vit_b_reference`, shared with
the compiled-backend tests) and one rlx run per backend. The checkpoint is a
re-drawn official ViT-B saved by ``torch.save`` and read by rlx's torch-free
loader; the image goes through the full preprocessing on both sides.
"""

import time

import numpy as np
import pytest

from models.sam import SamPredictor, sam_model_registry
from tests.models.sam.fixtures_encoder import assert_parity, vit_b_case  # noqa: F401


@pytest.mark.slow
def test_vit_b_embedding_matches_official_on_reference_backend(vit_b_case):
    t0 = time.perf_counter()
    sam = sam_model_registry["vit_b"](checkpoint=vit_b_case.checkpoint, profile="reference")
    t1 = time.perf_counter()
    assert sam.profile.backend == "reference" and not sam.synthetic
    predictor = SamPredictor(sam)
    predictor.set_image(vit_b_case.image)
    t2 = time.perf_counter()
    emb = predictor.get_image_embedding()
    print(f"\n[timing] rlx ViT-B load+compile {t1 - t0:.1f} s, set_image (reference) "
          f"{t2 - t1:.1f} s; official {vit_b_case.official_seconds:.1f} s")
    assert emb.shape == (1, 256, 64, 64)
    assert predictor.input_size == vit_b_case.input_size == (768, 1024)
    assert predictor.original_size == vit_b_case.original_size
    assert_parity(emb, vit_b_case.embedding, "ViT-B 1024x1024 encoder+neck, reference backend")
    # The embedding is not degenerate: LayerNorm2d output with re-drawn affine params.
    assert 0.5 < float(np.std(vit_b_case.embedding)) < 2.0
