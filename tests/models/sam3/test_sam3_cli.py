"""`rlx` CLI on the registered `sam3-neck` model, in a subprocess (entry-point discovery)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def rlx(*args):
    return subprocess.run([sys.executable, "-m", "rlx.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_listed():
    r = rlx("list")
    assert r.returncode == 0, r.stderr
    assert "sam3-neck" in r.stdout and "branch_0_5x" in r.stdout


@pytest.mark.parametrize("subgraph, ops", [
    ("branch_4x", ["conv_transpose2d", "gelu", "conv2d"]),
    ("branch_2x", ["conv_transpose2d", "conv2d"]),
    ("branch_1x", ["conv2d"]),
    ("branch_0_5x", ["max_pool2d", "conv2d"]),
])
def test_dump_ir_each_branch(subgraph, ops):
    r = rlx("dump-ir", "sam3-neck", "--subgraph", subgraph)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"graph {subgraph} {{")
    assert "input %feature: f32[1,1024,72,72]" in r.stdout
    for op in ops:
        assert f"= {op}(" in r.stdout, op


def test_dump_ir_after_lowering():
    r = rlx("dump-ir", "sam3-neck", "--subgraph", "branch_4x", "--after", "dce")
    assert r.returncode == 0, r.stderr
    for gone in ("conv_transpose2d(", "conv2d(", "max_pool2d("):
        assert f"= {gone}" not in r.stdout
    assert "= matmul(" in r.stdout and "= im2col(" in r.stdout
    assert "output %" in r.stdout


def test_unknown_subgraph_is_one_line_error():
    r = rlx("dump-ir", "sam3-neck", "--subgraph", "branch_8x")
    assert r.returncode == 2
    assert "branch_8x" in r.stderr and "branch_0_5x" in r.stderr
    assert "Traceback" not in r.stderr
