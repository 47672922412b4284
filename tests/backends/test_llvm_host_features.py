"""`target.host_features` asks LLVM once per process: a warm compile asks per kernel (the
bf16 unit check), and each query to LLVM costs a fraction of a millisecond."""

from __future__ import annotations

from rlx.backends.llvm import target


def test_llvm_is_asked_once_and_callers_get_their_own_set(monkeypatch):
    calls = []
    real = target.llvm.get_host_cpu_features

    def counting():
        calls.append(1)
        return real()

    monkeypatch.setattr(target.llvm, "get_host_cpu_features", counting)
    monkeypatch.setattr(target, "_host_features", None)
    first = target.host_features()
    first.add("not-a-feature")  # a caller's set is its own
    second = target.host_features()
    assert len(calls) == 1
    assert "not-a-feature" not in second
    assert second == {f[1:] for f in real().flatten().split(",") if f.startswith("+")}
