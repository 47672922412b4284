"""A backend's per-call setting (`run_context`) is entered once per plan call.

The numba backend runs OpenBLAS at one thread while its kernels run (they
split GEMMs over their own threads). Asked for by every GEMM kernel, the
setting was toggled twice per kernel; the plan now enters it once per call
and the kernels' own requests find it already in place.
"""

from __future__ import annotations

import numpy as np

from rlx.backends.common import threads
from rlx.ir import GraphBuilder
from rlx.runtime import compile_graph
from rlx.runtime.profile import PRESETS


class _FakeBlas:
    """Stands in for numpy's OpenBLAS thread setter/getter and records the calls."""

    def __init__(self, n: int):
        self.n = n
        self.sets: list[int] = []

    def set(self, n: int) -> None:
        self.sets.append(n)
        self.n = n

    def get(self) -> int:
        return self.n


def _chain(b, n_gemms: int):
    x = b.input("x", (64, 32))
    for i in range(n_gemms):
        x = b.relu(b.matmul(x, b.weight(f"w{i}", (32, 32))))
    b.output(x)


def test_openblas_is_set_once_per_call_and_restored(monkeypatch):
    b = GraphBuilder("gemms")
    _chain(b, 5)
    graph = b.build()
    rng = np.random.default_rng(0)
    weights = {f"w{i}": rng.standard_normal((32, 32)).astype(np.float32) / 6 for i in range(5)}
    compiled = compile_graph(graph, PRESETS["numba"].replace(threads=2), weights)
    assert sum(k is not None for k in compiled.plan.kernels) == 5
    fake = _FakeBlas(4)
    monkeypatch.setattr(threads, "_blas", lambda: (fake.set, fake.get))
    x = rng.standard_normal((64, 32)).astype(np.float32)
    (got,) = compiled(x)
    assert fake.sets == [1, 4] and fake.n == 4  # one thread for the call, then restored
    want = x
    for i in range(5):
        want = np.maximum(want @ weights[f"w{i}"], 0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_reference_plans_have_no_run_context():
    b = GraphBuilder("gemms")
    _chain(b, 1)
    compiled = compile_graph(b.build(), "reference", {"w0": np.eye(32, dtype=np.float32)})
    assert compiled.plan.run_context is None
