"""Small-config parity with the official encoder + neck, on every profile family.

The small config (embed 64, depth 4, global blocks 1 and 3, image 256) keeps
every code path of the real encoder alive: 16x16 token grids padded to 28x28
for 14-token windows, global blocks, rel-pos tables of both lengths.
"""

import numpy as np
import pytest

from models.sam import SamPredictor, build_sam, small_config
from models.sam.debug import DebugOptions
from tests.models.sam.fixtures_encoder import (
    assert_parity, official_embedding, small_checkpoint, small_input, small_official)
from tests.support import official_sam, synthetic_images

OFF = DebugOptions()


@pytest.fixture(scope="module")
def official():
    return small_official()


@pytest.mark.parametrize("profile", ["reference", "debug", "default"])
def test_small_encoder_matches_official(official, profile):
    sam = build_sam(small_config(), checkpoint=small_checkpoint(), profile=profile, debug=OFF)
    if profile == "debug":  # the debug preset: reference interpreter, verified, attention lowered
        assert sam.profile.backend == "reference" and sam.profile.verify
        assert "attention" not in sam.subgraph("encoder").graph.op_counts()
    for seed in (0, 1):
        x = small_input(seed)
        assert_parity(sam.image_embedding(x), official_embedding(official, x),
                      f"small encoder+neck, profile {profile}, input seed {seed}")


@pytest.mark.parametrize("size, fmt", [((300, 200), "RGB"), ((97, 250), "BGR")])
def test_non_square_image_through_full_preprocessing(official, size, fmt):
    image = synthetic_images.make_image(*size, seed=size[0])
    ref_pred = official_sam.official_predictor(official)
    ref_pred.set_image(image, image_format=fmt)
    sam = build_sam(small_config(), checkpoint=small_checkpoint(), profile="reference", debug=OFF)
    pred = SamPredictor(sam)
    pred.set_image(image, image_format=fmt)
    assert pred.original_size == tuple(ref_pred.original_size) == size
    assert pred.input_size == tuple(ref_pred.input_size)
    assert max(pred.input_size) == 256 and pred.input_size[0] != pred.input_size[1]
    ref = ref_pred.get_image_embedding().numpy()
    assert_parity(pred.get_image_embedding(), ref, f"small, {size[0]}x{size[1]} {fmt} image")


def test_embedding_depends_on_the_image(official):
    """Guard against a parity test passing on a constant output."""
    sam = build_sam(small_config(), checkpoint=small_checkpoint(), profile="reference", debug=OFF)
    a = sam.image_embedding(small_input(0))
    b = sam.image_embedding(small_input(1))
    assert np.linalg.norm(a - b) / np.linalg.norm(a) > 0.1
