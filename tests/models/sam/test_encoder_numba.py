"""SAM encoder + neck on the numba backend against the official segment-anything.

Same bounds as the reference backend (max |Δ| ≤ 1e-4, relative L2 ≤ 1e-5):
the small config in the fast suite (with fusion and blocked attention, plus
the decomposed-attention and one-thread variants), and the full ViT-B once,
reusing the official embedding computed by `fixtures_encoder` (shared with
the reference-backend test, so the official forward runs once per session).
"""

import numpy as np
import pytest

from models.sam import SamPredictor, build_sam, sam_model_registry, small_config
from models.sam.debug import DebugOptions
from rlx.runtime.profile import PRESETS
from tests.models.sam.fixtures_encoder import (  # noqa: F401
    assert_parity, official_embedding, small_checkpoint, small_input, small_official, vit_b_case)

NUMBA = PRESETS["numba"]


@pytest.fixture(scope="module")
def official():
    return small_official()


@pytest.mark.parametrize("profile", [
    NUMBA,
    NUMBA.replace(attention="decomposed", name="numba-decomposed"),
    NUMBA.replace(threads=1, attention_block=64, name="numba-1t-block64"),
], ids=["numba", "decomposed", "1thread-block64"])
def test_small_encoder_on_numba_matches_official(official, profile):
    sam = build_sam(small_config(), checkpoint=small_checkpoint(), profile=profile,
                    debug=DebugOptions())
    enc = sam.subgraph("encoder")
    assert enc.report.backend == "numba" and enc.report.fallback_kernels == 0
    ops = enc.graph.op_counts()
    assert ops.get("fused.gemm", 0) > 0 and ops.get("fused.norm", 0) > 0
    if profile.attention == "blocked":
        attention = ops.get("attention", 0) + ops.get("fused.attention", 0)
        assert attention == small_config().encoder_depth
        assert ops.get("fused.attention", 0) >= 1  # global blocks read the packed qkv
    for seed in (0, 1):
        x = small_input(seed)
        assert_parity(sam.image_embedding(x), official_embedding(official, x),
                      f"small encoder+neck, {profile.name}, input seed {seed}")


@pytest.mark.slow
def test_vit_b_embedding_matches_official_on_numba(vit_b_case):
    sam = sam_model_registry["vit_b"](checkpoint=vit_b_case.checkpoint, profile="numba")
    assert sam.profile.backend == "numba"
    for name in ("encoder", "neck"):
        assert sam.subgraph(name).report.fallback_kernels == 0
    predictor = SamPredictor(sam)
    predictor.set_image(vit_b_case.image)
    emb = predictor.get_image_embedding()
    assert emb.shape == (1, 256, 64, 64)
    assert_parity(emb, vit_b_case.embedding, "ViT-B 1024x1024 encoder+neck, numba backend")
    assert 0.5 < float(np.std(vit_b_case.embedding)) < 2.0
