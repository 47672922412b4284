"""`gather` means the same on every backend: negative indices count from the end, rank-0
indices drop the axis, a negative axis is the axis from the end, and an index outside
[-n, n) is one `InputError` naming the op -- all as `rlx.ir.ops.gather` defines it and
the reference interpreter runs it. Indices are graph inputs (data at run time), so
nothing is folded away before the backend sees the op."""

from __future__ import annotations

import numpy as np
import pytest

from rlx.backends.reference import run_graph
from rlx.errors import InputError
from rlx.ir import GraphBuilder
from rlx.runtime import compile_graph
from rlx.runtime.profile import PRESETS

BACKENDS = ["reference", "numba", "llvm"]
RNG = np.random.default_rng(11)

# (table shape, indices shape, axis, index dtype)
CASES = {
    "negative": ((7, 5), (3, 2), 0, "i64"),
    "rank0-index": ((6, 4), (), 0, "i32"),
    "rank0-result": ((6,), (), 0, "i64"),
    "axis-from-end": ((3, 5, 4), (2,), -1, "i64"),
    "middle-axis": ((2, 9, 3), (4, 1), 1, "i32"),
}


def graph_of(table, idx, axis, idt):
    b = GraphBuilder("gather_case")
    t = b.input("t", table)
    i = b.input("i", idx, idt)
    g = b.gather(t, i, axis=axis)
    b.output(g, b.add(g, b.const(1.0, "f32")))  # and a consumer, fused or not
    return b.build()


def indices(n, shape, idt):
    """Every index from -n to n-1 is likely; both signs for sure when there are two."""
    i = RNG.integers(-n, n, shape)
    if i.size >= 2:
        i.flat[0], i.flat[1] = -1, -n
    return np.asarray(i, dtype=np.int32 if idt == "i32" else np.int64)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("backend", BACKENDS)
def test_gather_matches_numpy_on_every_backend(backend, case):
    table, idx, axis, idt = CASES[case]
    graph = graph_of(table, idx, axis, idt)
    t = RNG.standard_normal(table).astype(np.float32)
    i = indices(table[axis], idx, idt)
    want = np.take(t, i, axis=axis)
    ref = run_graph(graph, [t, i], {})
    np.testing.assert_array_equal(ref[0], want)
    compiled = compile_graph(graph, PRESETS[backend].replace(threads=1), weights={})
    got = compiled(t, i)
    assert got[0].shape == want.shape and got[0].dtype == want.dtype
    np.testing.assert_array_equal(got[0], want)
    np.testing.assert_array_equal(got[1], ref[1])
    assert compiled.report.fallback_kernels == 0  # the backend ran it, not the reference


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [7, -8])
def test_out_of_range_index_is_the_same_error_everywhere(backend, bad):
    graph = graph_of((7, 5), (3,), 0, "i64")
    compiled = compile_graph(graph, PRESETS[backend].replace(threads=1), weights={})
    t = RNG.standard_normal((7, 5)).astype(np.float32)
    with pytest.raises(InputError, match=rf"^gather: index {bad} out of range for axis 0 of "
                                         r"extent 7 \(valid: -7 \.\. 6"):
        compiled(t, np.array([0, bad, 1], np.int64))
    # the plan still works afterwards
    ok = np.array([0, -7, 6], np.int64)
    np.testing.assert_array_equal(compiled(t, ok)[0], t[[0, 0, 6]])
