"""The `rlx` command line, run as a subprocess the way users run it.

Subprocesses are started together and awaited together (they mostly wait on
imports), which keeps this module to a few seconds on two cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from models.example import build_classifier
from rlx.ir import parse, print_graph, verify
from rlx.ir.analysis import to_dot
from rlx.passes import PassManager, PassOptions
from rlx.passes.registry import PASSES, default_pipeline, get_pass

ROOT = Path(__file__).resolve().parents[2]
RLX = [sys.executable, "-m", "rlx.cli"]
PIPELINE = default_pipeline(PassOptions())


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("RLX_PROFILE", None)
    return env


def start(*args, exe=None, cwd=None) -> subprocess.Popen:
    return subprocess.Popen([*(exe or RLX), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(), cwd=cwd or ROOT)


def finish(proc: subprocess.Popen):
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def rlx(*args, **kw):
    return finish(start(*args, **kw))


def assert_one_line_error(code, out, err, command, *fragments):
    assert code == 2, (code, out, err)
    assert out == ""
    assert "Traceback" not in err
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, err
    assert lines[0].startswith(f"rlx {command}: error: "), err
    for f in fragments:
        assert f in lines[0], err


def _expected_after(name: str) -> str:
    options = PassOptions(verify=True)
    pm = PassManager([get_pass(n) for n in default_pipeline(options)], options, stop_after=name)
    return print_graph(pm.run(build_classifier()))


# ---- help, list, version --------------------------------------------------------------


def test_help_lists_every_command_with_a_one_line_description():
    from rlx.cli import BUILTIN
    from rlx.zoo import list_commands

    commands = [(name, help_) for _, name, help_ in BUILTIN]
    commands += [(c.name, c.help) for c in list_commands()]
    procs = [start("--help"), start("--help", exe=[str(Path(sys.executable).parent / "rlx")])]
    for p in procs:
        code, out, err = finish(p)
        assert code == 0 and err == ""
        flat = " ".join(out.split())  # argparse wraps long lines to the terminal width
        for name, help_ in commands:
            assert help_ and "\n" not in help_, f"{name}: help must be one line"
            assert f" {name} {' '.join(help_.split())} " in flat, \
                f"{name}: {help_!r} not listed in:\n{out}"


def test_bare_rlx_prints_help_and_fails():
    code, out, err = rlx()
    assert code == 2 and "usage: rlx" in out and "dump-ir" in out


def test_version_and_list():
    version, everything, passes, presets = (start("--version"), start("list"),
                                            start("list", "passes"), start("list", "presets"))
    code, out, _ = finish(version)
    assert code == 0 and out.startswith("rlx ")
    code, out, err = finish(everything)
    assert code == 0 and err == ""
    assert "example-convnet" in out and "subgraphs: classifier" in out
    from rlx.runtime import PRESETS

    for name in list(PASSES) + list(PRESETS):
        assert f" {name} " in out or f"*{name} " in out, name
    code, out, _ = finish(passes)
    assert code == 0 and "models:" not in out and "dce" in out
    code, out, _ = finish(presets)
    assert code == 0 and "debug" in out and "passes" not in out


# ---- dump-ir -------------------------------------------------------------------------------


def test_dump_ir_of_a_model_is_the_printed_graph():
    code, out, err = rlx("dump-ir", "example-convnet")
    assert code == 0 and err == ""
    assert out == print_graph(build_classifier())
    verify(parse(out))


def test_dump_ir_after_every_pass_of_the_pipeline():
    procs = {name: start("dump-ir", "example-convnet", "--after", name) for name in PIPELINE}
    for name, proc in procs.items():
        code, out, err = finish(proc)
        assert code == 0 and err == "", (name, err)
        assert out == _expected_after(name), name
        again = parse(out)
        verify(again)
    # the stages differ where the passes do something
    assert "conv2d(" not in _expected_after("lower-conv")
    assert "derived @" in _expected_after("fold-constants")


def test_dump_ir_dot_format():
    p1 = start("dump-ir", "example-convnet", "--format", "dot")
    p2 = start("dump-ir", "example-convnet", "-f", "dot", "--after", "dce")
    code, out, err = finish(p1)
    assert code == 0 and err == ""
    assert out == to_dot(build_classifier())
    assert out.startswith('digraph "classifier" {') and out.rstrip().endswith("}")
    assert out.count("->") >= len(build_classifier().nodes)
    code, out, _ = finish(p2)
    assert code == 0 and "im2col" in out and "digraph" in out


def test_dump_ir_of_an_ir_file_and_output_file(tmp_path):
    g = PassManager([get_pass(n) for n in PIPELINE[:PIPELINE.index("fold-constants") + 1]],
                    PassOptions()).run(build_classifier())
    assert g.derived
    src = tmp_path / "stage.rlx"
    src.write_text(print_graph(g))
    out_file = tmp_path / "sub" / "out.rlx"
    out_file.parent.mkdir()
    plain = start("dump-ir", src)
    to_file = start("dump-ir", src, "--after", "dce", "-o", out_file)
    relative = start("dump-ir", "stage.rlx", cwd=tmp_path)
    code, out, err = finish(plain)
    assert code == 0 and err == "" and out == src.read_text()
    code, out, err = finish(to_file)
    assert code == 0 and out == "" and err == ""
    verify(parse(out_file.read_text()))
    assert [p.name for p in tmp_path.joinpath("sub").iterdir()] == ["out.rlx"]  # no temp left
    code, out, _ = finish(relative)
    assert code == 0 and out == src.read_text()


def test_dump_ir_errors_are_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.rlx"
    bad.write_text("graph g {\n  input %x: f32[2]\n  %y: f32[2] = frob(%x)\n  output %y\n}\n")
    unclosed = tmp_path / "unclosed.rlx"
    unclosed.write_text("graph g {\n  input %x: f32[2]\n")
    not_in_pipeline = next((n for n in PASSES if n not in PIPELINE), None)
    cases = [
        (("example-convnet", "--after", "no-such-pass"), ["no pass named 'no-such-pass'",
                                                          "dce"]),
        (("no-such-model",), ["unknown model 'no-such-model'", "example-convnet"]),
        ((tmp_path / "missing.rlx",), ["no such IR file", "missing.rlx"]),
        ((bad,), [f"{bad}:3:16: unknown op 'frob'"]),
        ((unclosed,), [f"{unclosed}:3:1: missing '}}'"]),
        ((tmp_path,), [str(tmp_path)]),
        ((bad, "--subgraph", "x"), ["--subgraph applies to models"]),
        (("example-convnet", "--subgraph", "nope"), ["has no subgraph 'nope'", "classifier"]),
    ]
    if not_in_pipeline:
        cases.append((("example-convnet", "--after", not_in_pipeline),
                      [f"no pass named '{not_in_pipeline}' in this pipeline"]))
    procs = [(start("dump-ir", *args), fragments) for args, fragments in cases]
    for proc, fragments in procs:
        assert_one_line_error(*finish(proc), "dump-ir", *fragments)


def test_dump_ir_usage_errors_exit_2():
    code, out, err = rlx("dump-ir", "example-convnet", "--format", "svg")
    assert code == 2 and "invalid choice: 'svg'" in err and "Traceback" not in err


# ---- convert ------------------------------------------------------------------------------


def test_convert_a_torch_saved_checkpoint(tmp_path):
    import torch
    from safetensors.numpy import load_file

    gen = torch.Generator().manual_seed(0)
    state = {"conv1.weight": torch.randn(4, 3, 3, 3, generator=gen),
             "conv1.bias": torch.randn(4, generator=gen),
             "blocks.0.attn.rel_pos_h": torch.randn(27, 8, generator=gen).to(torch.float16),
             "steps": torch.arange(5)}
    src = tmp_path / "model.pth"
    torch.save(state, src)
    dst = tmp_path / "model.safetensors"
    code, out, err = rlx("convert", src, dst)
    assert code == 0 and err == "", err
    assert str(dst) in out or dst.name in out
    loaded = load_file(str(dst))
    assert set(loaded) == set(state)
    for k, v in state.items():
        np.testing.assert_array_equal(loaded[k], v.numpy())
        assert loaded[k].dtype == v.numpy().dtype


def test_convert_errors_are_one_line(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a zip file at all")
    missing = start("convert", tmp_path / "none.pth", tmp_path / "o.safetensors")
    garbage = start("convert", junk, tmp_path / "o2.safetensors")
    assert_one_line_error(*finish(missing), "convert", "none.pth")
    assert_one_line_error(*finish(garbage), "convert", "junk.pth")
    assert not (tmp_path / "o2.safetensors").exists()


def test_dump_ir_lower_attention_flag(tmp_path):
    from tests.support.opcheck import kitchen_sink

    src = tmp_path / "sink.rlx"
    src.write_text(print_graph(kitchen_sink()))
    kept = start("dump-ir", src, "--after", "lower-attention")
    lowered = start("dump-ir", src, "--after", "lower-attention", "--lower-attention")
    code, out, err = finish(kept)
    assert code == 0 and err == "" and " = attention(" in out
    code, out, err = finish(lowered)
    assert code == 0 and err == "" and " = attention(" not in out and " = softmax(" in out
