"""The fusion passes, checked from outside: same outputs, verifiable text, and the
kinds of groups each pass is meant to form, on lowered graphs of real shape.

The fusion engineer's own tests cover the grouping rules in detail; this module
is the suite-wide guarantee that every registered fusion pass keeps semantics
on the example model and on the every-lowering graph.
"""

from __future__ import annotations

import pytest

from models.example import build_classifier
from rlx.passes import PassManager, PassOptions
from rlx.passes.registry import LOWERING, CLEANUP, get_pass
from tests.support.opcheck import check_pass, kitchen_sink

ON = PassOptions(lower_attention=True)


def _lowered(build):
    return PassManager([get_pass(n) for n in LOWERING + CLEANUP], ON).run(build())


GRAPHS = {"example": lambda: _lowered(build_classifier), "sink": lambda: _lowered(kitchen_sink)}

# pass -> the fused kinds it must create on both graphs
EXPECTED = {
    "fuse-gemm": {"fused.gemm"},
    "fuse-norm": {"fused.norm"},
    "fuse-elementwise": {"fused.elementwise"},
    "fuse": {"fused.gemm", "fused.norm"},
}


@pytest.mark.parametrize("graph", sorted(GRAPHS))
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fusion_pass_keeps_outputs_and_forms_its_groups(name, graph):
    g = GRAPHS[graph]()
    new = check_pass(name, g, ON, rtol=2e-5, atol=2e-6)
    kinds = {k for k in new.op_counts() if k.startswith("fused.")}
    assert EXPECTED[name] <= kinds, (name, graph, new.op_counts())
    assert len(new.nodes) < len(g.nodes)
    for node in new.nodes:
        if node.op == "fused":
            assert node.body.nodes, "an empty fused group"


def test_fuse_is_off_when_the_options_say_so():
    g = GRAPHS["example"]()
    new = check_pass("fuse", g, PassOptions(fuse=False), exact=True)
    assert not any(k.startswith("fused.") for k in new.op_counts())
