"""layer_norm (last dim vs F.layer_norm, channel axis vs SAM's official LayerNorm2d),
softmax and the reductions against torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.support import torchvision_shim
from tests.support.opcheck import assert_close, covers, rand, run_op

torchvision_shim.install()
from segment_anything.modeling.common import LayerNorm2d  # noqa: E402

RNG = np.random.default_rng(5)


def _t(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


@covers("layer_norm")
@pytest.mark.parametrize("shape", [(2, 5, 16), (3, 1), (4, 7), (1, 1, 768)])
@pytest.mark.parametrize("affine", ["both", "weight", "bias", "none"])
def test_layer_norm_last_dim_matches_torch(shape, affine):
    x = rand(RNG, shape, scale=3.0) + 2.0  # a non-zero mean the norm has to remove
    n = shape[-1]
    w = rand(RNG, (n,)) if affine in ("both", "weight") else None
    b = rand(RNG, (n,)) if affine in ("both", "bias") else None
    got = run_op("layer_norm", x, w, b, eps=1e-5)
    want = F.layer_norm(_t(x), (n,), None if w is None else _t(w),
                        None if b is None else _t(b), eps=1e-5).numpy()
    assert_close(got, want, rtol=1e-5, atol=1e-5)


@covers("layer_norm")
@pytest.mark.parametrize("shape", [(1, 8, 5, 6), (2, 3, 1, 4), (1, 1, 3, 3)])
def test_layer_norm_over_channels_matches_official_layernorm2d(shape):
    x = rand(RNG, shape, scale=2.0) - 1.0
    c = shape[1]
    ln = LayerNorm2d(c, eps=1e-6).double()
    w, b = rand(RNG, (c,)), rand(RNG, (c,))
    with torch.no_grad():
        ln.weight.copy_(_t(w))
        ln.bias.copy_(_t(b))
        want = ln(_t(x)).numpy()
    got = run_op("layer_norm", x, w, b, axis=1, eps=1e-6)
    assert_close(got, want, rtol=1e-5, atol=1e-5)
    # a negative axis names the same axis
    assert_close(run_op("layer_norm", x, w, b, axis=-3, eps=1e-6), want, rtol=1e-5, atol=1e-5)


@covers("layer_norm")
def test_layer_norm_of_a_constant_row_is_the_bias():
    x = np.full((2, 6), 3.25, np.float32)
    b = rand(RNG, (6,))
    got = run_op("layer_norm", x, None, b, eps=1e-6)
    assert_close(got, np.broadcast_to(b, (2, 6)), rtol=0, atol=1e-7)


@covers("softmax")
@pytest.mark.parametrize("shape,axis", [((3, 7), -1), ((2, 5, 3), 1), ((4, 2, 6), 0),
                                        ((1,), 0), ((2, 1), -1), ((2, 0, 3), -1)])
def test_softmax_matches_torch(shape, axis):
    x = rand(RNG, shape, scale=4.0)
    got = run_op("softmax", x, axis=axis)
    assert_close(got, torch.softmax(_t(x), dim=axis).numpy(), rtol=1e-6, atol=1e-7)


@covers("softmax")
def test_softmax_is_stable_for_large_inputs():
    x = np.array([[1000.0, 1001.0, 999.0], [-1e30, 0.0, -1e30]], np.float32)
    got = run_op("softmax", x)
    assert np.isfinite(got).all()
    assert_close(got, torch.softmax(_t(x), dim=-1).numpy(), rtol=1e-6, atol=1e-7)


REDUCE = {"reduce_sum": lambda t, d, k: torch.sum(t, dim=d, keepdim=k),
          "reduce_mean": lambda t, d, k: torch.mean(t, dim=d, keepdim=k),
          "reduce_max": lambda t, d, k: torch.amax(t, dim=d, keepdim=k)}


@covers(*REDUCE)
@pytest.mark.parametrize("op", sorted(REDUCE))
@pytest.mark.parametrize("shape,axes,keepdims", [
    ((3, 4, 5), (1,), False), ((3, 4, 5), (0, 2), True), ((3, 4, 5), (-1,), False),
    ((3, 4, 5), None, False), ((3, 4, 5), None, True), ((6,), (0,), False),
    ((2, 1, 3), (1,), False), ((2, 0, 3), (2,), True),
])
def test_reductions_match_torch(op, shape, axes, keepdims):
    x = rand(RNG, shape, scale=2.0)
    got = run_op(op, x, axes=axes, keepdims=keepdims)
    dims = tuple(range(len(shape))) if axes is None else axes
    want = REDUCE[op](_t(x), dims, keepdims).numpy()
    assert_close(got, want, rtol=1e-6, atol=1e-6)


@covers("reduce_sum")
def test_reduce_sum_over_an_empty_axis_is_zero_and_integers_stay_integers():
    assert_close(run_op("reduce_sum", np.zeros((3, 0), np.float32), axes=(1,)), np.zeros(3))
    x = RNG.integers(-100, 100, (4, 5)).astype(np.int32)
    got = run_op("reduce_sum", x, axes=(0,))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, x.sum(axis=0))


@covers("reduce_mean")
def test_reduce_mean_accumulates_without_float32_drift():
    x = np.full((1 << 20,), 0.1, np.float32)
    got = run_op("reduce_mean", x)
    assert abs(float(got) - float(np.float32(0.1))) < 1e-9


@covers("softmax", "layer_norm")
def test_softmax_and_layer_norm_over_an_empty_axis_give_empty_results():
    x = np.zeros((2, 0), np.float32)
    assert run_op("softmax", x, axis=-1).shape == (2, 0)
    assert run_op("layer_norm", x, None, None).shape == (2, 0)
    assert torch.softmax(torch.zeros(2, 0), dim=-1).shape == (2, 0)  # what torch does too
