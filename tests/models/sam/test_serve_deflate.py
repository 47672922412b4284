"""The PNG writer of ``rlx serve``: its DEFLATE encoder against zlib's decoder, its PNGs
against Pillow's."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from models.sam.serve.deflate import deflate_rows, kernels, zlib_stream
from models.sam.serve.png import mask_png, mask_png_and_area


def _buffers():
    rng = np.random.default_rng(0)
    yield "one byte", np.array([7], np.uint8)
    yield "two bytes", np.array([0, 0], np.uint8)
    for n in (3, 4, 257, 258, 259, 260, 261, 516, 517, 100_000):  # runs at 258's edges
        yield f"{n} zeros", np.zeros(n, np.uint8)
    yield "a run after a literal", np.array([1] + [0] * 300 + [1, 1, 1, 1], np.uint8)
    yield "all 256 values", np.arange(256, dtype=np.uint8)
    yield "random bytes", rng.integers(0, 256, 20_000).astype(np.uint8)
    yield "random runs", np.repeat(rng.integers(0, 256, 2_000), rng.integers(1, 600, 2_000)) \
        .astype(np.uint8)
    yield "sparse speckle", ((rng.random(200_000) < 0.02) * 255).astype(np.uint8)
    # byte i appears 2**i times: an unrestricted Huffman code would give the rarest bytes
    # 18-bit codes, past DEFLATE's 15, so the length limit is exercised
    grouped = np.concatenate([np.full(2 ** i, i, np.uint8) for i in range(17, -1, -1)])
    skewed = np.empty_like(grouped)
    half = (grouped.size + 1) // 2
    skewed[0::2], skewed[1::2] = grouped[:half], grouped[half:]
    assert (skewed[1:] != skewed[:-1]).all()  # no byte repeats its left neighbour: no runs
    yield "power-of-two counts", skewed
    for n in range(1, 30):
        yield f"tiny {n}", rng.integers(0, 3, n).astype(np.uint8)


@pytest.mark.parametrize("name,data", list(_buffers()), ids=lambda v: v if isinstance(v, str)
                         else "")
def test_deflate_round_trips_through_zlib(name, data):
    raw = data.tobytes()
    assert zlib.decompress(deflate_rows(data).tobytes(), wbits=-15) == raw
    assert zlib.decompress(zlib_stream(data)) == raw  # header and Adler-32 checked too


def test_code_lengths_respect_the_limit_and_form_complete_codes():
    _, code_lengths = kernels()
    powers = 2 ** np.arange(30, dtype=np.int64)  # unrestricted: codes up to 29 bits
    cases = [(powers, 15), (powers[:19], 7),
             (np.array([5] + [0] * 20, np.int64), 15),  # one symbol: a second gets a code
             (np.zeros(19, np.int64), 7), (np.arange(286, dtype=np.int64) ** 3, 15)]
    for freq, limit in cases:
        lengths = code_lengths(freq, limit)
        assert lengths.max() <= limit
        assert np.count_nonzero(lengths) >= 2
        assert (lengths[freq > 0] > 0).all()  # every symbol in use has a code
        kraft = sum(2.0 ** -int(v) for v in lengths if v)
        assert kraft == 1.0, (limit, kraft)  # complete: no wasted code space


def test_compresses_masks_as_well_as_zlib():
    """One dynamic block of runs and literals: about zlib's size on mask rows."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:600, :800]
    disc = (yy - 300) ** 2 + (xx - 380) ** 2 < 250 ** 2
    for mask in (disc, disc ^ (rng.random(disc.shape) < 0.02)):
        rows = np.packbits(mask, axis=1)
        rows = np.concatenate([np.full((rows.shape[0], 1), 2, np.uint8),
                               np.diff(rows, axis=0, prepend=0)], axis=1)
        ours = len(zlib_stream(rows))
        theirs = len(zlib.compress(rows.tobytes(), 1))
        assert ours <= 1.1 * theirs, (ours, theirs)


@pytest.mark.parametrize("shape", [(1, 1), (3, 2001), (301, 8), (257, 1030), (600, 800)])
def test_mask_png_decodes_to_the_same_pixels_in_pillow(shape):
    rng = np.random.default_rng(shape[0])
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    disc = (yy - shape[0] / 2) ** 2 + (xx - shape[1] / 3) ** 2 < (min(shape) / 2) ** 2
    for mask in (disc, disc ^ (rng.random(shape) < 0.02), rng.random(shape) < 0.5,
                 np.ones(shape, bool)):
        png, area = mask_png_and_area(mask)
        assert png == mask_png(mask) and area == int(mask.sum())
        with Image.open(io.BytesIO(png)) as im:
            assert im.size == (shape[1], shape[0]) and im.mode == "1"
            np.testing.assert_array_equal(np.asarray(im), mask)
