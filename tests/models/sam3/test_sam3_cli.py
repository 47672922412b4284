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
    # the 3x3 conv takes the Winograd form: no im2col, the product batched over the 36
    # tile positions of F(4x4, 3x3)
    assert "= matmul(" in r.stdout and "= im2col(" not in r.stdout
    assert "f32[36,256," in r.stdout
    assert "output %" in r.stdout


def test_unknown_subgraph_is_one_line_error():
    r = rlx("dump-ir", "sam3-neck", "--subgraph", "branch_8x")
    assert r.returncode == 2
    assert "branch_8x" in r.stderr and "branch_0_5x" in r.stderr
    assert "Traceback" not in r.stderr


def test_bench_times_the_official_module_beside_rlx():
    import json

    r = rlx("bench", "sam3-neck", "-s", "branch_0_5x", "-p", "reference", "--peer", "torch",
            "-n", "1", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["rows"]
    assert [(row["subgraph"], row["profile"]) for row in rows] == \
        [("branch_0_5x", "reference"), ("branch_0_5x", "torch")]
    assert rows[1]["median_s"] > 0 and rows[1]["flops"] == rows[0]["flops"]


def test_torch_peer_computes_the_same_branch():
    import numpy as np

    from models.sam3.official import torch_peer
    from rlx.backends.reference import run_graph
    from rlx.zoo import get_model

    spec = get_model("sam3-neck")
    weights = spec.synthetic_weights(3)
    x = spec.inputs_for("branch_1x", 3)
    (ours,) = run_graph(spec.build("branch_1x"), x, weights)
    (theirs,) = torch_peer("branch_1x", weights, 2)(*x)
    assert np.abs(ours - theirs).max() < 1e-4
    assert torch_peer("not_a_branch", weights, 2) is None


def test_bench_unknown_peer_is_one_line():
    r = rlx("bench", "sam3-neck", "-s", "branch_0_5x", "--peer", "onnx", "-n", "1")
    assert r.returncode == 2
    assert "no peer onnx" in r.stderr and "Traceback" not in r.stderr
