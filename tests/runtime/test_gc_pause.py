"""`rlx.runtime.gc_pause`: the cyclic collector is off inside, back to its state after.

And the place it is for: unpickling a plan-cache hit runs with the collector
off (a full collection of a large process cost more than the unpickling), and
the collector is on again once `compile_graph` returns.
"""

from __future__ import annotations

import gc
import pickle
import threading

import pytest

from rlx.runtime import compile_graph, plan_cache
from rlx.runtime.gc_pause import gc_paused
from rlx.runtime.profile import PRESETS
from rlx.zoo import get_model


@pytest.fixture(autouse=True)
def collector_on():
    was = gc.isenabled()
    gc.enable()
    yield
    if was:
        gc.enable()
    else:  # pragma: no cover - pytest runs with the collector on
        gc.disable()


def test_off_inside_and_on_after():
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_on_after_an_exception():
    with pytest.raises(ValueError):
        with gc_paused():
            raise ValueError("boom")
    assert gc.isenabled()


def test_nested_pauses_end_with_the_outermost():
    with gc_paused():
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner block must not turn it back on
    assert gc.isenabled()


def test_a_collector_turned_off_by_the_caller_stays_off():
    gc.disable()
    with gc_paused():
        pass
    assert not gc.isenabled()


def test_overlapping_pauses_on_two_threads():
    """Thread A starts a pause, B starts one, A ends: still off until B ends."""
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def a():
        with gc_paused():
            a_in.set()
            b_in.wait(5)
        a_out.set()

    def b():
        a_in.wait(5)
        with gc_paused():
            b_in.set()
            a_out.wait(5)
            seen["after_a"] = gc.isenabled()

    ts = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    assert seen == {"after_a": False}
    assert gc.isenabled()


def test_a_plan_cache_hit_unpickles_with_the_collector_off(tmp_path, monkeypatch):
    spec = get_model("example-convnet")
    graph, weights = spec.build(), spec.synthetic_weights(0)
    profile = PRESETS["llvm"].replace(threads=1, cache_dir=str(tmp_path / "cache"))
    compile_graph(graph, profile, weights)  # cold: stores the plan
    states = []
    real = pickle.loads

    def watching(data, *a, **k):
        states.append(gc.isenabled())
        return real(data, *a, **k)

    monkeypatch.setattr(plan_cache.pickle, "loads", watching)
    cg = compile_graph(graph, profile, weights)
    assert cg.report.plan_from_cache
    assert states == [False]
    assert gc.isenabled()
