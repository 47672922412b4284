"""The encoded images a server keeps: a least-recently-used cache with two bounds.

Encoding an image is the expensive step (seconds for ViT-B); a click on an
encoded image is cheap (tens of milliseconds). The server therefore keeps
the embeddings of recent images, bounded both by count and by memory (a
ViT-B embedding is 4 MiB; the per-image refine state adds 256 KiB, counted
up front so an entry never grows). Using an image (a click) makes it the
most recent; adding one evicts the least recently used until both bounds
hold again. A client whose image was evicted gets 404 and uploads it again.

Each `ImageEntry` carries its own lock: the state of one image (its
embedding and the previous best low-res mask that ``refine`` feeds back) is
changed by one request at a time, while requests on other images go ahead.
The cache lock is held only for dictionary operations, never while the
model runs.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

__all__ = ["ImageEntry", "EmbeddingCache", "new_image_id"]


def new_image_id() -> str:
    """An unguessable id (64 random bits): one client cannot walk through another's images."""
    return secrets.token_hex(8)


@dataclass(eq=False)
class ImageEntry:
    id: str
    features: np.ndarray                 # [1, C, g, g] float32, read-only
    original_size: Tuple[int, int]       # (h, w) of the uploaded image
    input_size: Tuple[int, int]          # (h, w) inside the model's padded square
    mask_size: int                       # side of a low-res mask (256)
    #: best low-res logits [1, S, S] of the last prediction (``refine`` feeds it back)
    last_logits: Optional[np.ndarray] = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def width(self) -> int:
        return self.original_size[1]

    @property
    def height(self) -> int:
        return self.original_size[0]

    @property
    def nbytes(self) -> int:
        """Memory charged to this entry: the embedding and the refine state it may hold."""
        return int(self.features.nbytes) + 4 * self.mask_size * self.mask_size


class EmbeddingCache:
    """``id -> ImageEntry``, at most ``max_items`` entries and ``max_bytes`` of them."""

    def __init__(self, max_items: int, max_bytes: int):
        if max_items < 1 or max_bytes < 1:
            raise ValueError(f"cache limits must be positive, got {max_items} images, "
                             f"{max_bytes} bytes")
        self.max_items = int(max_items)
        self.max_bytes = int(max_bytes)
        self._entries: "OrderedDict[str, ImageEntry]" = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        #: entries dropped to make room so far (for /api/health and tests)
        self.evictions = 0

    def add(self, entry: ImageEntry) -> List[str]:
        """Insert ``entry`` as the most recent; return the ids evicted to make room.

        An entry larger than ``max_bytes`` on its own is refused (ValueError):
        the server checks at start that one embedding fits.
        """
        if entry.nbytes > self.max_bytes:
            raise ValueError(f"one image needs {entry.nbytes} bytes, more than the cache's "
                             f"{self.max_bytes}")
        evicted = []
        with self._lock:
            old = self._entries.pop(entry.id, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._entries[entry.id] = entry
            self._bytes += entry.nbytes
            while len(self._entries) > self.max_items or self._bytes > self.max_bytes:
                victim_id, victim = self._entries.popitem(last=False)
                self._bytes -= victim.nbytes
                evicted.append(victim_id)
                self.evictions += 1
        return evicted

    def get(self, image_id: str) -> Optional[ImageEntry]:
        """The entry (now the most recent), or None if unknown or evicted."""
        with self._lock:
            entry = self._entries.get(image_id)
            if entry is not None:
                self._entries.move_to_end(image_id)
            return entry

    def remove(self, image_id: str) -> bool:
        with self._lock:
            entry = self._entries.pop(image_id, None)
            if entry is None:
                return False
            self._bytes -= entry.nbytes
            return True

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._entries

    @property
    def nbytes(self) -> int:
        return self._bytes

    def ids(self) -> List[str]:
        """Ids from least to most recently used."""
        with self._lock:
            return list(self._entries)

    def stats(self) -> dict:
        with self._lock:
            return {"images": len(self._entries), "bytes": self._bytes,
                    "max_images": self.max_items, "max_bytes": self.max_bytes,
                    "evictions": self.evictions}
