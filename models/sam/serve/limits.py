"""`ServeLimits`: every bound the server puts on what a client may ask of it.

One frozen record, filled from ``rlx serve``'s options, so the app, the
upload reader and the embedding cache read the same numbers and a test can
build a server with tiny limits to exercise each refusal.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ServeLimits", "MB"]

MB = 1024 * 1024


@dataclass(frozen=True)
class ServeLimits:
    #: largest upload request body (the multipart body around the file), bytes
    max_upload_bytes: int = 50 * MB
    #: largest image, width x height, checked from the header before decoding
    max_pixels: int = 50_000_000
    #: encoded images kept at most (least recently used dropped first)
    cache_images: int = 16
    #: memory of the kept embeddings (and per-image state) at most, bytes
    cache_bytes: int = 512 * MB

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_pixels", "cache_images", "cache_bytes"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ServeLimits.{name} must be at least 1, "
                                 f"got {getattr(self, name)}")
