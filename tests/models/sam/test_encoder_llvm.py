"""SAM encoder + neck on the llvm backend against the official segment-anything.

Same bounds as the reference and numba backends (max |Δ| ≤ 1e-4, relative L2
≤ 1e-5): the small config in the fast suite (fused with blocked attention,
decomposed attention, one thread with a small attention block, the native
GEMM), and the full ViT-B once, reusing the official embedding computed by
`fixtures_encoder` (the official forward runs once per session).
"""

import numpy as np
import pytest

from models.sam import SamPredictor, build_sam, sam_model_registry, small_config
from models.sam.debug import DebugOptions
from rlx.runtime.profile import PRESETS
from tests.models.sam.fixtures_encoder import (  # noqa: F401
    assert_parity, official_embedding, small_checkpoint, small_input, small_official, vit_b_case)

LLVM = PRESETS["llvm"]


@pytest.fixture(scope="module")
def official():
    return small_official()


@pytest.mark.parametrize("profile", [
    LLVM,
    LLVM.replace(attention="decomposed", name="llvm-decomposed"),
    LLVM.replace(threads=1, attention_block=64, name="llvm-1t-block64"),
    LLVM.replace(gemm="native", name="llvm-native"),
], ids=["llvm", "decomposed", "1thread-block64", "native-gemm"])
def test_small_encoder_on_llvm_matches_official(official, profile):
    sam = build_sam(small_config(), checkpoint=small_checkpoint(), profile=profile,
                    debug=DebugOptions())
    enc = sam.subgraph("encoder")
    assert enc.report.backend == "llvm" and enc.report.fallback_kernels == 0
    kinds = [k.info.kind for k in enc.plan.kernels if k is not None]
    assert {"llvm.gemm", "llvm.norm"} <= set(kinds)
    if profile.attention == "blocked":  # one blocked attention kernel per block
        assert kinds.count("llvm.attention") == small_config().encoder_depth
    else:
        assert "llvm.attention" not in kinds
    for seed in (0, 1):
        x = small_input(seed)
        assert_parity(sam.image_embedding(x), official_embedding(official, x),
                      f"small encoder+neck, {profile.name}, input seed {seed}")


@pytest.mark.slow
def test_vit_b_embedding_matches_official_on_llvm(vit_b_case):
    sam = sam_model_registry["vit_b"](checkpoint=vit_b_case.checkpoint, profile="llvm")
    assert sam.profile.backend == "llvm"
    for name in ("encoder", "neck"):
        assert sam.subgraph(name).report.fallback_kernels == 0
    predictor = SamPredictor(sam)
    predictor.set_image(vit_b_case.image)
    emb = predictor.get_image_embedding()
    assert emb.shape == (1, 256, 64, 64)
    assert_parity(emb, vit_b_case.embedding, "ViT-B 1024x1024 encoder+neck, llvm backend")
    assert 0.5 < float(np.std(vit_b_case.embedding)) < 2.0
