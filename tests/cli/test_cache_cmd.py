"""`rlx cache info` and `rlx cache clear` on a store filled by a real compile.

The compile runs in a fresh process (`rlx compile --json`): in this one, kernels
compiled by earlier tests are reused from memory and would never reach the store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlx.backends.common.kernel_store import KernelCache
from rlx.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_info_and_clear(tmp_path, monkeypatch, capsys):
    root = tmp_path / "kc"
    monkeypatch.setenv("RLX_CACHE_DIR", str(root))
    monkeypatch.setenv("RLX_CACHE_MAX_MB", "300")
    done = subprocess.run([sys.executable, "-m", "rlx.cli", "compile", "example-convnet",
                           "--profile", "llvm", "--json"], cwd=ROOT, capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300)
    assert done.returncode == 0, done.stderr
    (report,) = json.loads(done.stdout)["subgraphs"]
    generated = report["kernels"] - report["fallback_kernels"] - report["codeless_kernels"]
    # a half-built entry and a file that is not the store's
    dead = KernelCache(root).entry("numba", "ab" * 32)
    dead.path.mkdir(parents=True)
    (root / "notes.txt").write_text("mine")

    assert main(["cache", "info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["root"] == str(root) and info["max_mb"] == 300
    llvm = [g for g in info["groups"] if g["backend"] == "llvm"]
    assert len(llvm) == 1 and llvm[0]["device"] == "cpu" and llvm[0]["entries"] == generated
    assert info["bytes"] >= llvm[0]["bytes"] > 0
    assert info["incomplete"]["entries"] == 1

    assert main(["cache", "info"]) == 0
    text = capsys.readouterr().out
    assert f"kernel cache: {root}" in text and "cap 300 MB" in text
    assert any(line.split()[:2] == ["llvm", "cpu"] and line.split()[3] == str(generated)
               for line in text.splitlines())
    assert "1 incomplete entries" in text

    assert main(["cache", "clear", "--backend", "numba"]) == 0
    assert "removed 1 numba entries" in capsys.readouterr().out
    assert main(["cache", "clear"]) == 0
    assert f"removed {info['entries']} entries" in capsys.readouterr().out
    assert main(["cache", "info", "--json"]) == 0
    after = json.loads(capsys.readouterr().out)
    assert after["entries"] == 0 and after["bytes"] == 0 and after["groups"] == []
    assert (root / "notes.txt").read_text() == "mine"


def test_a_bad_cap_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RLX_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("RLX_CACHE_MAX_MB", "2GB")
    assert main(["cache", "info"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("rlx cache: error: RLX_CACHE_MAX_MB='2GB': expected a whole number "
                           "of megabytes (0: no cap)")


@pytest.mark.parametrize("backend", ["../..", "llvm/../..", "/etc"])
def test_clear_takes_a_backend_name_never_a_path(tmp_path, monkeypatch, capsys, backend):
    monkeypatch.setenv("RLX_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["cache", "clear", "--backend", backend]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rlx cache: error:") and "not a backend name" in err
    assert "\n" not in err
