"""A compiled graph writes a large output over the previous call's -- only once it is released.

Released means no reference left but the graph's own: an output the caller
still holds, directly, in a container or through a view, must keep its
values whatever later calls compute; one it dropped is reused (same memory,
so no fresh pages to map) and the new values are right.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest

from rlx.backends.reference import run_graph
from rlx.ir import GraphBuilder
from rlx.runtime.compiler import RECYCLE_MIN_BYTES, compile_graph

SHAPE = (512, 1024)  # 2 MB of float32: above the recycling threshold
SMALL = (4, 8)


def _graph():
    b = GraphBuilder("recycled")
    x = b.input("x", SHAPE)
    s = b.input("s", SMALL)
    b.output(b.mul(b.relu(x), 2.0), b.add(s, 1.0))
    return b.build()


def _inputs(seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(SHAPE).astype(np.float32),
            rng.standard_normal(SMALL).astype(np.float32)]


def _want(seed):
    return run_graph(_graph(), _inputs(seed), {})


def test_the_shapes_are_on_the_right_sides_of_the_threshold():
    assert 4 * np.prod(SHAPE) >= RECYCLE_MIN_BYTES > 4 * np.prod(SMALL)


@pytest.mark.parametrize("backend", ["reference", "numba", "llvm"])
def test_held_outputs_keep_their_values_released_ones_are_reused(backend):
    g = compile_graph(_graph(), backend)
    g.bind({})
    held = g(*_inputs(1))
    in_list = [g(*_inputs(2))[0]]
    view = g(*_inputs(3))[0][100:200]
    for seed in (4, 5, 6):
        got = g(*_inputs(seed))
        for a, e in zip(got, _want(seed)):
            np.testing.assert_allclose(a, e, rtol=1e-6)
    # nothing still referenced was written over
    for a, e in zip(held, _want(1)):
        np.testing.assert_allclose(a, e, rtol=1e-6)
    np.testing.assert_allclose(in_list[0], _want(2)[0], rtol=1e-6)
    np.testing.assert_allclose(view, _want(3)[0][100:200], rtol=1e-6)
    # a released output's memory comes back, with the new values in it
    out = g(*_inputs(7))[0]
    addr = out.ctypes.data
    del out
    gc.collect()
    again = g(*_inputs(8))
    assert again[0].ctypes.data == addr
    np.testing.assert_allclose(again[0], _want(8)[0], rtol=1e-6)
    np.testing.assert_allclose(again[1], _want(8)[1], rtol=1e-6)


def _reshaped_graph():
    b = GraphBuilder("recycled_view")
    x = b.input("x", SHAPE)
    b.output(b.reshape(b.mul(b.relu(x), 2.0), shape=(SHAPE[0] * 2, SHAPE[1] // 2)))
    return b.build()


@pytest.mark.parametrize("backend", ["reference", "numba", "llvm"])
def test_an_output_that_reshapes_a_buffer_is_recycled_through_its_base(backend):
    g = compile_graph(_reshaped_graph(), backend)
    g.bind({})

    def want(seed):
        return run_graph(_reshaped_graph(), _inputs(seed)[:1], {})[0]

    # the output itself dropped, but another view of its buffer kept: not reused
    kept = g(_inputs(1)[0])[0].reshape(-1)
    for seed in (2, 3):
        np.testing.assert_allclose(g(_inputs(seed)[0])[0], want(seed), rtol=1e-6)
    np.testing.assert_allclose(kept, want(1).reshape(-1), rtol=1e-6)
    # released entirely: the buffer behind it comes back
    out = g(_inputs(4)[0])[0]
    addr = out.ctypes.data
    del out
    again = g(_inputs(5)[0])[0]
    assert again.ctypes.data == addr
    np.testing.assert_allclose(again, want(5), rtol=1e-6)
