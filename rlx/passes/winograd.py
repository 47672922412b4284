"""Winograd minimal-filtering matrices F(m, r), built from interpolation points.

``y = AT @ ((G @ g) * (BT @ d))`` computes the m outputs of the 1-D
correlation ``y[i] = sum_k g[k] * d[i + k]`` of an r-tap filter g over an
alpha = m + r - 1 sample tile d with alpha multiplications instead of m*r.
The 2-D form nests it: ``Y = AT (G g Gᵀ ⊙ BT d B) A`` for an r x r filter on
an alpha x alpha tile, alpha² products for m² * r² -- F(4x4, 3x3) does 36
where direct convolution does 144 (4x fewer), F(2x2, 3x3) 16 for 36 (2.25x).

Construction (Toom-Cook, transposed): correlation is the transpose of the
linear convolution of an m-vector with g. That convolution evaluates both
polynomials at alpha - 1 finite points and at infinity (the leading
coefficient), multiplies, and interpolates back; transposing the three
steps gives AT = the Vandermonde of the points for degree < m (with the
infinity column), G = the same for degree < r, and BT = the transposed
inverse of the full alpha x alpha evaluation matrix. Every row of BT is
rescaled to small coprime integers and the matching row of G by the
inverse, so the per-pixel input transform (the part run at inference) adds
and scales by small integers; the fractions land in G, which is applied to
the weights once.

Everything is exact (`fractions.Fraction`) and converted to float at the
end. Accuracy falls as m grows (the points spread, the coefficients grow).
For F(4, 3) the textbook points 0, ±1, ±2 are replaced by 0, ±1, 2, -1/2:
in a float32 simulation (256 input channels, unit-variance data) the
largest error fell from 6.6e-5 to 2.4e-5 (im2col: 2.2e-6), and on SAM3's
2x neck branch from 9.7e-5 (at the 1e-4 parity bound) to 2.9e-5. F(6, 3)
is built too (for tests and experiments); the pass offers m = 2 and 4.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import numpy as np

#: interpolation points per output tile size m (r = 3); infinity is always the last point
POINTS = {
    2: (0, 1, -1),
    4: (0, 1, -1, 2, Fraction(-1, 2)),
    6: (0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2)),
}


def _inverse(a: list[list[Fraction]]) -> list[list[Fraction]]:
    """Exact Gauss-Jordan inverse of a small square matrix."""
    n = len(a)
    aug = [row[:] + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(a)]
    for col in range(n):
        pivot = next(r for r in range(col, n) if aug[r][col] != 0)
        aug[col], aug[pivot] = aug[pivot], aug[col]
        p = aug[col][col]
        aug[col] = [v / p for v in aug[col]]
        for r in range(n):
            if r != col and aug[r][col] != 0:
                f = aug[r][col]
                aug[r] = [v - f * w for v, w in zip(aug[r], aug[col])]
    return [row[n:] for row in aug]


def _vandermonde(points, cols: int) -> list[list[Fraction]]:
    """Rows [1, p, p², ...] (cols entries) per finite point, then the infinity row [0, ..., 1]."""
    rows = [[Fraction(p) ** k for k in range(cols)] for p in points]
    rows.append([Fraction(0)] * (cols - 1) + [Fraction(1)])
    return rows


@functools.lru_cache(maxsize=None)
def matrices(m: int, r: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(AT [m, alpha], G [alpha, r], BT [alpha, alpha]) as float64 arrays for F(m, r)."""
    if m not in POINTS or r != 3:
        raise ValueError(f"Winograd F({m}, {r}): known output tiles are "
                         f"{sorted(POINTS)} for r = 3")
    points = POINTS[m]
    alpha = m + r - 1
    assert len(points) == alpha - 1
    at = [list(col) for col in zip(*_vandermonde(points, m))]          # [m, alpha]
    g = _vandermonde(points, r)                                          # [alpha, r]
    c = _inverse(_vandermonde(points, alpha))                            # [alpha, alpha]
    bt = [list(col) for col in zip(*c)]                                  # C transposed
    for j, row in enumerate(bt):  # BT row j -> coprime integers, G row j / the same factor
        den = math.lcm(*(v.denominator for v in row))
        num = math.gcd(*(int(v * den) for v in row))
        scale = Fraction(den, num)
        bt[j] = [v * scale for v in row]
        g[j] = [v / scale for v in g[j]]
    as_array = lambda rows: np.array([[float(v) for v in row] for row in rows])  # noqa: E731
    return as_array(at), as_array(g), as_array(bt)


def correlate_1d(d: np.ndarray, g: np.ndarray, m: int) -> np.ndarray:
    """The m outputs of correlating `g` over the tile `d` by the Winograd identity (tests)."""
    at, gm, bt = matrices(m, len(g))
    return at @ ((gm @ g) * (bt @ d))
