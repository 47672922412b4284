"""conv2d 3x3, stride 1 -> Winograd F(m x m, 3 x 3): tile transforms around m-fewer-MAC GEMMs.

A 3x3 convolution's GEMM over an im2col matrix does 9 multiply-adds per
input channel, output channel and pixel. Winograd's minimal filtering
(`rlx.passes.winograd`) computes an m x m block of outputs from an
alpha x alpha input tile (alpha = m + 2) with alpha² products per channel
pair, so the channel-mixing work becomes alpha² independent GEMMs
``M[a,b] = U[a,b] @ V[a,b]`` ([O, C] x [C, tiles]) with alpha²/m² = 2.25
(m = 2) or 4 (m = 4) times fewer multiply-adds than im2col. The price is a
linear transform of every input tile before the GEMMs and of every output
tile after, both cheap (small integer coefficients, separable by rows and
columns) and memory-bound; and the weight transform ``U = G w Gᵀ``, which
is a weight-only expression that constant folding turns into derived
weights computed once at bind time.

Everything is written with general ops, so every backend runs it and the
fusion passes compile the transforms into strided elementwise kernels:

    xp = pad(x)                                  to m*tiles + 2 per spatial axis
    Q  = sum_j BT[b,j] * xp[..., j::m]           column transform  [N, C, b, Hp, TW]
    V  = sum_i BT[a,i] * Q[..., i::m, :]         row transform     [C, a, b, N*TH*TW]
    M  = U @ V                                   one matmul batched over the alpha² (a, b)
    Z  = sum_b AT[s,b] * M[a, b]                 output transform, columns
    y  = sum_a AT[r,a] * Z[a] + bias             ... and rows, written as [N, O, TH, r, TW, s]
                                                 (depth-to-space), cut to the output size

Each line is one fused elementwise kernel: the coefficients are small
constant tables broadcast along one axis (constant-folded into derived
weights), laid out so that they vary only along the outer dims of the
kernel's rows. The strided (step m) reads happen once, in the first
transform, on the smallest tensor; the second reads contiguously.

Any padding works (the tile grid covers the padded input and the extra
bottom/right zeros only produce outputs that are cut away), as do sizes not
divisible by m. Chosen by `PassOptions.winograd` (the output tile m: 0 off,
2 or 4; the compile profile's ``winograd`` field, default 4), never by
matching any model's shapes; small convolutions (fewer than `MIN_CHANNELS`
input or output channels) keep the im2col GEMM, whose one kernel beats the
transforms' several there.

Accuracy: F(4, 3) rounds more than im2col (its transforms scale values by up
to 8). With the points 0, ±1, 2, -1/2 (see `rlx.passes.winograd`) the SAM3
neck's largest error against the official module went from 1.1e-5 to
2.9e-5 (relative L2 1.1e-6 -> 2.4e-6); the points 0, ±1, ±2 gave 1e-4.
F(2, 3) stays close to im2col.
"""

from __future__ import annotations

from rlx.ir.graph import Graph
from rlx.passes.rewrite import rewrite
from rlx.passes.winograd import matrices

#: convolutions with fewer input or output channels than this stay on the im2col GEMM
MIN_CHANNELS = 16


def _lincomb(b, coefs, terms):
    """sum_k coefs[k] * terms[k], zero terms left out (the weight transform)."""
    acc = None
    for c, t in zip(coefs, terms):
        if c == 0:
            continue
        term = t if c == 1 else b.mul(t, float(c))
        acc = term if acc is None else b.add(acc, term)
    return acc


def _table(b, values, axis: int, rank: int):
    """A small constant vector laid along `axis` of a rank-`rank` tensor (size 1 elsewhere).

    Built as a concat of one-element constants, so constant folding turns it into a
    derived weight; kernels read it broadcast (once per row, where it does not vary)."""
    vec = b.concat(*[b.const(float(v), shape=(1,)) for v in values], axis=0)
    shape = [1] * rank
    shape[axis] = len(values)
    return b.reshape(vec, shape=tuple(shape))


def _transform(b, coef, terms, axis: int):
    """out[..., a (at `axis`), ...] = sum_k coef[a, k] * terms[k] (terms size 1 at `axis`):
    one elementwise expression, so one fused kernel computes every a at once."""
    rank = terms[0].type.rank
    acc = None
    for k, t in enumerate(terms):
        col = coef[:, k]
        if not col.any():
            continue
        term = b.mul(t, _table(b, col, axis, rank))
        acc = term if acc is None else b.add(acc, term)
    return acc


def applies(node, m: int) -> bool:
    if node.op != "conv2d" or not m:
        return False
    a = node.attrs
    o, c, kh, kw = node.inputs[1].shape
    return ((kh, kw) == (3, 3) and a["stride"] == (1, 1) and a["dilation"] == (1, 1)
            and a["groups"] == 1 and min(o, c) >= MIN_CHANNELS)


def winograd_conv(b, x, w, bias, padding, m: int):
    """The graph of conv2d(x, w[O, C, 3, 3], bias, stride 1, padding) as F(m x m, 3 x 3)."""
    at, g, bt = matrices(m)
    alpha = m + 2
    n, c, h, wd = x.shape
    o = w.shape[0]
    ph, pw = padding
    oh, ow = h + 2 * ph - 2, wd + 2 * pw - 2
    th, tw = -(-oh // m), -(-ow // m)
    hp, wp = m * th + 2, m * tw + 2
    nt = n * th * tw

    # weights: U[a, b] = sum_kl G[a,k] G[b,l] w[:, :, k, l] -> [alpha², O, C], folded at bind
    taps = [b.reshape(b.slice(w, starts=[0, 0, k, l], ends=[o, c, k + 1, l + 1]), shape=(o, c))
            for k in range(3) for l in range(3)]
    u = b.concat(*[b.reshape(_lincomb(b, [g[a, k] * g[bb, l] for k in range(3)
                                          for l in range(3)], taps), shape=(1, o, c))
                   for a in range(alpha) for bb in range(alpha)], axis=0)

    # input tiles, columns first (the strided reads, on the smaller tensor):
    # Q[n, c, b, h, tw] = sum_j BT[b, j] * xp[n, c, h, m*tw + j]
    pads = [0, 0, 0, 0, ph, hp - h - ph, pw, wp - wd - pw]
    xp = b.pad(x, pads=pads) if any(pads) else x
    cols = [b.reshape(b.slice(xp, starts=[0, 0, 0, j], ends=[n, c, hp, j + m * (tw - 1) + 1],
                              steps=[1, 1, 1, m]), shape=(n, c, 1, hp, tw))
            for j in range(alpha)]
    q = _transform(b, bt, cols, axis=2)                                  # [N, C, alpha, Hp, TW]
    # ... then rows, contiguous along tw: V[c, a, b, n, th, tw] = sum_i BT[a, i] *
    # Q[n, c, b, m*th + i, tw], laid out [C, alpha², N*TH*TW] for the GEMM
    rows = []
    for i in range(alpha):
        t = b.slice(q, starts=[0, 0, 0, i, 0], ends=[n, c, alpha, i + m * (th - 1) + 1, tw],
                    steps=[1, 1, 1, m, 1])
        t = b.transpose(t, perm=(1, 2, 0, 3, 4))                         # [C, alpha, N, TH, TW]
        rows.append(b.reshape(t, shape=(c, 1, alpha, n, th, tw)))
    v = _transform(b, bt, rows, axis=1)                                  # [C, a, b, N, TH, TW]
    v = b.transpose(b.reshape(v, shape=(c, alpha * alpha, nt)), perm=(1, 0, 2))

    mm = b.matmul(u, v)                                                  # [alpha², O, N*TH*TW]

    # output tiles, columns first: Z[o, a, nt, s] = sum_b AT[s, b] * M[a, b, o, nt], with s
    # innermost so that the row pass below reads (tw, s) contiguously: each output row
    # is a run of m*TW values interleaving the tiles' columns
    mm = b.reshape(mm, shape=(alpha, alpha, o, nt))
    terms = [b.reshape(b.transpose(b.slice(mm, starts=[0, bb, 0, 0], ends=[alpha, bb + 1, o, nt]),
                                   perm=(2, 0, 3, 1)), shape=(o, alpha, nt, 1))
             for bb in range(alpha)]
    z = _transform(b, at, terms, axis=3)                                 # [O, alpha, NT, m]
    # ... then rows, into the output's layout: Y[n, o, th, r, tw, s] = sum_a AT[r, a] *
    # Z[o, a, n, th, tw, s] + bias[o]. The coefficient varies along r, an outer dim of the
    # kernel's rows (constant per row); (tw, s) is read and written contiguously.
    z = b.reshape(z, shape=(o, alpha, n, th, tw, m))
    terms = []
    for a in range(alpha):
        t = b.slice(z, starts=[0, a, 0, 0, 0, 0], ends=[o, a + 1, n, th, tw, m])
        terms.append(b.transpose(t, perm=(2, 0, 3, 1, 4, 5)))          # [N, O, TH, 1, TW, m]
    y = _transform(b, at, terms, axis=3)                                 # [N, O, TH, m, TW, m]
    if bias is not None:
        y = b.add(y, b.reshape(bias, shape=(1, o, 1, 1, 1, 1)))
    y = b.reshape(y, shape=(n, o, th * m, tw * m))
    if (th * m, tw * m) != (oh, ow):
        y = b.slice(y, starts=[0, 0, 0, 0], ends=[n, o, oh, ow])
    return y


def lower_conv_winograd(graph: Graph, options=None) -> Graph:
    m = getattr(options, "winograd", 0) if options is not None else 0

    def visit(node, rw):
        if not applies(node, m):
            return None
        x, w, bias = (rw.map(v) for v in node.inputs)
        with rw.b.scope(node.output.name):
            return [winograd_conv(rw.b, x, w, bias, node.attrs["padding"], m)]

    return rewrite(graph, visit)
