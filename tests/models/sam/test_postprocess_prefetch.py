"""`postprocess_kernels.prefetch`: numba's one-time load on a background thread.

A `SamPredictor` starts it so that the load overlaps ``set_image``. Checked in
fresh processes (the kernels load once per process): the load runs exactly
once even when the first ``kernels()`` call arrives while the background
thread is still loading, every caller gets the same functions, and
``RLX_SAM_PREFETCH=0`` leaves the load to the first use.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

CHILD = r"""
import json, threading, time
import models.sam.postprocess_kernels as pk
calls = []
real = pk._load
def counting():
    calls.append(threading.current_thread().name)
    time.sleep(0.2)  # the caller below surely arrives mid-load
    return real()
pk._load = counting
from models.sam.model import SamPredictor
started = pk._prefetching is not None
first = pk.kernels()  # may arrive while the prefetch thread loads
if pk._prefetching is not None:
    pk._prefetching.join()
print(json.dumps({"started": started, "calls": calls, "same": first is pk.kernels(),
                  "loaded": first is not None}))
"""

PREDICTOR = r"""
import json, warnings
import models.sam.postprocess_kernels as pk
from models.sam import SamPredictor, build_sam
from models.sam.config import small_config
warnings.simplefilter("ignore")
before = pk._prefetching is not None
SamPredictor(build_sam(small_config(), profile="reference"))
print(json.dumps({"before": before, "after": pk._prefetching is not None}))
"""


def run(code: str, **env) -> dict:
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, **env}, timeout=300)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_first_use_during_prefetch_loads_once():
    code = CHILD.replace("from models.sam.model import SamPredictor\n",
                         "pk.prefetch()\n")
    out = run(code)
    assert out == {"started": True, "calls": ["rlx-sam-postprocess-load"], "same": True,
                   "loaded": True}


def test_prefetch_can_be_turned_off():
    code = CHILD.replace("from models.sam.model import SamPredictor\n", "pk.prefetch()\n")
    out = run(code, RLX_SAM_PREFETCH="0")
    assert out == {"started": False, "calls": ["MainThread"], "same": True, "loaded": True}


def test_a_predictor_starts_the_prefetch():
    out = run(PREDICTOR)
    assert out == {"before": False, "after": True}
