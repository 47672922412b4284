"""matmul, linear and attention against torch; attention's decomposed relative-position
bias against Meta's own `add_decomposed_rel_pos` / `get_rel_pos`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.support import torchvision_shim
from tests.support.opcheck import assert_close, covers, rand, run_op

torchvision_shim.install()
from segment_anything.modeling.image_encoder import (  # noqa: E402
    add_decomposed_rel_pos, get_rel_pos)

RNG = np.random.default_rng(11)


def _t(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


MATMUL_CASES = [
    # (a shape, b shape, transpose_a, transpose_b)
    ((4, 5), (5, 3), False, False),
    ((5, 4), (5, 3), True, False),
    ((4, 5), (3, 5), False, True),
    ((5, 4), (3, 5), True, True),
    ((2, 4, 5), (5, 3), False, False),            # batch x 2-D
    ((4, 5), (3, 5, 2), False, False),            # 2-D x batch
    ((2, 1, 4, 5), (3, 5, 6), False, False),      # batch broadcasting across ranks
    ((2, 1, 5, 4), (1, 3, 6, 5), True, True),     # broadcasting + both transposes
    ((1, 1), (1, 1), False, False),
    ((3, 1, 7), (3, 7, 1), False, False),         # vector-like matrices
    ((0, 4, 5), (5, 2), False, False),            # empty batch
]


@covers("matmul")
@pytest.mark.parametrize("sa,sb,ta,tb", MATMUL_CASES)
def test_matmul_matches_torch(sa, sb, ta, tb):
    a, b = rand(RNG, sa), rand(RNG, sb)
    got = run_op("matmul", a, b, transpose_a=ta, transpose_b=tb)
    ta_ = _t(a).transpose(-1, -2) if ta else _t(a)
    tb_ = _t(b).transpose(-1, -2) if tb else _t(b)
    assert_close(got, torch.matmul(ta_, tb_).numpy(), rtol=1e-5, atol=1e-5)


@covers("matmul")
def test_matmul_in_integers_and_float64():
    a = RNG.integers(-9, 9, (2, 3, 4)).astype(np.int64)
    b = RNG.integers(-9, 9, (4, 5)).astype(np.int64)
    got = run_op("matmul", a, b)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, a @ b)
    a64, b64 = rand(RNG, (3, 7), np.float64), rand(RNG, (7, 2), np.float64)
    assert_close(run_op("matmul", a64, b64), (_t(a64) @ _t(b64)).numpy(), rtol=1e-13,
                 atol=1e-13)


@covers("linear")
@pytest.mark.parametrize("xs", [(7,), (3, 7), (2, 3, 7), (2, 1, 4, 7), (0, 7)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch(xs, bias):
    x = rand(RNG, xs)
    w = rand(RNG, (5, 7))
    b = rand(RNG, (5,)) if bias else None
    got = run_op("linear", x, w, b)
    want = F.linear(_t(x), _t(w), None if b is None else _t(b)).numpy()
    assert_close(got, want, rtol=1e-5, atol=1e-5)


def _attention_torch(q, k, v, scale, bias=None):
    s = _t(q) @ _t(k).transpose(-1, -2) * scale
    if bias is not None:
        s = s + bias
    return (torch.softmax(s, dim=-1) @ _t(v)).numpy()


@covers("attention")
@pytest.mark.parametrize("b,nq,nk,d,dv", [(1, 5, 5, 8, 8), (6, 3, 7, 4, 5), (2, 1, 1, 3, 2),
                                          (9, 16, 16, 8, 8)])
def test_attention_without_bias_matches_torch(b, nq, nk, d, dv):
    q, k, v = rand(RNG, (b, nq, d)), rand(RNG, (b, nk, d)), rand(RNG, (b, nk, dv))
    scale = d ** -0.5
    got = run_op("attention", q, k, v, scale=scale)
    assert_close(got, _attention_torch(q, k, v, scale), rtol=1e-5, atol=1e-5)
    sdpa = F.scaled_dot_product_attention(_t(q), _t(k), _t(v), scale=scale).numpy()
    assert_close(got, sdpa, rtol=1e-5, atol=1e-5)


@covers("attention")
def test_attention_large_scores_are_stable():
    q = rand(RNG, (2, 4, 8), scale=30.0)
    k = rand(RNG, (2, 6, 8), scale=30.0)
    v = rand(RNG, (2, 6, 3))
    got = run_op("attention", q, k, v, scale=1.0)
    assert np.isfinite(got).all()
    assert_close(got, _attention_torch(q, k, v, 1.0), rtol=1e-4, atol=1e-4)


@covers("attention")
@pytest.mark.parametrize("q_hw,k_hw,batch", [((4, 4), (4, 4), 2), ((3, 5), (3, 5), 5),
                                             ((4, 4), (2, 2), 1), ((2, 3), (4, 6), 1)])
def test_attention_with_decomposed_rel_pos_matches_official(q_hw, k_hw, batch):
    """rel_h/rel_w are SAM's per-query projections onto the relative position tables;
    the official code adds them to the score matrix, rlx passes them to the op."""
    d, dv = 6, 4
    (qh, qw), (kh, kw) = q_hw, k_hw
    q = rand(RNG, (batch, qh * qw, d))
    k = rand(RNG, (batch, kh * kw, d))
    v = rand(RNG, (batch, kh * kw, dv))
    table_h = _t(rand(RNG, (2 * max(qh, kh) - 1, d)))
    table_w = _t(rand(RNG, (2 * max(qw, kw) - 1, d)))
    scale = d ** -0.5
    tq = _t(q)
    r_q = tq.reshape(batch, qh, qw, d)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, get_rel_pos(qh, kh, table_h))
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, get_rel_pos(qw, kw, table_w))
    rel_h = rel_h.reshape(batch, qh * qw, kh).float().numpy()
    rel_w = rel_w.reshape(batch, qh * qw, kw).float().numpy()

    got = run_op("attention", q, k, v, rel_h, rel_w, scale=scale)

    attn = (tq * scale) @ _t(k).transpose(-2, -1)
    attn = add_decomposed_rel_pos(attn, tq, table_h, table_w, (qh, qw), (kh, kw))
    want = (attn.softmax(dim=-1) @ _t(v)).numpy()
    assert_close(got, want, rtol=1e-5, atol=1e-5)
    # and the bias really matters here (the check is not vacuous)
    assert np.abs(got - run_op("attention", q, k, v, scale=scale)).max() > 1e-2
