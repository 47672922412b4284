"""How the polynomial coefficients in `mathlib` were obtained (a developer tool, not imported).

Each approximation is a near-minimax weighted polynomial fit in float64
(Lawson's iteratively reweighted least squares on Chebyshev nodes), weighted
so the fitted error is the error that matters for the final float32 result
(relative for exp and tanh, absolute on erf). The coefficients are then
rounded to float32; `python -m rlx.backends.llvm.mathfit` prints them with the
fit error, ready to paste into `mathlib.py`. The float32 accuracy of the
generated code is checked by tests/backends/test_llvm_math.py.
"""

from __future__ import annotations

import math

import numpy as np


def chebyshev_nodes(a: float, b: float, n: int = 4000) -> np.ndarray:
    k = np.arange(n)
    return (a + b) / 2 + (b - a) / 2 * np.cos((2 * k + 1) * np.pi / (2 * n))


def lawson(xs, target, powers, weight, iters: int = 60):
    """Coefficients c (for xs**powers) nearly minimizing max |weight * (poly - target)|."""
    basis = np.stack([xs ** p for p in powers], 1)
    u = np.full(len(xs), 1.0 / len(xs))
    for _ in range(iters):
        sw = np.sqrt(u) * weight
        c, *_ = np.linalg.lstsq(basis * sw[:, None], target * sw, rcond=None)
        err = np.abs((basis @ c - target) * weight)
        u = u * err
        u /= u.sum()
    return c, float(np.max(np.abs((basis @ c - target) * weight)))


def fits() -> dict:
    erf = np.vectorize(math.erf)
    out = {}
    # exp(r) = P(r) on |r| <= ln2/2 (after x = n ln2 + r), one Horner chain, relative error
    r = chebyshev_nodes(-math.log(2) / 2, math.log(2) / 2)
    out["EXP_DIRECT"] = lawson(r, np.exp(r), range(7), 1 / np.exp(r))
    # erf(x) = x P(x^2) on |x| <= 1, relative error
    x = chebyshev_nodes(1e-4, 1.0)
    out["ERF_SMALL"] = lawson(x, erf(x) / x, [2 * k for k in range(7)], x)
    # erf(x) on [1, 3.92] as a polynomial in u = x - 2.46, absolute error (no exp, no division)
    x = chebyshev_nodes(1.0, 3.92)
    out["ERF_MID"] = lawson(x - 2.46, erf(x), range(13), np.ones_like(x))
    # tanh(x) = x + x^3 P(x^2) on |x| <= 0.625, relative error
    x = chebyshev_nodes(1e-4, 0.625)
    out["TANH_SMALL"] = lawson(x, (np.tanh(x) - x) / x ** 3, [2 * k for k in range(6)],
                               x ** 3 / np.tanh(x))
    return out


if __name__ == "__main__":  # pragma: no cover - developer tool
    for name, (c, err) in fits().items():
        coeffs = ", ".join(repr(float(np.float32(v))) for v in c[::-1])
        print(f"# fit error {err:.2e}\n{name} = ({coeffs})  # highest degree first")
