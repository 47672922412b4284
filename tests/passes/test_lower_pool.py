"""lower-pool: unpadded max_pool2d -> elementwise maximum of strided slices.

The pass is checked the usual way (reference interpreter before and after,
bit-identical: a maximum is exact), structurally (kh*kw slices and kh*kw - 1
maxima, nothing else), and end to end on the compiled backends, where the
slices must fold into one fused elementwise kernel (no host reduction).
"""

from __future__ import annotations

import numpy as np
import pytest

from rlx.backends.reference import run_graph
from rlx.ir import GraphBuilder
from rlx.passes.lower_pool import MAX_TAPS
from rlx.runtime import compile_graph
from rlx.runtime.profile import PRESETS
from tests.support.opcheck import check_pass


def _pool(xs, **attrs):
    b = GraphBuilder("pool")
    b.output(b.max_pool2d(b.input("x", xs), **attrs))
    return b.build()


LOWERED = [
    ((1, 3, 8, 8), {"kernel": 2}),                     # SAM3's 0.5x branch, small
    ((2, 2, 6, 9), {"kernel": (3, 3)}),
    ((1, 1, 4, 6), {"kernel": (2, 3)}),
    ((1, 2, 5, 5), {"kernel": 1}),
    ((1, 2, 7, 9), {"kernel": 2}),                     # H, W not multiples: floor
    ((1, 2, 8, 8), {"kernel": 2, "stride": 1}),        # overlapping
    ((1, 2, 9, 10), {"kernel": 3, "stride": 2}),       # overlapping, uneven
    ((1, 1, 6, 8), {"kernel": (1, 4), "stride": (1, 2)}),
]


@pytest.mark.parametrize("xs,attrs", LOWERED, ids=lambda v: str(v))
def test_unpadded_pooling_becomes_maxima_of_slices(xs, attrs):
    new = check_pass("lower-pool", _pool(xs, **attrs), exact=True)
    kh, kw = (attrs["kernel"],) * 2 if isinstance(attrs["kernel"], int) else attrs["kernel"]
    taps = kh * kw
    want = {"slice": taps, "maximum": taps - 1} if taps > 1 else {"slice": 1}
    assert new.op_counts() == want


@pytest.mark.parametrize("xs,attrs", [
    ((1, 2, 8, 8), {"kernel": 3, "stride": 2, "padding": 1}),   # padding: -inf borders
    ((1, 2, 8, 8), {"kernel": 2, "padding": 1}),
    ((1, 2, 12, 12), {"kernel": 5}),                            # 25 taps > MAX_TAPS
])
def test_padded_or_huge_poolings_are_left_alone(xs, attrs):
    assert MAX_TAPS < 25
    new = check_pass("lower-pool", _pool(xs, **attrs), exact=True)
    assert new.op_counts() == {"max_pool2d": 1}


@pytest.mark.parametrize("backend", ["llvm", "numba"])
@pytest.mark.parametrize("xs,attrs", [((1, 16, 72, 72), {"kernel": 2}),
                                      ((2, 3, 9, 10), {"kernel": 3, "stride": 2})],
                         ids=lambda v: str(v))
def test_compiled_pooling_is_one_fused_kernel_equal_to_the_reference(backend, xs, attrs,
                                                                     tmp_path):
    g = _pool(xs, **attrs)
    x = np.random.default_rng(0).standard_normal(xs).astype(np.float32)
    want = run_graph(g, [x], {})[0]
    profile = PRESETS[backend].replace(threads=2, cache_dir=str(tmp_path))
    cg = compile_graph(g, profile, weights={})
    np.testing.assert_array_equal(cg(x)[0], want)
    ops = [n.op for n in cg.graph.nodes]
    assert ops == ["fused"] and cg.graph.nodes[0].attrs["kind"] == "elementwise", ops
