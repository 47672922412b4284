"""The local engine and `run_job` with a toy function: outcomes, errors, dead workers, resume.

The toy (`toy_jobs.Toy`) stands in for a model so these tests are fast and
exact; the SAM tests (tests/models/sam/test_annotate*.py) run the real thing.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from rlx.datasets import WorkDir, list_images, plan_workers, run_job
from rlx.datasets.engines.local import WorkerError
from rlx.errors import InputError
from tests.datasets.toy_jobs import factory

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def make_files(d, contents):
    d.mkdir(exist_ok=True)
    for name, text in contents.items():
        (d / name).write_text(text)
    return list_images(d, extensions=(".txt",))


def test_plan_workers_from_cores():
    assert plan_workers(2) == (1, 2)
    assert plan_workers(1) == (1, 1)
    assert plan_workers(16) == (4, 4)
    assert plan_workers(16, workers=2) == (2, 8)
    assert plan_workers(16, threads=2) == (8, 2)
    assert plan_workers(2, workers=3, threads=1) == (3, 1)
    with pytest.raises(InputError):
        plan_workers(2, workers=0)


def test_two_workers_give_every_outcome_in_item_order_with_input_errors_listed(tmp_path):
    items = make_files(tmp_path / "src", {"a.txt": "aa", "b.txt": "corrupt", "c.txt": "cccc",
                                          "d.txt": "d", "e.txt": "eeeee"})
    s = run_job(items, factory(), WorkDir(tmp_path / "w"), {"v": 1}, workers=2, threads=3)
    assert {o["result"]["threads"] for o in s.outcomes if o["ok"]} == {3}  # told to the factory
    assert [o["key"] for o in s.outcomes] == ["a.txt", "b.txt", "c.txt", "d.txt", "e.txt"]
    assert [o["ok"] for o in s.outcomes] == [True, False, True, True, True]
    assert [o["result"]["length"] for o in s.outcomes if o["ok"]] == [2, 4, 1, 5]
    assert "not a toy file" in s.outcomes[1]["error"]
    assert [e["key"] for e in s.errors] == ["b.txt"]
    assert os.getpid() not in {o["result"]["pid"] for o in s.outcomes if o["ok"]}
    assert (s.reused, s.processed) == (0, 5)
    # a rerun reuses the four finished ones and retries only the failed one
    s2 = run_job(items, factory(), WorkDir(tmp_path / "w"), {"v": 1}, workers=1)
    assert (s2.reused, s2.processed) == (4, 1)
    assert [o["ok"] for o in s2.outcomes] == [True, False, True, True, True]


def test_a_worker_that_dies_costs_its_item_only(tmp_path):
    items = make_files(tmp_path / "src", {"a.txt": "a", "b.txt": "die", "c.txt": "c"})
    s = run_job(items, factory(), WorkDir(tmp_path / "w"), {}, workers=1)
    assert [o["ok"] for o in s.outcomes] == [True, False, True]
    assert "killed by SIGKILL while processing this image" in s.outcomes[1]["error"]


def test_a_factory_input_error_stops_the_job_with_its_message(tmp_path):
    items = make_files(tmp_path / "src", {"a.txt": "a"})
    with pytest.raises(WorkerError, match="broken checkpoint toy.pth"):
        run_job(items, factory(fail_factory=True), WorkDir(tmp_path / "w"), {}, workers=1)


def test_a_bug_in_the_function_propagates_and_keeps_finished_items(tmp_path):
    items = make_files(tmp_path / "src", {"a.txt": "a", "b.txt": "bug", "c.txt": "c"})
    with pytest.raises(RuntimeError, match="ValueError on b.txt: toy bug"):
        run_job(items, factory(), WorkDir(tmp_path / "w"), {}, workers=1)
    assert set(WorkDir(tmp_path / "w").finished(items)) == {"a.txt"}


def test_killed_run_resumes_and_processes_every_item_exactly_once(tmp_path):
    names = [f"{i:02d}.txt" for i in range(8)]
    make_files(tmp_path / "src", {n: "x" * (i + 1) for i, n in enumerate(names)})
    work, out, log = tmp_path / "w", tmp_path / "out.json", tmp_path / "log.txt"
    items_dir = work / "items"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "tests.datasets.toy_jobs", str(tmp_path / "src"), str(work),
           str(out), str(log), "0.3"]
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and p.poll() is None:
        if items_dir.is_dir() and len(list(items_dir.glob("*.json"))) >= 3:  # complete files only
            break
        time.sleep(0.02)
    os.killpg(p.pid, signal.SIGKILL)  # the driver and its worker, mid-run
    p.wait()
    assert not out.exists(), "the job finished before it could be killed"
    done_before = len([n for n in os.listdir(items_dir) if n.endswith(".json")])
    assert 3 <= done_before < 8
    assert subprocess.run(cmd[:-1] + ["0"], cwd=ROOT, env=env, timeout=120).returncode == 0
    result = json.loads(out.read_text())
    assert [o["key"] for o in result["outcomes"]] == names
    assert [o["result"]["length"] for o in result["outcomes"]] == list(range(1, 9))
    assert (result["reused"], result["processed"]) == (done_before, 8 - done_before)
    # the finished items were not processed again (at most the one in flight at the kill)
    counts = {n: log.read_text().split().count(n) for n in names}
    assert sum(counts.values()) <= 9 and all(c >= 1 for c in counts.values())


def test_ray_engine_without_the_extra_is_one_clear_message(monkeypatch, tmp_path):
    import rlx.datasets.engines.ray as ray_engine

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(InputError) as e:
        ray_engine.import_ray()
    assert "--engine ray needs Ray Data" in str(e.value)
    assert "pip install -e '.[ray]'" in str(e.value)
    items = make_files(tmp_path / "src", {"a.txt": "a"})
    with pytest.raises(InputError, match="pip install"):
        run_job(items, factory(), WorkDir(tmp_path / "w"), {}, engine="ray")
