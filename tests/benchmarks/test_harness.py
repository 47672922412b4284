"""The benchmark harness and the SAM benchmark's task variants (scaling
table). These run the harness for real (one subprocess per measurement) on
a trivial runner; they check plumbing, never timings."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import bench_sam, harness
from benchmarks.harness import Job, RunnerSpec
from benchmarks.peers import _sam_common as common

DUMMY = "tests.support.bench_dummy_runner:work"


def test_job_threads_and_prepare_kwargs_reach_the_child():
    jobs = [
        Job("dummy", "encoder", RunnerSpec.make(DUMMY, size=2), warmup=0, runs=2),
        Job("dummy", "encoder@1t", RunnerSpec.make(DUMMY, size=2), warmup=0, runs=2, threads=1),
        Job("dummy", "prompt@4pt", RunnerSpec.make(DUMMY, size=2, points=4), warmup=0, runs=2),
    ]
    out = harness.run_jobs(jobs, repeat=1, threads=3, log=lambda _: None)
    res = out["results"]
    assert res["encoder"]["dummy"]["status"] == "ok", res["encoder"]["dummy"]
    assert res["encoder"]["dummy"]["info"]["threads"] == 3
    assert res["encoder@1t"]["dummy"]["info"]["threads"] == 1
    # the prepare() without a 'points' parameter still ran (kwarg filtered)
    assert res["prompt@4pt"]["dummy"]["status"] == "ok", res["prompt@4pt"]["dummy"]
    assert res["prompt@4pt"]["dummy"]["info"]["points"] == 4
    assert res["prompt@4pt"]["dummy"]["n_runs"] == 2


def test_task_variants_and_labels():
    v = list(bench_sam.task_variants("encoder", 2, [1, 2], [1, 4]))
    assert [(n, t) for n, _, t, _ in v] == [("encoder@1t", 1), ("encoder", 2)]
    v = list(bench_sam.task_variants("prompt", 2, [1, 2], [1, 4, 16]))
    assert [(n, kw) for n, _, _, kw in v] == [("prompt", {}), ("prompt@4pt", {"points": 4}),
                                               ("prompt@16pt", {"points": 16})]
    assert "1 thread" in bench_sam.task_label("encoder@1t")
    assert "16 points" in bench_sam.task_label("prompt@16pt")
    with pytest.raises(SystemExit, match="--points"):
        bench_sam._int_list("1,x", "--points")


def _ok(t):
    return {"status": "ok", "median_s": t}


def test_scaling_table_ratios():
    report = {
        "meta": {"threads": 2},
        "results": {
            "encoder": {"a": _ok(2.0), "b": _ok(4.0)},
            "encoder@1t": {"a": _ok(3.0), "b": {"status": "error"}},
            "prompt": {"a": _ok(0.010)},
            "prompt@4pt": {"a": _ok(0.012)},
        },
    }
    lines = bench_sam.format_scaling(report)
    row_a = next(ln for ln in lines if ln.strip().startswith("a "))
    row_b = next(ln for ln in lines if ln.strip().startswith("b "))
    assert "1.50x" in row_a  # 3.0 s at 1 thread / 2.0 s at 2
    assert "12.0 ms" in row_a and "10.0 ms" in row_a
    assert "x" not in row_b.split()[-1]  # no ratio without the 1-thread time
    assert bench_sam.format_scaling({"meta": {"threads": 2},
                                     "results": {"encoder": {"a": _ok(1.0)}}}) == []


def test_prompt_points_are_deterministic_and_inside_the_image():
    xy, labels = common.prompt_point(16)
    assert xy.shape == (16, 2) and labels.shape == (16,) and labels.dtype == np.int64
    assert tuple(xy[0]) == common.PROMPT_POINT_XY and labels[0] == 1
    h, w = common.PROMPT_IMAGE_HW
    assert (xy[:, 0] >= 0).all() and (xy[:, 0] <= w - 1).all()
    assert (xy[:, 1] >= 0).all() and (xy[:, 1] <= h - 1).all()
    assert len({tuple(p) for p in xy}) == 16 and set(labels.tolist()) == {0, 1}
    np.testing.assert_array_equal(common.prompt_point(16)[0], xy)
    with pytest.raises(ValueError):
        common.prompt_point(0)
