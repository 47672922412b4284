"""A toy per-item function for the `rlx.datasets` tests (no model: fast and exact).

Each item is a small text file; the function returns its length and the
worker's pid, appends the item's key to ``log`` (so a test can count how
often each item was processed), and reacts to the file's content:
``corrupt`` -> an input error, ``bug`` -> a ValueError (a bug), ``die`` ->
the worker kills itself. Run as a script it is a complete job, for the
resume test that kills it.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import time

from rlx.errors import InputError


class Toy:
    def __init__(self, threads, log=None, delay=0.0, fail_factory=False):
        if fail_factory:
            raise InputError("toy model: broken checkpoint toy.pth")
        self.threads, self.log, self.delay = threads, log, delay

    def __call__(self, item):
        with open(item.path, encoding="utf-8") as f:
            text = f.read()
        if self.log:
            with open(self.log, "a") as f:
                f.write(item.key + "\n")
        if text == "corrupt":
            raise InputError(f"{item.path}: not a toy file")
        if text == "bug":
            raise ValueError("toy bug")
        if text == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(self.delay)
        return {"length": len(text), "payload": item.payload, "pid": os.getpid(),
                "threads": self.threads}


def factory(**kwargs):
    return functools.partial(Toy, **kwargs)


def main(argv):
    from rlx.datasets import WorkDir, list_images, run_job

    src, work, out, log, delay = argv
    items = list_images(src, extensions=(".txt",))
    summary = run_job(items, factory(log=log, delay=float(delay)), WorkDir(work),
                      {"toy": 1}, engine="local", workers=1, threads=1)
    with open(out, "w") as f:
        json.dump({"outcomes": summary.outcomes, "reused": summary.reused,
                   "processed": summary.processed}, f)


if __name__ == "__main__":
    main(sys.argv[1:])
