"""infer-shapes: re-derive canonical attributes and result types (after hand edits)."""

from __future__ import annotations

import numpy as np
import pytest

from rlx.backends.reference import run_graph
from rlx.errors import VerifyError
from rlx.ir import GraphBuilder, TensorType, print_graph, verify
from rlx.passes.registry import get_pass
from tests.support.opcheck import check_pass, sample_graph


def _chain(batch):
    b = GraphBuilder("chain")
    x = b.input("x", (batch, 3))
    y = b.softmax(b.exp(x), axis=-1)
    b.output(b.reduce_sum(y, axes=(1,)))
    return b.build()


def test_stale_result_types_are_re_derived():
    g = _chain(2)
    g.inputs[0].type = TensorType((5, 3))  # a hand edit: new batch size, stale node types
    with pytest.raises(VerifyError):
        verify(g)
    new = get_pass("infer-shapes")(g)
    verify(new)
    assert new.outputs[0].shape == (5,)
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    np.testing.assert_array_equal(run_graph(new, [x], {})[0], run_graph(_chain(5), [x], {})[0])


def test_non_canonical_attributes_are_canonicalized():
    g = _chain(2)
    g.nodes[1].attrs["axis"] = -1
    g.nodes[2].attrs["axes"] = (-1,)
    with pytest.raises(VerifyError, match="not canonical"):
        verify(g)
    new = get_pass("infer-shapes")(g)
    verify(new)
    assert new.nodes[1].attrs["axis"] == 1 and new.nodes[2].attrs["axes"] == (1,)


@pytest.mark.parametrize("op", ["conv2d", "attention", "slice", "fused", "window_unpartition"])
def test_a_good_graph_is_unchanged(op):
    g = sample_graph(op)
    new = check_pass("infer-shapes", g, exact=True)
    assert print_graph(new) == print_graph(g)
