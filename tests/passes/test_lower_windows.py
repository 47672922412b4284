"""lower-windows: window_partition / window_unpartition -> pad/reshape/transpose/slice."""

from __future__ import annotations

import pytest

from rlx.ir import GraphBuilder
from tests.support.opcheck import check_pass


@pytest.mark.parametrize("h,w,ws,padded", [(8, 8, 4, False), (5, 7, 3, True), (14, 14, 14, False),
                                           (3, 3, 4, True)])
def test_windows_lower_to_movement_ops(h, w, ws, padded):
    b = GraphBuilder("win")
    x = b.input("x", (2, h, w, 3))
    parts = b.window_partition(x, window=ws)
    y = b.gelu(parts)  # something per window between the two
    b.output(b.window_unpartition(y, window=ws, height=h, width=w), parts)
    new = check_pass("lower-windows", b.build(), exact=True)
    counts = new.op_counts()
    assert "window_partition" not in counts and "window_unpartition" not in counts
    assert counts["transpose"] == 2
    assert counts.get("pad", 0) == (1 if padded else 0)
    assert counts.get("slice", 0) == (1 if padded else 0)
    assert set(counts) <= {"pad", "reshape", "transpose", "slice", "gelu"}
