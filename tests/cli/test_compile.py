"""`rlx compile` and `rlx dump-ir --format kernels` as subprocesses.

The processes of one test are started together and awaited together; they
share the session's kernel cache (tests/conftest.py), so only the first
compile of example-convnet pays numba's compile time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RLX = [sys.executable, "-m", "rlx.cli"]


def _env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("RLX_PROFILE", None)
    env.update(extra)
    return env


def start(*args, **env) -> subprocess.Popen:
    return subprocess.Popen([*RLX, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(**env), cwd=ROOT)


def finish(proc):
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


def test_compile_example_reports_every_subgraph():
    code, out, err = finish(start("compile", "example-convnet", "--profile", "numba"))
    assert code == 0, err
    assert "classifier" in out and "->" in out and "total" in out
    assert "compiling classifier" in err  # progress goes to stderr
    code, out, err = finish(start("compile", "example-convnet", "-p", "numba", "--json"))
    assert code == 0, err
    report = json.loads(out)
    (row,) = report["subgraphs"]
    assert row["subgraph"] == "classifier" and row["backend"] == "numba"
    assert row["nodes_before"] == 9 and row["kernels"] >= 1 and row["fallback_kernels"] == 0
    assert row["from_cache"] is True  # the first command compiled into the same cache


def test_compile_picks_up_profile_next_to_checkpoint(tmp_path):
    ckpt = tmp_path / "weights.safetensors"
    (tmp_path / "weights.rlx.toml").write_text('base = "numba"\nthreads = 1\nfusion = false\n')
    code, out, err = finish(start("compile", "example-convnet", "--checkpoint", ckpt, "--json"))
    assert code == 0, err
    report = json.loads(out)
    assert report["profile"] == "weights.rlx" and report["profile_source"].endswith("weights.rlx.toml")
    (row,) = report["subgraphs"]
    assert row["backend"] == "numba"
    # fusion off in the file: no node count reduction from fusion (9 HIR nodes -> lowered)
    assert row["nodes_after"] > 10


def test_compile_errors_are_one_line():
    procs = [start("compile", "example-convnet", "--subgraph", "nope"),
             start("compile", "no-such-model"),
             start("compile", "example-convnet", "--profile", "no-such-profile")]
    for p, what in zip(procs, ["no subgraph 'nope'", "unknown model", "unknown profile"]):
        code, out, err = finish(p)
        assert code == 2 and what in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1, err


def test_dump_ir_kernels_prints_generated_source():
    code, out, err = finish(start("dump-ir", "example-convnet", "--format", "kernels",
                                  "--profile", "numba"))
    assert code == 0, err
    assert "@njit(" in out and "def kernel(task_lo, task_hi" in out
    code, out, err = finish(start("dump-ir", "example-convnet", "--after", "fuse"))
    assert code == 0, err
    assert 'kind="gemm"' in out and 'kind="norm"' in out
