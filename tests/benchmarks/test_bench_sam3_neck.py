"""benchmarks/bench_sam3_neck.py: argument checks that run before anything is compiled."""

from __future__ import annotations

import pytest

from benchmarks import bench_sam3_neck


def test_unknown_part_is_a_usage_error_naming_it(capsys):
    with pytest.raises(SystemExit) as e:
        bench_sam3_neck.main(["--parts", "branch_1x,branch_8x"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "branch_8x" in err and "branch_0_5x" in err and "neck" in err
