"""Seeded random graphs through the whole pipeline: every pass keeps the numbers.

Hand-written pass tests check the rewrites their authors thought of; random
chains of movement, elementwise, norm, GEMM and spatial ops (with random
strides, paddings, groups, window sizes, rank-0 and size-1 tensors) check the
combinations nobody thought of. Each stage is verified, round-tripped through
text and compared with the HIR graph by the reference interpreter, and the
final graph is also compiled and run through the runtime.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from rlx.backends.reference import run_graph
from rlx.ir import GraphBuilder, parse, print_graph, verify
from rlx.passes import PassOptions
from rlx.passes.registry import PASSES, default_pipeline
from rlx.runtime import PRESETS, compile_graph
from tests.support.opcheck import random_inputs, random_weights


def chain_graph(seed: int):
    """A random DAG of movement / elementwise / norm / matmul / reduction ops."""
    r = random.Random(seed)
    b = GraphBuilder(f"chain{seed}")
    vals = [b.input("x", (2, 3, 4)), b.weight("w", (2, 3, 4)), b.input("y", (4,)),
            b.weight("v", (3, 4))]
    n_weights = 0
    for _ in range(r.randint(3, 14)):
        x = r.choice(vals)
        k = r.random()
        shape = x.shape
        if k < 0.15:
            perm = list(range(len(shape)))
            r.shuffle(perm)
            y = b.transpose(x, perm=perm)
        elif k < 0.3:
            y = b.reshape(x, shape=r.choice([shape[::-1], (x.type.numel,), (1,) + shape,
                                             shape + (1,)]))
        elif k < 0.45:
            other = r.choice(vals)
            try:
                y = b.op(r.choice(["add", "mul", "sub", "maximum"]), x, other)
            except Exception:  # shapes that do not broadcast: skip
                continue
        elif k < 0.55:
            y = b.op(r.choice(["exp", "neg", "tanh", "gelu", "relu", "sigmoid"]), x)
        elif k < 0.62:
            y = b.mul(x, r.choice([0.5, 2.0, -1.0]))
        elif k < 0.7 and shape:
            y = b.softmax(x, axis=r.randrange(len(shape)))
        elif k < 0.78 and shape:
            y = b.layer_norm(x, axis=r.randrange(len(shape)))
        elif k < 0.86 and len(shape) >= 2:
            n_weights += 1
            y = b.matmul(x, b.weight(f"m{n_weights}", (shape[-1], r.choice([2, 3, 5]))))
        elif k < 0.93:
            starts = [r.randrange(d) if d > 1 else 0 for d in shape]
            y = b.slice(x, starts=starts, steps=[r.choice([1, 2]) for _ in shape])
        else:
            axes = (r.randrange(len(shape)),) if shape else None
            y = b.reduce_sum(x, axes=axes, keepdims=r.random() < 0.5)
        vals.append(y)
    produced = vals[4:] or vals[:1]
    b.output(*r.sample(produced, min(len(produced), r.randint(1, 3))))
    return b.build()


def spatial_graph(seed: int):
    """One HIR op the lowering passes rewrite, with random geometry."""
    r = random.Random(seed)
    b = GraphBuilder(f"spatial{seed}")
    n, c, h, w = r.choice([1, 2]), r.choice([1, 2, 4]), r.randint(1, 9), r.randint(1, 9)
    x = b.input("x", (n, c, h, w))
    outs = []
    kind = r.choice(["conv", "convt", "pool", "windows", "attention", "linear"])
    try:
        if kind == "conv":
            k = (r.randint(1, 4), r.randint(1, 4))
            s = (r.randint(1, 4), r.randint(1, 4))
            p = (r.randint(0, 2), r.randint(0, 2))
            d = (r.randint(1, 2), r.randint(1, 2))
            if r.random() < 0.4:
                s, p, d = k, (0, 0), (1, 1)
            g = r.choice([g_ for g_ in (1, 2, 4) if c % g_ == 0])
            o = g * r.randint(1, 3)
            bias = b.weight("b", (o,)) if r.random() < 0.5 else None
            y = b.conv2d(x, b.weight("w", (o, c // g) + k), bias, stride=s, padding=p,
                         dilation=d, groups=g)
        elif kind == "convt":
            k = (r.randint(1, 3), r.randint(1, 3))
            s = k if r.random() < 0.5 else (r.randint(1, 3), r.randint(1, 3))
            g = r.choice([g_ for g_ in (1, 2) if c % g_ == 0])
            y = b.conv_transpose2d(x, b.weight("w", (c, r.randint(1, 3)) + k), None,
                                   stride=s, groups=g)
        elif kind == "pool":
            k = (r.randint(1, 3), r.randint(1, 3))
            s = k if r.random() < 0.5 else (r.randint(1, 3), r.randint(1, 3))
            y = b.max_pool2d(x, kernel=k, stride=s,
                             padding=(r.randint(0, k[0] // 2), r.randint(0, k[1] // 2)))
        elif kind == "windows":
            t = b.transpose(x, perm=(0, 2, 3, 1))
            ws = r.randint(1, 5)
            parts = b.window_partition(t, window=ws)
            y = b.window_unpartition(b.gelu(parts), window=ws, height=h, width=w)
            outs.append(parts)
        elif kind == "attention":
            q = b.reshape(x, shape=(n * c, h, w))
            nk = r.randint(1, 6)
            k_ = b.input("k", (n * c, nk, w))
            v = b.input("v", (n * c, nk, r.randint(1, 4)))
            if r.random() < 0.5:
                kh = r.choice([d for d in (1, 2, 3) if nk % d == 0])
                y = b.attention(q, k_, v, b.input("rh", (n * c, h, kh)),
                                b.input("rw", (n * c, h, nk // kh)), scale=0.3)
            else:
                y = b.attention(q, k_, v, scale=0.7)
        else:
            t = b.transpose(x, perm=(0, 2, 3, 1))
            y = b.linear(t, b.weight("lw", (3, c)), b.weight("lb", (3,)))
    except Exception:  # geometry the op rejects (kernel larger than the input, ...)
        return None
    outs.append(y)
    b.output(*outs)
    return b.build()


def _check(g, seed):
    ins, ws = random_inputs(g, seed), random_weights(g, seed)
    want = run_graph(g, ins, ws)
    for lower in (False, True):
        options = PassOptions(lower_attention=lower, verify=True)
        cur = g
        for name in default_pipeline(options):
            cur = PASSES[name](cur, options)
            verify(cur)
            text = print_graph(cur)
            assert print_graph(parse(text)) == text, name
            for a, w in zip(run_graph(cur, ins, ws), want):
                assert a.shape == w.shape and a.dtype == w.dtype, name
                np.testing.assert_allclose(a, w, rtol=1e-4, atol=1e-5,
                                           err_msg=f"seed {seed}, after {name}")
    for preset in ("reference", "debug"):
        cg = compile_graph(g, PRESETS[preset].replace(backend="reference"), ws)
        for a, w in zip(cg(*ins), want):
            np.testing.assert_allclose(a, w, rtol=1e-4, atol=1e-5, err_msg=preset)


@pytest.mark.parametrize("block", range(4))
def test_random_chains_survive_the_pipeline(block):
    for seed in range(block * 10, block * 10 + 10):
        _check(chain_graph(seed), seed)


@pytest.mark.parametrize("block", range(4))
def test_random_spatial_ops_survive_the_pipeline(block):
    checked = 0
    for seed in range(block * 12, block * 12 + 12):
        g = spatial_graph(seed)
        if g is not None:
            _check(g, seed)
            checked += 1
    assert checked >= 8  # the generator must mostly produce legal graphs
