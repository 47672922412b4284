"""Every op of the registry on the llvm backend equals the reference interpreter.

The op cases are the numba backend's (`tests.backends.test_numba_ops.CASES`:
one tiny graph per op, the meta-test there and here fails when an op has no
case), compiled with the llvm preset with fusion off (each op reaches the
backend alone) and on. Tolerances as for numba: float32 within rtol 1e-5 /
atol 2e-6 (the generated exp is within ~1 ulp, erf within 1.2e-7 absolute,
see test_llvm_math.py). Further cases here cover what the IR translation must
get right beyond random normal inputs: NaN/inf through max/min/compares/
casts, integer and float64 programs, bool storage, strided and broadcast
operands in the same kernel, and zero-size tensors.
"""

from __future__ import annotations

import numpy as np
import pytest

from rlx.backends.reference import run_graph
from rlx.ir import GraphBuilder
from rlx.ir.ops import OPS
from rlx.runtime import compile_graph
from rlx.runtime.profile import PRESETS
from tests.backends.test_numba_ops import CASES, DECLINED, EXTRA, check, unary

LLVM = PRESETS["llvm"].replace(threads=2)
LLVM_UNFUSED = LLVM.replace(fusion=False, name="llvm-unfused")


def _kinds(compiled):
    return sorted(k.info.kind for k in compiled.plan.kernels if k is not None)


def test_every_op_has_an_llvm_case():
    missing = sorted(set(OPS) - set(CASES))
    assert not missing, f"ops without an llvm backend test: {missing}"


@pytest.mark.parametrize("name", sorted(CASES) + sorted(EXTRA))
@pytest.mark.parametrize("profile", [LLVM_UNFUSED, LLVM], ids=["unfused", "fused"])
def test_op_matches_reference(name, profile):
    build = CASES.get(name) or EXTRA[name]
    compiled = check(build, profile, expect_native=name not in DECLINED)
    assert compiled.report.backend == "llvm"
    if name not in DECLINED:
        assert all(k.startswith("llvm.") for k in _kinds(compiled)), _kinds(compiled)


def test_declined_ops_really_fall_back():
    for name in DECLINED:
        build = CASES.get(name) or EXTRA[name]
        compiled = check(build, LLVM_UNFUSED, expect_native=False)
        assert compiled.report.fallback_kernels >= 1, name


def _run_exact(build_fn, inputs, profile=LLVM_UNFUSED):
    """Compile, run, compare with the reference bit for bit (NaN == NaN)."""
    b = GraphBuilder("special")
    build_fn(b)
    graph = b.build()
    expected = run_graph(graph, inputs, {})
    compiled = compile_graph(graph, profile, weights={})
    assert compiled.report.fallback_kernels == 0
    got = compiled(*inputs)
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_array_equal(g, e)
    return got


SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.5, -2.5, 3e38, -1e-40],
                   np.float32)


def test_nan_and_inf_through_max_min_compares_and_where():
    x = SPECIAL.reshape(1, -1).repeat(9, 0)
    y = SPECIAL.reshape(-1, 1).repeat(9, 1)

    def build(b):
        a, c = b.input("a", x.shape), b.input("c", y.shape)
        b.output(b.maximum(a, c), b.minimum(a, c), b.greater(a, c), b.less(a, c),
                 b.equal(a, c), b.where(b.greater(a, c), a, c), b.relu(a), b.abs(a), b.neg(a))
    _run_exact(build, [x, y])


def test_casts_follow_numpy():
    x = np.array([0.0, -0.0, 1.9, -1.9, 2.5, -7.5, 1e6, np.nan, 0.5], np.float32)
    i = np.array([0, 1, -1, 7, -8, 2 ** 31 - 1, -2 ** 31, 3, 255], np.int32)

    def build(b):
        xf = b.input("x", x.shape)
        xi = b.input("i", i.shape, "i32")
        b.output(b.cast(xf, dtype="bool"), b.cast(b.cast(xf, dtype="bool"), dtype="f32"),
                 b.cast(xi, dtype="f32"), b.cast(xi, dtype="i64"), b.cast(xi, dtype="bool"),
                 b.cast(b.cast(xi, dtype="i64"), dtype="i32"), b.cast(xf, dtype="f64"))
    _run_exact(build, [x, i])
    finite = np.array([0.0, 1.9, -1.9, 2.5, -7.5, 1e6], np.float32)

    def build2(b):
        b.output(b.cast(b.input("x", finite.shape), dtype="i32"))
    _run_exact(build2, [finite])


@pytest.mark.parametrize("profile", [LLVM_UNFUSED, LLVM], ids=["unfused", "fused"])
def test_integer_programs(profile):
    rng = np.random.default_rng(3)
    a = rng.integers(-50, 50, (6, 33)).astype(np.int32)
    c = rng.integers(1, 9, (33,)).astype(np.int32)
    big = rng.integers(-2 ** 40, 2 ** 40, (6, 33)).astype(np.int64)

    def build(b):
        x, y = b.input("a", a.shape, "i32"), b.input("c", c.shape, "i32")
        z = b.input("big", big.shape, "i64")
        b.output(b.add(b.mul(x, y), x), b.sub(x, y), b.maximum(x, y), b.minimum(x, y),
                 b.div(x, y), b.greater(x, y),
                 b.where(b.less(x, y), x, y), b.add(z, z), b.mul(z, b.const(3.0, dtype="i64")))
    _run_exact(build, [a, c, big], profile)


def test_float64_program_uses_exact_libm():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 40))

    def build(b):
        v = b.input("x", x.shape, "f64")
        b.output(b.gelu(v), b.exp(v), b.tanh(v), b.sin(v), b.cos(v), b.sigmoid(v),
                 b.log(b.abs(v)), b.pow(b.abs(v), b.const(1.7, dtype="f64")))
    b = GraphBuilder("f64")
    build(b)
    g = b.build()
    got = compile_graph(g, LLVM, weights={})(x)
    for r, e in zip(got, run_graph(g, [x], {})):
        assert r.dtype == np.float64
        np.testing.assert_allclose(r, e, rtol=1e-14, atol=1e-15)


def test_bool_outputs_and_inputs_are_bytes():
    rng = np.random.default_rng(5)
    c = rng.random((7, 13)) < 0.3
    x = rng.standard_normal((7, 13)).astype(np.float32)

    def build(b):
        cv, xv = b.input("c", c.shape, "bool"), b.input("x", x.shape)
        gt = b.greater(xv, 0.0)
        b.output(gt, b.where(cv, xv, b.neg(xv)), b.cast(cv, dtype="f32"),
                 b.equal(b.cast(gt, dtype="f32"), b.cast(cv, dtype="f32")))
    _run_exact(build, [c, x], LLVM)


def test_strided_broadcast_and_sliced_operands_in_one_kernel():
    def build(b):
        x = b.input("x", (2, 40, 33))
        t = b.input("t", (2, 33, 40))  # transposed read
        s = b.input("s", (2, 50, 70))  # strided slice
        bias = b.input("bias", (40, 1))  # broadcast along the last dim
        u = b.add(b.mul(x, b.transpose(t, perm=(0, 2, 1))), bias)
        sl = b.slice(s, starts=(0, 3, 1), ends=(2, 43, 67), steps=(1, 1, 2))
        b.output(b.sub(b.erf(u), sl))
        return {}
    compiled = check(build, LLVM)
    assert _kinds(compiled) == ["llvm.elementwise"]


def test_long_rows_are_split_into_chunks_over_threads():
    def build(b):
        x = b.input("x", (3, 10000))  # 3 chunks per row
        b.output(b.tanh(b.mul(x, 0.7)))
        return {}
    check(build, LLVM)
    check(build, LLVM.replace(threads=1, name="llvm-1t"))


@pytest.mark.parametrize("shape,perm", [
    ((3, 2, 7, 2), (0, 2, 1, 3)),         # [3, 7, 2, 2]: 2 x 2 from two input dims
    ((3, 2, 2, 7, 2), (0, 3, 1, 4, 2)),   # [3, 7, 2, 2, 2]
    ((3, 3, 7), (0, 2, 1)),               # [3, 7, 3]
    ((4, 2, 2, 2, 2), (0, 3, 1, 4, 2)),   # SAM's depth-to-space in small
])
def test_tiny_trailing_dims_are_unrolled(shape, perm):
    """Transposes whose innermost dims are tiny and not mergeable (the kernel unrolls them)
    with operands that vary, broadcast and stay constant along those dims, against the
    reference."""
    from rlx.backends.common.spec import describe
    from rlx.backends.llvm.elementwise import tail_dims

    out_shape = tuple(shape[p] for p in perm)

    def build(b):
        x = b.input("x", shape)
        y = b.transpose(x, perm=perm)
        row = b.input("row", out_shape[:-1] + (1,))  # constant along the last dim only
        col = b.input("col", out_shape[-1:])  # varies along the last dim only
        b.output(b.tanh(b.add(b.mul(y, row), col)))
        return {}
    compiled = check(build, LLVM)
    assert _kinds(compiled) == ["llvm.elementwise"]
    nests = [describe(n).nest for n in compiled.plan.graph.nodes]
    assert any(tail_dims(n.shape) >= 1 for n in nests), nests


def test_unrolled_tail_with_the_looped_dim_split_into_chunks():
    """[2, 5000, 2] from a transpose: the 2 is unrolled, the 5000 loop is longer than a
    chunk, so each row is two tasks (and the threads share them)."""
    from rlx.backends.common.spec import describe
    from rlx.backends.llvm.elementwise import CHUNK, tail_dims, tasks

    def build(b):
        x = b.input("x", (2, 2, 5000))
        b.output(b.mul(b.transpose(x, perm=(0, 2, 1)), 3.0))
        return {}
    compiled = check(build, LLVM)
    (nest,) = [describe(n).nest for n in compiled.plan.graph.nodes]
    assert nest.shape == (2, 5000, 2) and 5000 > CHUNK
    assert tail_dims(nest.shape) == 1 and tasks(nest.shape) == 4
    check(build, LLVM.replace(threads=1, name="llvm-1t"))


def test_zero_size_tensors():
    def build(b):
        x = b.input("x", (0, 5))
        y = b.input("y", (3, 0, 4))
        b.output(b.exp(x), b.layer_norm(y), b.softmax(y, axis=1))
    b = GraphBuilder("empty")
    build(b)
    g = b.build()
    xs = [np.zeros((0, 5), np.float32), np.zeros((3, 0, 4), np.float32)]
    got = compile_graph(g, LLVM, weights={})(*xs)
    assert [r.shape for r in got] == [(0, 5), (3, 0, 4), (3, 0, 4)]


@pytest.mark.parametrize("gemm", ["blas", "native"])
def test_empty_contraction_gives_zeros(gemm):
    b = GraphBuilder("k0")
    b.output(b.add(b.matmul(b.input("a", (3, 0)), b.input("w", (0, 4))), 1.0))
    compiled = compile_graph(b.build(), LLVM.replace(gemm=gemm, name=f"llvm-{gemm}"), weights={})
    (y,) = compiled(np.zeros((3, 0), np.float32), np.zeros((0, 4), np.float32))
    np.testing.assert_array_equal(y, np.ones((3, 4), np.float32))


def test_gelu_tanh_and_sigmoid_of_large_magnitudes():
    def build(b):
        x = b.input("x", (4, 300))
        big = b.mul(x, 30.0)
        b.output(b.gelu(big, approximate="tanh"), b.sigmoid(big), b.gelu(big))
        return {}
    check(build, LLVM, rtol=1e-5, atol=1e-5)



def test_float64_norms_in_both_layouts():
    rng = np.random.default_rng(6)
    x, c = rng.standard_normal((5, 300)), rng.standard_normal((2, 7, 40))

    def build(b):
        xv, cv = b.input("x", x.shape, "f64"), b.input("c", c.shape, "f64")
        b.output(b.softmax(xv), b.layer_norm(xv), b.softmax(cv, axis=1), b.layer_norm(cv, axis=1))
    b = GraphBuilder("f64norm")
    build(b)
    g = b.build()
    compiled = compile_graph(g, LLVM, weights={})
    assert compiled.report.fallback_kernels == 0
    for r, e in zip(compiled(x, c), run_graph(g, [x, c], {})):
        assert r.dtype == np.float64
        np.testing.assert_allclose(r, e, rtol=1e-13, atol=1e-14)


__all__ = ["LLVM", "LLVM_UNFUSED", "unary"]


@pytest.mark.parametrize("rows", [7, 300], ids=["short-f32-sums", "long-f64-sums"])
def test_float32_softmax_down_columns(rows):
    """The column layout (reduced axis not innermost), fused with a prologue and an
    epilogue, over more columns than one task takes (and a partial last task). Short
    columns sum in float32 (`norm.F32_COLUMN_SUM`), long ones in float64: both within
    float32 rounding of the float64 reference, and each row of the result sums to 1."""
    from rlx.backends.llvm.norm import COLUMNS, F32_COLUMN_SUM

    width = COLUMNS + 44
    assert (rows <= F32_COLUMN_SUM) == (rows == 7)
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((3, rows, width)) * 4).astype(np.float32)
    s = rng.standard_normal((1, rows, 1)).astype(np.float32)

    def build(b):
        xv, sv = b.input("x", x.shape), b.input("s", s.shape)
        b.output(b.mul(b.softmax(b.add(xv, sv), axis=1), 2.0))
    b = GraphBuilder(f"colsoftmax{rows}")
    build(b)
    g = b.build()
    compiled = compile_graph(g, LLVM, weights={})
    assert "llvm.norm" in _kinds(compiled)
    (got,), (want,) = compiled(x, s), run_graph(g, [x, s], {})
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(got.astype(np.float64).sum(axis=1), 2.0, rtol=2e-6)
