"""Masks as 1-bit grayscale PNGs, written directly (no Pillow).

Why not Pillow: a click on a 1500x2000 image returns three full-size masks,
and Pillow's PNG encoder takes 6-17 ms per mask there (it filters and
compresses one byte per pixel), as much as the whole prediction. A mask is
one bit per pixel: packed with ``np.packbits`` it is 375 KB; each row gets
PNG's "Up" filter (byte difference to the row above, so the many rows equal
to their neighbour become zeros) and `deflate` compresses that: runs and
one Huffman block, compiled, 1.4-2.4x less CPU than zlib's run-length
strategy on the same rows (smooth to speckled masks), same size. The file is a plain PNG (bit depth 1,
colour type 0: black outside the mask, white inside) that every decoder
reads.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from .deflate import zlib_parts

__all__ = ["mask_png", "mask_png_and_area"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_FILTER_UP = 2
#: pixels set in a byte of packed bits (numpy >= 2 has np.bitwise_count)
_popcount = getattr(np, "bitwise_count", None)


def _chunk(kind: bytes, *pieces) -> list:
    """A PNG chunk as pieces to join (length, type, data, CRC); no copy of the data."""
    crc = zlib.crc32(kind)
    for piece in pieces:
        crc = zlib.crc32(piece, crc)
    length = sum(len(piece) for piece in pieces)
    return [struct.pack(">I", length), kind, *pieces, struct.pack(">I", crc & 0xFFFFFFFF)]


def mask_png_and_area(mask: np.ndarray):
    """(PNG bytes of a 2-D boolean mask -- white = in the mask --, its area in pixels)."""
    if mask.ndim != 2 or mask.shape[0] < 1 or mask.shape[1] < 1:
        raise ValueError(f"mask_png needs a non-empty 2-D mask, got shape {mask.shape}")
    h, w = mask.shape
    mask = np.asarray(mask, dtype=bool)
    packed = np.packbits(mask, axis=1)  # [h, ceil(w/8)], MSB first, zero padding
    rows = np.empty((h, packed.shape[1] + 1), dtype=np.uint8)
    rows[:, 0] = _FILTER_UP
    rows[0, 1:] = packed[0]  # the row above the first one counts as zeros
    np.subtract(packed[1:], packed[:-1], out=rows[1:, 1:])  # uint8: modulo 256, as PNG says
    # counted on the packed bits: 8x less to read than the bool mask
    area = int(_popcount(packed).sum(dtype=np.int64)) if _popcount else int(mask.sum())
    header = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)  # 1 bit, grayscale, no interlace
    png = b"".join([_SIGNATURE, *_chunk(b"IHDR", header), *_chunk(b"IDAT", *zlib_parts(rows)),
                    *_chunk(b"IEND")])
    return png, area


def mask_png(mask: np.ndarray) -> bytes:
    """PNG bytes of a 2-D boolean mask (white = in the mask)."""
    return mask_png_and_area(mask)[0]
