"""Meta-test: every registered pass is exercised by some test module in tests/passes.

A module counts for a pass if it names the pass in quotes ("lower-conv"),
which is how these tests look passes up (`check_pass("lower-conv", ...)`).
Passes other engineers register bring their own test modules here.
"""

from __future__ import annotations

import pathlib

from rlx.passes.registry import PASSES, default_pipeline

HERE = pathlib.Path(__file__).parent


def test_every_registered_pass_has_a_test():
    sources = {p.name: p.read_text() for p in HERE.glob("test_*.py")
               if p.name != pathlib.Path(__file__).name}
    missing = [name for name in PASSES
               if not any(f'"{name}"' in text for text in sources.values())]
    assert not missing, f"passes with no test module under tests/passes: {missing}"


def test_default_pipeline_names_only_registered_passes():
    for lower in (False, True):
        from rlx.passes import PassOptions

        names = default_pipeline(PassOptions(lower_attention=lower))
        assert set(names) <= set(PASSES), set(names) - set(PASSES)
        assert len(names) == len(set(names))
