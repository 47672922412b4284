"""A one-line progress bar for long work: done/total, items/s, ETA, errors, a note.

Used by dataset jobs (images) and segment-everything (prompt batches, with
"masks kept" as its note). Drawn only on a terminal (a log file or a pipe gets nothing but the final
summary the command prints), redrawn at most a few times a second. The rate
counts the items processed in this run, not the ones reused from the work
folder, so a resumed run shows a true ETA.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Optional

__all__ = ["Progress", "format_duration"]


def format_duration(seconds: float) -> str:
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    WIDTH = 24
    MIN_INTERVAL = 0.2  # seconds between redraws

    def __init__(self, total: int, done: int = 0, label: str = "", unit: str = "images",
                 stream: Optional[IO] = None, enabled: Optional[bool] = None,
                 count_errors: bool = True):
        self.total, self.done, self.errors = total, done, 0
        self.count_errors = count_errors
        #: free text shown after the counts (e.g. "12 masks kept")
        self.note = ""
        self.start_done = done
        self.label, self.unit = label, unit
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.t0 = time.perf_counter()
        self._last = 0.0
        self._width = 0
        self.draw(force=True)

    def line(self) -> str:
        elapsed = time.perf_counter() - self.t0
        now = self.done - self.start_done
        frac = self.done / self.total if self.total else 1.0
        filled = int(self.WIDTH * frac)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        parts = [f"{self.label} [{bar}] {self.done}/{self.total} {self.unit}".strip()]
        if now and elapsed > 0:
            rate = now / elapsed
            parts.append(f"{rate:.2f}/s" if rate < 10 else f"{rate:.0f}/s")
            parts.append(f"ETA {format_duration((self.total - self.done) / rate)}")
        else:
            parts.append("ETA --")
        if self.count_errors:
            parts.append(f"errors {self.errors}")
        if self.note:
            parts.append(self.note)
        return "  ".join(parts)

    def draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        t = time.perf_counter()
        if not force and t - self._last < self.MIN_INTERVAL:
            return
        self._last = t
        text = self.line()
        pad = " " * max(0, self._width - len(text))
        self._width = len(text)
        self.stream.write("\r" + text + pad)
        self.stream.flush()

    def update(self, ok: bool = True) -> None:
        self.done += 1
        if not ok:
            self.errors += 1
        self.draw(force=self.done == self.total)

    def close(self) -> None:
        if self.enabled:
            self.draw(force=True)
            self.stream.write("\n")
            self.stream.flush()
