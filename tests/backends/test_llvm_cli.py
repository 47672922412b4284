"""The llvm backend through the CLI: dump-ir --format llvm/asm, rlx compile, rlx bench.

Subprocesses of one test start together and are awaited together; they share
the session's kernel cache. The asm check is a codegen correctness check: the
hot loop of an elementwise kernel must use registers of the width the profile
chose for the host (zmm on AVX-512 at the default width, ymm with AVX2), i.e.
the O3 pipeline vectorized it as the target was told.
"""

from __future__ import annotations

import json
import re

from rlx.backends.llvm.target import target_for
from tests.cli.test_compile import finish, start

GRAPH = """graph gelu_bias {
  input %x: f32[64,768]
  input %b: f32[768]
  %y: f32[64,768] = add(%x, %b)
  %z: f32[64,768] = gelu(%y)
  %s: f32[64,768] = softmax(%z) {axis=-1}
  output %z, %s
}
"""


def _vector_register() -> str:
    """The register of the width the default profile (device cpu) chose for this host."""
    return {512: "zmm", 256: "ymm", 128: "xmm"}[target_for("cpu").vector_bits]


def test_dump_ir_llvm_and_asm(tmp_path):
    path = tmp_path / "g.rlx"
    path.write_text(GRAPH)
    procs = [start("dump-ir", path, "--format", "llvm", "--profile", "llvm"),
             start("dump-ir", path, "-f", "asm", "-p", "llvm"),
             start("dump-ir", path, "-f", "asm", "-p", "llvm", "-o", tmp_path / "out.s"),
             start("dump-ir", path, "-f", "llvm", "-p", "numba"),
             start("dump-ir", path, "-f", "kernels", "-p", "llvm")]
    code, ir_text, err = finish(procs[0])
    assert code == 0, err
    assert ir_text.startswith("; rlx llvm backend: llvm for cpu")
    assert f"{target_for('cpu').vector_bits}-bit vectors)" in ir_text.splitlines()[0]
    assert "define void @rlx_kernel(" in ir_text
    assert re.search(r"<(8|16) x float>", ir_text), "no vector IR after O3"
    assert "(elementwise)" in ir_text and "(norm)" in ir_text
    code, asm, err = finish(procs[1])
    assert code == 0, err
    reg = _vector_register()
    body = asm.split("(elementwise) ----", 1)[1].split("# ----", 1)[0]
    assert re.search(rf"\tv\w+ps\s[^\n]*%{reg}", body), f"elementwise kernel without {reg}"
    assert not re.findall(r"\bcall\w*\s+\*?(expf|erff|tanhf|exp|erf)\b", asm)
    code, out, err = finish(procs[2])
    assert code == 0 and out == "" and (tmp_path / "out.s").read_text() == asm
    for proc, fmt, backend in ((procs[3], "llvm", "numba"), (procs[4], "kernels", "llvm")):
        code, out, err = finish(proc)
        assert code == 2 and "Traceback" not in err
        assert f"--format {fmt}" in err and f"the {backend} backend" in err


def test_compile_twice_second_is_a_cache_hit():
    code, out, err = finish(start("compile", "example-convnet", "--profile", "llvm"))
    assert code == 0, err
    assert "backend llvm" in out and "classifier" in out
    bits = target_for("cpu").vector_bits
    assert f"device cpu ({target_for('cpu').cpu}, {bits}-bit vectors, " in out
    assert out.splitlines()[0].endswith("precision f32")
    code, out, err = finish(start("compile", "example-convnet", "-p", "llvm", "--json"))
    assert code == 0, err
    assert json.loads(out)["device"]["vector_bits"] == bits
    (row,) = json.loads(out)["subgraphs"]
    assert row["backend"] == "llvm" and row["fallback_kernels"] == 0
    assert row["from_cache"] is True


def test_bench_llvm_numba_and_reference_side_by_side():
    code, out, err = finish(start("bench", "example-convnet", "-p", "llvm,numba,reference",
                                  "--repeat", "2", "--json"))
    assert code == 0, err
    rows = json.loads(out)["rows"]
    assert [(r["subgraph"], r["profile"], r["backend"]) for r in rows] == [
        ("classifier", "llvm", "llvm"), ("classifier", "numba", "numba"),
        ("classifier", "reference", "reference")]
    for r in rows:
        assert 0 < r["min_s"] <= r["median_s"] and r["gflops"] > 0
