"""The work folder: every finished item's outcome on disk, so nothing done is lost.

Layout (next to the output, ``annotations.json`` -> ``annotations.work/``)::

    settings.json          what the results depend on (model, checkpoint, mode, ...)
    items/<hash>.json      one outcome per item, written atomically when it is done

Each item file is written with a temp file + rename (`rlx.utils.fs`), so a
crash, Ctrl-C or a killed worker leaves either a complete outcome or none.
A rerun reuses an item's outcome only if it succeeded, its key matches and
the digest of its payload (e.g. its prompts) is unchanged; failed items are
tried again (the file may have been fixed). A work folder made with other
settings is refused rather than silently mixed into the new output.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping

from rlx.errors import InputError
from rlx.utils.fs import atomic_write_text

from .outcome import Item

__all__ = ["WorkDir", "work_dir_for"]

SETTINGS = "settings.json"
ITEMS = "items"


def work_dir_for(output: str | os.PathLike) -> Path:
    """The default work folder of an output file: same folder, suffix ``.work``."""
    out = Path(output)
    return out.with_name(out.stem + ".work")


class WorkDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.created = False  # by `open` in this run (a failed start then removes it again)

    def _item_file(self, key: str) -> Path:
        h = hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]
        return self.path / ITEMS / f"{h}.json"

    def open(self, settings: Mapping[str, Any]) -> None:
        """Create the folder, or check that an existing one was made with ``settings``."""
        settings = json.loads(json.dumps(settings))  # normalise (tuples -> lists, ...)
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"work folder {self.path} exists and is not a folder")
        stored_file = self.path / SETTINGS
        if stored_file.is_file():
            try:
                stored = json.loads(stored_file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise InputError(f"work folder {self.path}: unreadable {SETTINGS} ({e}); "
                                 f"delete the folder to start over") from None
            if stored != settings:
                keys = sorted(k for k in set(stored) | set(settings)
                              if stored.get(k) != settings.get(k))
                raise InputError(
                    f"work folder {self.path} holds results made with other settings "
                    f"(differing: {', '.join(keys)}); rerun with the same settings to resume, "
                    f"or delete the folder to start over")
        self.created = not self.path.exists()
        try:
            (self.path / ITEMS).mkdir(parents=True, exist_ok=True)
            if not stored_file.is_file():
                atomic_write_text(stored_file, json.dumps(settings, indent=2, sort_keys=True))
        except OSError as e:
            raise InputError(f"cannot create work folder {self.path}: {e.strerror}") from None

    def write(self, outcome: Mapping[str, Any]) -> None:
        atomic_write_text(self._item_file(outcome["key"]), json.dumps(outcome))

    def read(self, item: Item) -> Dict[str, Any] | None:
        """The stored outcome of ``item`` if it can be reused, else None."""
        try:
            data = json.loads(self._item_file(item.key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # absent, or damaged by something other than us: redo the item
        if (not isinstance(data, dict) or data.get("key") != item.key
                or data.get("digest") != item.digest or data.get("ok") is not True):
            return None
        return data

    def finished(self, items: Iterable[Item]) -> Dict[str, Dict[str, Any]]:
        """key -> stored outcome, for every item whose outcome can be reused."""
        out = {}
        for item in items:
            data = self.read(item)
            if data is not None:
                out[item.key] = data
        return out

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
