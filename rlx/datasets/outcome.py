"""An item of a dataset job, and the outcome of processing it.

An outcome is a plain JSON-able dict, because it crosses process and node
boundaries (pipes, Ray's object store) and is written to disk as is::

    {"key": ..., "digest": ..., "ok": true,  "result": {...}, "seconds": 1.9}
    {"key": ..., "digest": ..., "ok": false, "error": "photo.jpg: cannot ...", ...}

Only errors caused by the input (an `RlxError`, e.g. a corrupt image or a
prompt outside the image, or an `OSError` reading the file) become an
``ok: false`` outcome; anything else is a bug and propagates, stopping the
run (finished items stay in the work folder).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict

from rlx.errors import RlxError

__all__ = ["Item", "item_outcome", "payload_digest"]


def payload_digest(payload: Any) -> str:
    """A stable digest of an item's payload: a finished result is reused only if it matches."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Item:
    """One input: a unique ``key`` (the name in the output), a ``path``, a JSON-able payload."""

    key: str
    path: str
    payload: Any = None

    @property
    def digest(self) -> str:
        """Payload and the file's size and modification time: an image replaced under the
        same name between a run and its resume is processed again, not reused."""
        try:
            st = os.stat(self.path)
            file = [st.st_size, st.st_mtime_ns]
        except OSError:  # unreadable here: the item will fail (or run on another node)
            file = None
        return payload_digest({"payload": self.payload, "file": file})

    def to_dict(self) -> Dict[str, Any]:
        return {"key": self.key, "path": self.path, "payload": self.payload}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Item":
        return cls(d["key"], d["path"], d.get("payload"))


def item_outcome(process: Callable[[Item], Dict[str, Any]], item: Item) -> Dict[str, Any]:
    """Run ``process(item)`` and wrap its result (or its input error) as an outcome."""
    t0 = time.perf_counter()
    base = {"key": item.key, "digest": item.digest}
    try:
        result = process(item)
    except (RlxError, OSError) as e:
        msg = str(e) or type(e).__name__
        return {**base, "ok": False, "error": msg, "seconds": time.perf_counter() - t0}
    return {**base, "ok": True, "result": result, "seconds": time.perf_counter() - t0}
