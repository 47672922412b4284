"""The fork-join runtime is compiled through the kernel store, like a kernel.

Its object (and the cycle-counter probe's) is linked from the store by the
next process instead of being optimized and code-generated again at the
first parallel kernel. Checked with two fresh processes on one store: the
first compiles, the second reads both objects from disk; both compute the
reference result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import json, sys
import numpy as np
from rlx.ir import GraphBuilder
from rlx.backends.reference import run_graph
from rlx.backends.llvm import forkjoin
from rlx.runtime import compile_graph
from rlx.runtime.profile import PRESETS
b = GraphBuilder("big")
x = b.input("x", (512, 4096))
b.output(b.exp(b.mul(x, x)))
g = b.build()
a = np.random.default_rng(0).standard_normal((512, 4096)).astype(np.float32) * 0.1
cg = compile_graph(g, PRESETS["llvm"].replace(threads=2, cache_dir=sys.argv[1]), weights={})
got = cg(a)[0]
fj = forkjoin._instance
print(json.dumps({"forkjoin": fj is not None, "runtime_from_cache": fj._loaded.from_cache,
                  "ok": bool(np.allclose(got, run_graph(g, [a], {})[0], rtol=1e-6))}))
"""


def run(cache: Path) -> dict:
    res = subprocess.run([sys.executable, "-c", CHILD, str(cache)], cwd=ROOT, text=True,
                         capture_output=True, timeout=300,
                         env={k: v for k, v in os.environ.items() if k != "RLX_CACHE_DIR"})
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_second_process_links_the_runtime_from_the_store(tmp_path):
    first = run(tmp_path)
    assert first == {"forkjoin": True, "runtime_from_cache": False, "ok": True}
    second = run(tmp_path)
    assert second == {"forkjoin": True, "runtime_from_cache": True, "ok": True}
