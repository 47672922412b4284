"""Reading an uploaded image without trusting it.

Two limits, both answered with 413 before the expensive step:

* the request body: refused from its ``Content-Length`` header when that is
  too large, and counted while it streams in (a missing or lying header
  changes nothing), so a client cannot make the server buffer more than the
  limit;
* the pixel count: Pillow's ``Image.open`` reads only the header, so width
  x height is known before a single pixel is decoded -- a small file that
  claims to be a gigapixel image (a decompression bomb) is refused there.
  Pillow's own bomb guard (``DecompressionBombError``) is caught too.

Anything Pillow cannot identify or decode, and images the model cannot take
(16-bit channels, ...), is a 400. The upload never names a path: the bytes
are decoded from memory.
"""

from __future__ import annotations

import io
from typing import AsyncIterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from rlx.errors import InputError

from ..image import check_bit_depth, load_image
from .errors import ApiError
from .limits import MB

__all__ = ["read_upload", "read_body", "decode_image", "MAX_JSON_BYTES"]

#: largest JSON request body (a prompt is a few hundred bytes)
MAX_JSON_BYTES = 1 * MB

FIELD = "file"


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"upload too large: the limit is {limit / MB:.1f} MB "
                         f"({limit} bytes); see rlx serve --max-upload-mb", FIELD)


async def _limited(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > limit:
            raise _too_large(limit)
        yield chunk


async def read_upload(request, limit: int) -> bytes:
    """The bytes of the multipart field ``file`` of ``request``, at most ``limit`` in the body."""
    from starlette.formparsers import MultiPartException, MultiPartParser

    length = request.headers.get("content-length")
    if length is not None:
        try:
            if int(length) > limit:
                raise _too_large(limit)
        except ValueError:
            raise ApiError(400, f"malformed Content-Length header {length!r}") from None
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise ApiError(400, "upload the image as multipart/form-data with the field 'file' "
                            f"(got Content-Type {ctype or 'none'!r})", FIELD)
    parser = MultiPartParser(request.headers, _limited(request.stream(), limit),
                             max_files=1, max_fields=16)
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise ApiError(400, f"malformed multipart body: {e.message}", FIELD) from None
    try:
        upload = form.get(FIELD)
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "no file in the multipart field 'file'", FIELD)
        data = await upload.read()
    finally:
        await form.close()
    if not data:
        raise ApiError(400, "the uploaded file is empty", FIELD)
    return data


async def read_body(request, limit: int = MAX_JSON_BYTES) -> bytes:
    """A (JSON) request body of at most ``limit`` bytes; 413 beyond, however it is sent."""
    def too_large():
        return ApiError(413, f"request body too large: the limit is {limit} bytes", "body")

    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_large()
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """HxWx3 uint8 RGB of an image file's bytes; 413 above ``max_pixels``, 400 if unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise ApiError(413, f"image too large: {w}x{h} = {w * h / 1e6:.1f} megapixels, "
                                    f"the limit is {max_pixels / 1e6:g} megapixels "
                                    "(see rlx serve --max-megapixels)", FIELD)
            check_bit_depth(img, "uploaded image")  # before load(): see models.sam.image
            img.load()  # decode now: truncated or corrupt data fails here
            return load_image(img)
    except ApiError:
        raise
    except Image.DecompressionBombError as e:
        raise ApiError(413, f"image refused as a decompression bomb: {e}", FIELD) from None
    except UnidentifiedImageError:
        raise ApiError(400, "not an image: Pillow recognises no image format in the upload",
                       FIELD) from None
    except InputError as e:
        raise ApiError(400, str(e), FIELD) from None
    except Exception as e:  # a format plugin may fail on crafted data with any error type
        raise ApiError(400, f"cannot decode the uploaded image: {type(e).__name__}: {e}",
                       FIELD) from None
