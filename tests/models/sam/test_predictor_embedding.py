"""SamPredictor's embedding API behaves like the official one (small model)."""

import numpy as np
import pytest

from models.sam import ImageNotSetError, SamPredictor, build_sam, small_config
from models.sam.debug import DebugOptions
from rlx.errors import InputError, RlxError
from tests.models.sam.fixtures_encoder import small_checkpoint
from tests.support import synthetic_images


@pytest.fixture(scope="module")
def sam():
    return build_sam(small_config(), checkpoint=small_checkpoint(), profile="reference",
                     debug=DebugOptions())


def test_get_before_set_is_an_error(sam):
    p = SamPredictor(sam)
    assert not p.is_image_set and p.features is None
    assert p.original_size is None and p.input_size is None
    with pytest.raises(ImageNotSetError, match="set_image"):
        p.get_image_embedding()
    assert isinstance(ImageNotSetError("x"), (RlxError, RuntimeError))


def test_set_get_reset(sam):
    p = SamPredictor(sam)
    image = synthetic_images.make_image(120, 90, seed=4)
    p.set_image(image)
    emb = p.get_image_embedding()
    assert emb.dtype == np.float32 and emb.shape == (1, 32, 16, 16)
    assert p.features is emb and p.is_image_set
    assert p.original_size == (120, 90) and p.input_size == (256, 192)
    p.reset_image()
    assert not p.is_image_set and p.features is None and p.original_size is None
    with pytest.raises(ImageNotSetError):
        p.get_image_embedding()


def test_path_grayscale_and_bgr_inputs(sam, tmp_path):
    image = synthetic_images.make_image(64, 80, seed=5)
    p = SamPredictor(sam)
    p.set_image(image)
    ref = p.get_image_embedding().copy()

    path = synthetic_images.write_image(str(tmp_path / "img.png"), image)
    p.set_image(path)
    np.testing.assert_array_equal(p.get_image_embedding(), ref)

    p.set_image(np.ascontiguousarray(image[..., ::-1]), image_format="BGR")
    np.testing.assert_array_equal(p.get_image_embedding(), ref)

    gray = image[..., 0]
    p.set_image(gray)
    np.testing.assert_array_equal(p.get_image_embedding(),
                                  _embed(sam, np.repeat(gray[..., None], 3, 2)))
    assert not np.array_equal(p.get_image_embedding(), ref)


def _embed(sam, image):
    p = SamPredictor(sam)
    p.set_image(image)
    return p.get_image_embedding()


@pytest.mark.parametrize("bad, match", [
    (np.zeros((10, 10, 3), np.float32), "uint8"),
    (np.zeros((10, 10, 4), np.uint8), "HxWx3"),
    ("/no/such/image.png", "not found"),
    (42, "file path, a PIL image or a numpy array"),
])
def test_bad_images_are_clear_errors(sam, bad, match):
    p = SamPredictor(sam)
    with pytest.raises(InputError, match=match):
        p.set_image(bad)
    assert not p.is_image_set


def test_bad_image_format_and_model(sam):
    with pytest.raises(InputError, match="image_format"):
        SamPredictor(sam).set_image(np.zeros((8, 8, 3), np.uint8), image_format="RGBA")
    with pytest.raises(InputError, match="Sam model"):
        SamPredictor("vit_b")


def test_failed_set_image_keeps_nothing_half_set(sam):
    p = SamPredictor(sam)
    p.set_image(synthetic_images.make_image(30, 40, seed=1))
    with pytest.raises(InputError):
        p.set_image(np.zeros((5, 5), np.float64))
    # the previous image is still fully there (nothing half-written)
    assert p.is_image_set and p.original_size == (30, 40)
