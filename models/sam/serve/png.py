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

from .deflate import zlib_stream

__all__ = ["mask_png"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_FILTER_UP = 2


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def mask_png(mask: np.ndarray) -> bytes:
    """PNG bytes of a 2-D boolean mask (white = in the mask)."""
    if mask.ndim != 2 or mask.shape[0] < 1 or mask.shape[1] < 1:
        raise ValueError(f"mask_png needs a non-empty 2-D mask, got shape {mask.shape}")
    h, w = mask.shape
    packed = np.packbits(np.asarray(mask, dtype=bool), axis=1)  # [h, ceil(w/8)], MSB first
    rows = np.empty((h, packed.shape[1] + 1), dtype=np.uint8)
    rows[:, 0] = _FILTER_UP
    rows[0, 1:] = packed[0]  # the row above the first one counts as zeros
    np.subtract(packed[1:], packed[:-1], out=rows[1:, 1:])  # uint8: modulo 256, as PNG says
    header = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)  # 1 bit, grayscale, no interlace
    return (_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib_stream(rows))
            + _chunk(b"IEND", b""))
