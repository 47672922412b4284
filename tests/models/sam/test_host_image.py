"""Image loading and preprocessing against the official SamPredictor.set_image."""

import os
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from models.sam.config import small_config
from models.sam.image import load_image, preprocess, resize_longest_side
from rlx.errors import InputError
from tests.support import official_sam, synthetic_images
from tests.support.official_sam import SamPredictor
from segment_anything.utils.transforms import ResizeLongestSide


class _RecordingEncoder(torch.nn.Module):
    """Stands in for the image encoder and keeps the tensor it was given."""

    def __init__(self, img_size):
        super().__init__()
        self.img_size = img_size
        self.seen = None

    def forward(self, x):
        self.seen = x.detach().clone()
        g = self.img_size // 16
        return torch.zeros(1, 32, g, g)


def official_encoder_input(image, img_size=1024, image_format="RGB"):
    """(tensor fed to image_encoder, input_size, original_size) from the official predictor."""
    sam = official_sam.build_official(small_config(), seed=0)
    sam.image_encoder = _RecordingEncoder(img_size)
    predictor = SamPredictor(sam)
    predictor.set_image(image, image_format=image_format)
    return sam.image_encoder.seen.numpy(), predictor.input_size, predictor.original_size


SHAPES = list(synthetic_images.SIZES) + [(100, 150), (1024, 1024), (333, 1001), (1500, 2000)]


@pytest.mark.parametrize("hw", SHAPES, ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_preprocess_matches_official_set_image(hw):
    image = synthetic_images.make_image(*hw, seed=hw[0] + hw[1])
    ref, ref_input, ref_original = official_encoder_input(image)
    x, input_size, original_size = preprocess(image)
    assert x.dtype == np.float32 and x.shape == (1, 3, 1024, 1024)
    assert tuple(input_size) == tuple(ref_input) and tuple(original_size) == tuple(ref_original)
    assert np.abs(x - ref).max() <= 1e-6
    h, w = input_size
    assert not np.any(x[..., h:, :]) and not np.any(x[..., :, w:]), "padding must be zeros"


@pytest.mark.parametrize("hw", SHAPES[:4], ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_uint8_resize_is_byte_identical(hw):
    image = synthetic_images.make_image(*hw, seed=7)
    ref = ResizeLongestSide(1024).apply_image(image)
    ours = resize_longest_side(image, 1024)
    assert ours.dtype == np.uint8 and ours.shape == ref.shape
    assert np.array_equal(ours, ref)


def test_preprocess_small_encoder_size():
    image = synthetic_images.make_image(700, 300, seed=1)
    ref, ref_input, _ = official_encoder_input(image, img_size=256)
    x, input_size, _ = preprocess(image, img_size=256)
    assert x.shape == (1, 3, 256, 256) and tuple(input_size) == tuple(ref_input) == (256, 110)
    assert np.abs(x - ref).max() <= 1e-6


def test_bgr_input_matches_official_bgr_path():
    rgb = synthetic_images.make_image(480, 640, seed=2)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    ref, _, _ = official_encoder_input(bgr, image_format="BGR")
    x_bgr, _, _ = preprocess(bgr, image_format="BGR")
    x_rgb, _, _ = preprocess(rgb)
    assert np.array_equal(x_bgr, x_rgb)
    assert np.abs(x_bgr - ref).max() <= 1e-6


def test_grayscale_array_is_replicated_to_rgb():
    gray = synthetic_images.make_image(300, 200, seed=3)[..., 1].copy()
    loaded = load_image(gray)
    assert loaded.shape == (300, 200, 3) and all(np.array_equal(loaded[..., c], gray) for c in range(3))
    ref, _, _ = official_encoder_input(np.repeat(gray[..., None], 3, axis=2))
    x, _, _ = preprocess(gray)
    assert np.abs(x - ref).max() <= 1e-6


def test_non_contiguous_view_is_accepted():
    big = synthetic_images.make_image(480, 640, seed=4)
    view = big[10:400:2, 5:600:3]
    x, input_size, original_size = preprocess(view)
    x2, _, _ = preprocess(np.ascontiguousarray(view))
    assert original_size == view.shape[:2] and np.array_equal(x, x2)


# ----- load_image -----------------------------------------------------------------

def test_load_png_is_lossless(image_files):
    for h, w in synthetic_images.SIZES:
        ref = synthetic_images.make_image(h, w, seed=h * 7 + w)
        got = load_image(image_files[f"rgb_{h}x{w}.png"])
        assert got.dtype == np.uint8 and got.flags.c_contiguous and np.array_equal(got, ref)


def test_load_jpeg(image_files):
    got = load_image(image_files["rgb_700x300.jpg"])
    ref = synthetic_images.make_image(700, 300, seed=700 * 7 + 300)
    assert got.shape == (700, 300, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - ref).mean() < 6  # JPEG is lossy, but close


def test_load_accepts_pathlike_and_pil(image_files):
    import pathlib

    p = pathlib.Path(image_files["rgb_480x640.png"])
    assert np.array_equal(load_image(p), load_image(str(p)))
    with Image.open(p) as im:
        assert np.array_equal(load_image(im), load_image(p))


def test_load_converts_other_modes_to_rgb(image_files):
    base = synthetic_images.make_image(*synthetic_images.SIZES[0], seed=1)
    gray = load_image(image_files["gray.png"])
    expected_gray = np.asarray(Image.fromarray(base).convert("L"))
    assert gray.shape == base.shape and all(np.array_equal(gray[..., c], expected_gray) for c in range(3))
    # RGBA: alpha is dropped, colours kept exactly.
    assert np.array_equal(load_image(image_files["rgba.png"]), base)
    # LA: luminance replicated, alpha dropped.
    assert np.array_equal(load_image(image_files["la.png"]), gray)
    # Palette: the palette colours.
    with Image.open(image_files["palette.png"]) as im:
        expected_p = np.asarray(im.convert("RGB"))
    assert np.array_equal(load_image(image_files["palette.png"]), expected_p)


def test_load_applies_exif_orientation(tmp_path):
    img = Image.fromarray(synthetic_images.make_image(40, 60, seed=5))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif.tobytes())
    assert load_image(path).shape == (60, 40, 3)


def test_array_returned_without_copy_when_already_fine():
    a = synthetic_images.make_image(20, 30, seed=6)
    assert load_image(a) is a


@pytest.mark.parametrize(
    "array, words",
    [
        (np.zeros((10, 10, 3), np.float32), ["float32", "(10, 10, 3)"]),
        (np.zeros((10, 10, 3), np.uint16), ["uint16"]),
        (np.zeros((10, 10, 3), bool), ["bool"]),
        (np.zeros((10, 10, 4), np.uint8), ["(10, 10, 4)"]),
        (np.zeros((10, 10, 1), np.uint8), ["(10, 10, 1)"]),
        (np.zeros((2, 10, 10, 3), np.uint8), ["(2, 10, 10, 3)"]),
        (np.zeros((10,), np.uint8), ["(10,)"]),
        (np.zeros((0, 10, 3), np.uint8), ["empty", "(0, 10, 3)"]),
        (np.zeros((10, 0), np.uint8), ["empty"]),
    ],
)
def test_bad_arrays_raise_input_error(array, words):
    with pytest.raises(InputError) as info:
        load_image(array)
    for word in words:
        assert word in str(info.value)
    with pytest.raises(InputError):
        preprocess(array)


@pytest.mark.parametrize("value", [None, 3, [[1, 2, 3]], torch.zeros(4, 4, 3, dtype=torch.uint8)])
def test_unsupported_types_raise_input_error(value):
    with pytest.raises(InputError, match=type(value).__name__):
        load_image(value)


def _write_png16(path, arr):
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit RGB)."""
    h, w = arr.shape[:2]
    color_type = 2 if arr.ndim == 3 else 0

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + arr[i].astype(">u2").tobytes() for i in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _bad_files(tmp_path, image_files):
    out = {}
    out["missing"] = str(tmp_path / "does_not_exist.png")
    out["directory"] = str(tmp_path)
    p = tmp_path / "garbage.png"
    p.write_bytes(os.urandom(256))
    out["garbage"] = str(p)
    p = tmp_path / "text.jpg"
    p.write_text("not an image")
    out["text"] = str(p)
    data = open(image_files["rgb_480x640.png"], "rb").read()
    p = tmp_path / "truncated.png"
    p.write_bytes(data[: len(data) // 2])
    out["truncated"] = str(p)
    data = open(image_files["rgb_480x640.jpg"], "rb").read()
    p = tmp_path / "truncated.jpg"
    p.write_bytes(data[: len(data) // 3])
    out["truncated_jpeg"] = str(p)
    a16 = (np.arange(12 * 9 * 3).reshape(12, 9, 3) * 300).astype(np.uint16)
    _write_png16(tmp_path / "rgb16.png", a16)
    out["rgb16"] = str(tmp_path / "rgb16.png")
    _write_png16(tmp_path / "gray16.png", a16[..., 0])
    out["gray16"] = str(tmp_path / "gray16.png")
    Image.fromarray(np.zeros((8, 8), np.float32)).save(tmp_path / "float.tif")
    out["float"] = str(tmp_path / "float.tif")
    Image.fromarray(np.zeros((8, 8), np.int32)).save(tmp_path / "int32.tif")
    out["int32"] = str(tmp_path / "int32.tif")
    return out


@pytest.mark.parametrize(
    "kind",
    ["missing", "directory", "garbage", "text", "truncated", "truncated_jpeg", "rgb16", "gray16", "float", "int32"],
)
def test_bad_files_raise_input_error_naming_the_path(tmp_path, image_files, kind):
    path = _bad_files(tmp_path, image_files)[kind]
    with pytest.raises(InputError) as info:
        load_image(path)
    assert path in str(info.value)
    if kind in ("rgb16", "gray16", "int32"):
        assert "16" in str(info.value) or "32" in str(info.value)
    if kind == "float":
        assert "float" in str(info.value)


def test_preprocess_argument_errors():
    image = synthetic_images.make_image(10, 20, seed=0)
    with pytest.raises(InputError, match="image_format"):
        preprocess(image, image_format="RGBA")
    with pytest.raises(InputError, match="3 values"):
        preprocess(image, pixel_mean=(1.0, 2.0))
    with pytest.raises(InputError, match="load_image"):
        preprocess("some/path.png")
    with pytest.raises(InputError, match="1x3000"):
        preprocess(np.zeros((1, 3000, 3), np.uint8))
