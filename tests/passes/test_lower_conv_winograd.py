"""lower-conv-winograd: conv2d 3x3 stride 1 -> Winograd F(m x m, 3 x 3).

Checked three ways: the transform matrices against direct correlation (1-D,
float64: exact up to rounding); the pass by running the graph before and
after on the reference interpreter (shapes not divisible by the tile, every
padding, batches, with and without bias, both tile sizes) plus the expected
structure (one batched matmul over the alpha² tile positions, no im2col); and
end to end on every compiled backend against the reference result of the
un-lowered convolution.
"""

from __future__ import annotations

import numpy as np
import pytest

from rlx.backends.reference import run_graph
from rlx.ir import GraphBuilder
from rlx.passes import PassOptions
from rlx.passes.lower_conv_winograd import MIN_CHANNELS
from rlx.passes.winograd import correlate_1d, matrices
from rlx.runtime import compile_graph
from rlx.runtime.profile import PRESETS
from tests.support.opcheck import check_pass


def _conv(xs, o, bias=True, **attrs):
    b = GraphBuilder("conv")
    x = b.input("x", xs)
    w = b.weight("w", (o, xs[1], 3, 3))
    bb = b.weight("b", (o,)) if bias else None
    b.output(b.conv2d(x, w, bb, **attrs))
    return b.build()


@pytest.mark.parametrize("m", [2, 4, 6])
def test_matrices_compute_correlation(m):
    rng = np.random.default_rng(m)
    for _ in range(20):
        d, g = rng.standard_normal(m + 2), rng.standard_normal(3)
        want = np.array([g @ d[i:i + 3] for i in range(m)])
        np.testing.assert_allclose(correlate_1d(d, g, m), want, rtol=1e-12, atol=1e-12)


def test_input_transform_has_small_integer_coefficients():
    """The per-pixel transform scales by integers (the fractions live in G, on the weights)."""
    for m in (2, 4):
        _, _, bt = matrices(m)
        assert np.array_equal(bt, np.round(bt)) and np.abs(bt).max() <= 5


SHAPES = [  # x shape, out channels, conv attrs
    ((1, 16, 8, 8), 16, {"padding": 1}),          # divisible by both tiles
    ((2, 16, 7, 9), 24, {"padding": 1}),          # batch 2, odd sizes
    ((1, 20, 10, 6), 16, {"padding": 0}),         # no padding
    ((1, 16, 5, 11), 17, {"padding": 2}),         # wide padding, odd channels
    ((1, 16, 3, 3), 16, {"padding": (0, 1)}),     # one output row, uneven padding
]


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("xs,o,attrs", SHAPES, ids=lambda v: str(v))
def test_winograd_matches_the_convolution(xs, o, attrs, bias, m):
    g = _conv(xs, o, bias, **attrs)  # unit-variance weights: outputs ~10, so atol 1e-4 ~ 1e-5 rel
    new = check_pass("lower-conv-winograd", g, PassOptions(winograd=m), rtol=1e-4, atol=1e-4)
    counts = new.op_counts()
    assert "conv2d" not in counts and "im2col" not in counts, counts
    assert counts["matmul"] == 1  # one batched product over the (m+2)² tile positions
    mm = next(n for n in new.nodes if n.op == "matmul")
    assert mm.output.shape[0] == (m + 2) ** 2


@pytest.mark.parametrize("ws_attrs", [
    ((16, 16, 3, 3), {"stride": 2, "padding": 1}),
    ((16, 16, 3, 3), {"dilation": 2, "padding": 2}),
    ((16, 8, 3, 3), {"groups": 2, "padding": 1}),
    ((16, 16, 1, 1), {}),
    ((16, 16, 5, 5), {"padding": 2}),
    ((MIN_CHANNELS - 1, 16, 3, 3), {"padding": 1}),   # too small to pay for the transforms
])
def test_other_convolutions_are_left_alone(ws_attrs):
    ws, attrs = ws_attrs
    b = GraphBuilder("conv")
    x = b.input("x", (1, 16, 9, 9))
    b.output(b.conv2d(x, b.weight("w", ws), b.weight("b", (ws[0],)), **attrs))
    new = check_pass("lower-conv-winograd", b.build(), PassOptions(winograd=4), exact=True)
    assert new.op_counts() == {"conv2d": 1}


def test_option_zero_turns_it_off():
    new = check_pass("lower-conv-winograd", _conv((1, 16, 8, 8), 16, padding=1),
                     PassOptions(winograd=0), exact=True)
    assert new.op_counts() == {"conv2d": 1}


@pytest.mark.parametrize("backend", ["reference", "numba", "llvm"])
@pytest.mark.parametrize("xs,o,attrs", [((1, 32, 18, 18), 32, {"padding": 1}),
                                        ((2, 16, 9, 13), 24, {"padding": 1}),
                                        ((1, 16, 7, 8), 16, {"padding": 0})],
                         ids=lambda v: str(v))
def test_compiled_winograd_equals_the_reference_convolution(backend, xs, o, attrs, tmp_path):
    g = _conv(xs, o, **attrs)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(xs).astype(np.float32)
    weights = {"w": (rng.standard_normal((o, xs[1], 3, 3)) / np.sqrt(9 * xs[1])).astype(np.float32),
               "b": rng.standard_normal(o).astype(np.float32)}
    want = run_graph(g, [x], weights)[0]
    profile = PRESETS[backend].replace(threads=2, cache_dir=str(tmp_path))
    cg = compile_graph(g, profile, weights=weights)
    ops = {n.op for n in cg.graph.nodes}
    assert not ops & {"conv2d", "im2col"}, ops  # the default pipeline took the Winograd form
    got = cg(x)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("winograd,present,absent", [(0, "im2col", "pad"), (2, "pad", "im2col")])
def test_profile_field_chooses_the_form(winograd, present, absent, tmp_path):
    g = _conv((1, 16, 8, 8), 16, padding=1)
    profile = PRESETS["numba"].replace(threads=1, cache_dir=str(tmp_path), winograd=winograd)
    cg = compile_graph(g, profile, weights={"w": np.ones((16, 16, 3, 3), np.float32),
                                           "b": np.zeros(16, np.float32)})
    ops = {n.op for n in cg.graph.nodes}
    assert present in ops and absent not in ops, ops


@pytest.mark.parametrize("bad", [3, 6, -1, 4.0, True, "4"])
def test_profile_rejects_other_tiles(bad):
    from rlx.errors import ProfileError

    with pytest.raises(ProfileError, match="winograd"):
        PRESETS["default"].replace(winograd=bad)
