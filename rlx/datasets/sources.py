"""Which files a dataset job runs over: a folder (walked recursively) or a list file.

Keys (the names images get in the output) are paths relative to the folder,
or the lines of the list file as written, always with ``/`` separators, so an
output made on one machine names the same files on another. Order is sorted
(folder) or the file's order (list), which makes image ids reproducible.

Hidden files and folders (a leading dot) are skipped: editors, sync tools and
our own temporary files live there.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import List

from rlx.errors import InputError

from .outcome import Item

__all__ = ["IMAGE_EXTENSIONS", "list_images"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")


def _walk(root: Path, extensions) -> List[Item]:
    items = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in extensions:
                continue
            path = Path(dirpath) / name
            key = PurePosixPath(*path.relative_to(root).parts).as_posix()
            items.append(Item(key, str(path.absolute())))
    items.sort(key=lambda it: it.key)
    return items


def _read_list(list_file: Path) -> List[Item]:
    try:
        text = list_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read image list {list_file}: {e}") from None
    base = list_file.absolute().parent
    items, seen = [], {}
    for lineno, line in enumerate(text.splitlines(), 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        key = PurePosixPath(*Path(entry).parts).as_posix()
        if key in seen:
            raise InputError(f"{list_file}:{lineno}: {entry!r} is listed twice "
                             f"(first on line {seen[key]})")
        seen[key] = lineno
        path = Path(entry) if os.path.isabs(entry) else base / entry
        items.append(Item(key, str(path)))
    return items


def list_images(src: str | os.PathLike, extensions=IMAGE_EXTENSIONS) -> List[Item]:
    """The images of ``src``: a folder (recursively, by extension) or a text file of paths.

    A list file has one path per line (relative paths are relative to the
    list file; blank lines and ``#`` comments are skipped). A listed file that
    does not exist is not an error here: it becomes that image's error in the
    output, like any unreadable image, and the run goes on.
    """
    src_path = Path(src)
    if src_path.is_dir():
        items = _walk(src_path, tuple(e.lower() for e in extensions))
        if not items:
            raise InputError(f"no images ({', '.join(e[1:] for e in extensions)}) found "
                             f"under {src}")
        return items
    if src_path.is_file():
        if src_path.suffix.lower() in extensions:
            raise InputError(f"{src} is an image; give the folder that holds it, or a text "
                             f"file listing image paths")
        items = _read_list(src_path)
        if not items:
            raise InputError(f"image list {src} names no images")
        return items
    raise InputError(f"no such folder or image list: {src}")
