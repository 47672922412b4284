"""Meta-tests: every registered op has a semantics test, a bad-input case and a sample.

The op test modules mark their tests with ``covers(op, ...)``; this imports them
and collects the marks, so a newly registered op without a test fails here
(not silently passes) wherever the suite is run from.
"""

from __future__ import annotations

import importlib.util
import inspect
import pathlib

from rlx.ir.ops import OPS
from tests.support.opcheck import SAMPLES

HERE = pathlib.Path(__file__).parent


def _covered_ops() -> dict[str, list[str]]:
    covered: dict[str, list[str]] = {}
    for path in sorted(HERE.glob("test_ops_*.py")):
        spec = importlib.util.spec_from_file_location(f"_coverage_{path.stem}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        for name, fn in vars(mod).items():
            if not (name.startswith("test") and inspect.isfunction(fn)):
                continue
            for mark in getattr(fn, "pytestmark", []):
                if mark.name == "covers":
                    for op in mark.args:
                        covered.setdefault(op, []).append(f"{path.name}::{name}")
    return covered


def test_every_registered_op_has_a_semantics_test():
    covered = _covered_ops()
    missing = sorted(set(OPS) - set(covered))
    assert not missing, f"ops with no test marked covers(...): {missing}"
    stale = sorted(set(covered) - set(OPS))
    assert not stale, f"tests claim ops that are not registered: {stale}"


def test_every_registered_op_has_a_bad_input_case():
    path = HERE / "test_shape_errors.py"
    spec = importlib.util.spec_from_file_location("_coverage_shape_errors", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    missing = sorted(set(OPS) - {case[0] for case in mod.BAD})
    assert not missing, f"ops with no bad-input case in test_shape_errors.BAD: {missing}"


def test_every_registered_op_has_a_sample_graph():
    assert sorted(SAMPLES) == sorted(OPS)
