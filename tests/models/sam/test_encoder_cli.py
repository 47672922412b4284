"""`rlx dump-ir sam-vit-b --subgraph encoder --after PASS` shows each stage (CLI subprocess)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _rlx(*args, env=None):
    full = {k: v for k, v in os.environ.items() if not k.startswith("RLX_SAM_DEBUG_")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "rlx.cli", *args], capture_output=True,
                          text=True, cwd=str(ROOT), env=full)


@pytest.mark.parametrize("after, present, absent", [
    (None, ["window_partition(", "attention(", "conv2d(", "linear(", "gather("], []),
    ("lower-conv", ["%patch_embed.conv2d.matmul", "gather("], ["conv2d("]),
    ("lower-windows", ["pad(", "{pads=[0,0,0,6,0,6,0,0]}", "attention("],
     ["window_partition(", "conv2d(", "linear("]),
    ("fold-constants", ["derived @blocks.2.rel_pos.gather: f32[64,64,64]", "attention("],
     ["window_unpartition("]),
])
def test_dump_ir_shows_each_stage(after, present, absent):
    args = ["dump-ir", "sam-vit-b", "--subgraph", "encoder"] + (["--after", after] if after else [])
    res = _rlx(*args)
    assert res.returncode == 0, res.stderr
    text = res.stdout
    assert text.startswith("graph encoder {")
    assert "input %image: f32[1,3,1024,1024]" in text
    for s in present:
        assert s in text, s
    for s in absent:
        assert s not in text, s


def test_dump_ir_neck_and_aliases():
    res = _rlx("dump-ir", "vit_b", "--subgraph", "neck")
    assert res.returncode == 0, res.stderr
    assert "input %tokens: f32[1,64,64,768]" in res.stdout
    assert "@image_encoder.neck.2.weight" in res.stdout


def test_dump_ir_follows_debug_switches():
    res = _rlx("dump-ir", "sam-vit-b", "--subgraph", "encoder",
               env={"RLX_SAM_DEBUG_DEPTH": "2", "RLX_SAM_DEBUG_FORCE_GLOBAL": "1"})
    assert res.returncode == 0, res.stderr
    assert "blocks.1.attention" in res.stdout and "blocks.2." not in res.stdout
    assert "window_partition(" not in res.stdout
    bad = _rlx("dump-ir", "sam-vit-b", env={"RLX_SAM_DEBUG_DEPTH": "x"})
    assert bad.returncode == 2 and "RLX_SAM_DEBUG_DEPTH" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
