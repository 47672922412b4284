"""`rlx bench` as a subprocess: table, JSON, several profiles side by side."""

from __future__ import annotations

import json

from tests.cli.test_compile import finish, start


def test_bench_json_rows_per_subgraph_and_profile():
    code, out, err = finish(start("bench", "example-convnet", "-p", "numba,reference",
                                  "--repeat", "2", "--json"))
    assert code == 0, err
    data = json.loads(out)
    rows = data["rows"]
    assert [(r["subgraph"], r["profile"]) for r in rows] == [("classifier", "numba"),
                                                              ("classifier", "reference")]
    for r in rows:
        assert r["repeat"] == 2 and 0 < r["min_s"] <= r["median_s"]
        assert r["flops"] > 0 and r["gflops"] > 0 and r["peak_rss_mb"] > 10
    assert data["synthetic_weights"] is True


def test_bench_table_and_errors():
    procs = [start("bench", "example-convnet", "--profile", "numba", "-n", "1"),
             start("bench", "example-convnet", "--repeat", "0")]
    code, out, err = finish(procs[0])
    assert code == 0, err
    assert "median ms" in out and "GFLOP/s" in out and "classifier" in out
    code, out, err = finish(procs[1])
    assert code == 2 and "--repeat" in err and "Traceback" not in err
