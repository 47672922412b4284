"""lower-pool: non-overlapping max_pool2d -> reshape + reduce_max."""

from __future__ import annotations

import pytest

from rlx.ir import GraphBuilder
from tests.support.opcheck import check_pass


def _pool(xs, **attrs):
    b = GraphBuilder("pool")
    b.output(b.max_pool2d(b.input("x", xs), **attrs))
    return b.build()


@pytest.mark.parametrize("xs,kernel", [((1, 3, 8, 8), 2), ((2, 2, 6, 9), (3, 3)),
                                       ((1, 1, 4, 6), (2, 3)), ((1, 2, 5, 5), 1)])
def test_non_overlapping_pooling_becomes_a_reduction(xs, kernel):
    new = check_pass("lower-pool", _pool(xs, kernel=kernel), exact=True)
    counts = new.op_counts()
    assert counts == {"reshape": 1, "reduce_max": 1}


@pytest.mark.parametrize("xs,attrs", [
    ((1, 2, 8, 8), {"kernel": 3, "stride": 2, "padding": 1}),   # overlapping + padding
    ((1, 2, 8, 8), {"kernel": 2, "padding": 1}),                # padding
    ((1, 2, 7, 8), {"kernel": 2}),                              # H not a multiple
    ((1, 2, 8, 8), {"kernel": 2, "stride": 1}),                 # overlapping
])
def test_other_poolings_are_left_alone(xs, attrs):
    new = check_pass("lower-pool", _pool(xs, **attrs), exact=True)
    assert new.op_counts() == {"max_pool2d": 1}
