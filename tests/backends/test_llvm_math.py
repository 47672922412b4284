"""Accuracy of the llvm backend's own float32 exp / erf / tanh / sin / cos against float64.

Each function runs as a one-op graph through the backend (the real code
path) on dense grids over its whole useful range, random samples, and edge
cases (overflow and underflow thresholds, subnormal results, huge arguments,
tiny arguments, +-inf, NaN). References are float64 numpy / `math.erf`.
Bounds: exp relative error <= 1.5e-7 (about 1 ulp), erf absolute <= 1.5e-7,
tanh relative <= 2e-7, sin/cos absolute <= 6e-8 for every finite float32.
And the generated loops are vector code without libm calls.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from rlx.ir import GraphBuilder
from rlx.runtime import compile_graph
from tests.backends.test_llvm_ops import LLVM

_erf64 = np.vectorize(math.erf, otypes=[np.float64])
_compiled: dict = {}


def run(op: str, x: np.ndarray) -> np.ndarray:
    """op(x) on the llvm backend (one compiled kernel per op and size)."""
    x = np.ascontiguousarray(x, np.float32).ravel()
    key = (op, x.size)
    if key not in _compiled:
        b = GraphBuilder(f"math_{op}")
        b.output(getattr(b, op)(b.input("x", (x.size,))))
        _compiled[key] = compile_graph(b.build(), LLVM, weights={})
    (y,) = _compiled[key](x)
    assert y.dtype == np.float32
    return y


def grid(lo, hi, n=1_000_001):
    return np.linspace(lo, hi, n, dtype=np.float64).astype(np.float32)


def rel_err(y, ref):
    y, ref = y.astype(np.float64), np.asarray(ref, np.float64)
    return np.max(np.abs(y - ref) / np.abs(ref))


def abs_err(y, ref):
    return np.max(np.abs(y.astype(np.float64) - np.asarray(ref, np.float64)))


RNG = np.random.default_rng(42)
#: spacing of float32 subnormals (1e-40 holds only ~5 significant digits)
SUBNORMAL_ULP = 2.0 ** -149


# ---- exp ------------------------------------------------------------------------------------------


def test_exp_relative_error_over_the_normal_range():
    for x in (grid(-87.33, 88.72), grid(-1, 1, 200_001),
              (RNG.standard_normal(500_000) * 20).astype(np.float32)):
        x = x[(x > -87.33) & (x < 88.72)]
        assert rel_err(run("exp", x), np.exp(x.astype(np.float64))) <= 1.5e-7


def test_exp_subnormal_results_within_two_ulp():
    x = grid(-103.9, -87.4, 200_001)
    y = run("exp", x)
    want = np.exp(x.astype(np.float64)).astype(np.float32)  # correctly rounded subnormals
    ulps = np.abs(y.view(np.int32).astype(np.int64) - want.view(np.int32).astype(np.int64))
    assert ulps.max() <= 2
    assert (y > 0).all()


def test_exp_edges():
    x = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 88.72283, 88.7229, 89.0, 200.0,
                  -104.0, -110.0, -1e30, 1e-30, -1e-30], np.float32)
    y = run("exp", x)
    assert y[0] == np.inf and y[1] == 0.0 and np.isnan(y[2])
    assert y[3] == 1.0 and y[4] == 1.0
    assert np.isfinite(y[5]) and y[5] > 3.4e38  # the largest finite result
    assert y[6] == np.inf and y[7] == np.inf and y[8] == np.inf
    assert y[9] == 0.0 and y[10] == 0.0 and y[11] == 0.0
    assert y[12] == 1.0 and y[13] == 1.0


def _vector_exp_nonpos(x: np.ndarray, avx512: bool) -> np.ndarray:
    """`MathLib.exp_f32_nonpos` on whole vectors of the host's width (as attention uses it);
    `avx512`: the roundeven/vscalefps path, 16 lanes (run only where the host has AVX-512;
    its code is checked on any host by cross-compiling, see below)."""
    import ctypes

    from rlx.backends.llvm import jit
    from rlx.backends.llvm.target import target_for
    from rlx.backends.llvm.vecir import vector_config

    target = target_for("cpu-avx512" if avx512 else "cpu")
    missing = target.missing_host_features()
    if missing:  # the only allowed skip: the CPU lacks what the kernel needs
        pytest.skip(f"the AVX-512 path needs {', '.join(missing)}, which this CPU lacks")
    vc = vector_config(target)
    module = _exp_nonpos_module(vc, avx512)
    loaded = jit.load(str(module), target, None, {})
    n = -(-x.size // vc.lanes)
    xs = np.zeros(n * vc.lanes, np.float32)
    xs[:x.size] = x
    y = np.empty_like(xs)
    proto = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                             ctypes.c_void_p)
    proto(loaded.address)(0, n, xs.ctypes.data, y.ctypes.data)
    return y[:x.size]


def _exp_nonpos_module(vc, avx512: bool):
    from llvmlite import ir

    from rlx.backends.llvm import irutil as U
    from rlx.backends.llvm.mathlib import MathLib
    from rlx.backends.llvm.vecir import Vec

    module = U.new_module("exp_nonpos")
    fn = U.entry_function(module, 2)
    vec, math_ = Vec(module, vc), MathLib(module)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    with U.loop(b, fn.args[0], fn.args[1], "i") as i:
        at = b.mul(i, U.i64(vc.lanes))
        y = math_.exp_f32_nonpos(b, vec.load(b, fn.args[2], at), avx512=avx512)
        vec.store(b, y, fn.args[3], at)
    b.ret_void()
    return module


@pytest.mark.parametrize("cpu", ["sapphirerapids", "znver4"])
def test_softmax_exp_avx512_path_compiles_to_vscalefps(cpu):
    # cross-compiled (not run): the AVX-512 path of exp_f32_nonpos is 16-lane code with
    # vscalefps and no calls, on Intel and AMD AVX-512 CPUs alike
    from rlx.backends.llvm.target import assembly, target_for
    from rlx.backends.llvm.vecir import vector_config

    target = target_for("cpu-avx512", cpu=cpu)
    asm = assembly(str(_exp_nonpos_module(vector_config(target), True)), target)
    assert re.search(r"\tvscalefps\s[^\n]*%zmm", asm)
    assert not re.findall(r"\bcall", asm)


@pytest.mark.parametrize("avx512", [False, True], ids=["generic", "avx512"])
def test_softmax_exp_of_nonpositive_vectors(avx512):
    # attention's exp(s - max): about 1 ulp down to e^-86; below, at most 5e-38 off (0 or
    # the subnormal result, depending on the target's path)
    x = np.concatenate([grid(-86.0, 0.0), grid(-1, 0, 100_001),
                        -np.abs(np.random.default_rng(7).standard_normal(200_000) * 10)
                        .astype(np.float32)])
    x = x[x >= -86.0]
    assert rel_err(_vector_exp_nonpos(x, avx512), np.exp(x.astype(np.float64))) <= 1.5e-7
    tiny = grid(-120.0, -86.0, 100_001)
    assert abs_err(_vector_exp_nonpos(tiny, avx512), np.exp(tiny.astype(np.float64))) <= 5e-38
    y = _vector_exp_nonpos(np.array([0.0, -0.0, -110.0, -1e30, -np.inf, np.nan, -1e-30],
                                    np.float32), avx512)
    assert y[0] == 1.0 and y[1] == 1.0 and y[6] == 1.0
    assert (y[2:5] == 0.0).all() and np.isnan(y[5])


# ---- erf ------------------------------------------------------------------------------------------


def test_erf_absolute_error():
    for x in (grid(-6, 6, 600_001), (RNG.standard_normal(300_000) * 2).astype(np.float32),
              grid(0.95, 1.05, 100_001), grid(3.9, 4.1, 20_001)):
        assert abs_err(run("erf", x), _erf64(x.astype(np.float64))) <= 1.5e-7


def test_erf_edges():
    tiny = np.array([1e-30, -1e-30, 1e-40, 1e-8], np.float32)
    np.testing.assert_allclose(run("erf", tiny), _erf64(tiny.astype(np.float64)), rtol=1e-6,
                               atol=SUBNORMAL_ULP)
    y = run("erf", np.array([np.inf, -np.inf, np.nan, 0.0, 10.0, -1e30], np.float32))
    assert y[0] == 1.0 and y[1] == -1.0 and np.isnan(y[2]) and y[3] == 0.0
    assert y[4] == 1.0 and y[5] == -1.0


# ---- tanh ------------------------------------------------------------------------------------------


def test_tanh_relative_error():
    for x in (grid(-12, 12), grid(-0.7, 0.7, 200_001),
              (RNG.standard_normal(300_000) * 3).astype(np.float32)):
        x = x[x != 0]
        assert rel_err(run("tanh", x), np.tanh(x.astype(np.float64))) <= 2e-7


def test_tanh_edges():
    tiny = np.array([1e-30, -1e-30, 1e-40, 1e-5], np.float32)
    np.testing.assert_allclose(run("tanh", tiny), np.tanh(tiny.astype(np.float64)), rtol=1e-6,
                               atol=SUBNORMAL_ULP)
    y = run("tanh", np.array([np.inf, -np.inf, np.nan, 0.0, 20.0, -1e30], np.float32))
    assert y[0] == 1.0 and y[1] == -1.0 and np.isnan(y[2]) and y[3] == 0.0
    assert y[4] == 1.0 and y[5] == -1.0


# ---- sin / cos -------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["sin", "cos"])
def test_sin_cos_absolute_error_for_every_magnitude(op):
    ref = getattr(np, op)
    huge = (RNG.standard_normal(200_000) * 10.0 ** RNG.uniform(0, 38, 200_000)).astype(np.float32)
    for x in (grid(-10, 10), grid(-1e6, 1e6, 500_001), huge,
              np.array([np.pi, np.pi / 2, 1e20, 3.4e38, -3.4e38, 2 ** 24, 8388607.5], np.float32)):
        x = x[np.isfinite(x)]
        assert abs_err(run(op, x), ref(x.astype(np.float64))) <= 6e-8


def test_sin_cos_edges():
    tiny = np.array([1e-30, -1e-30, 1e-40, 1e-6], np.float32)
    np.testing.assert_allclose(run("sin", tiny), np.sin(tiny.astype(np.float64)), rtol=1e-6,
                               atol=SUBNORMAL_ULP)
    np.testing.assert_array_equal(run("cos", tiny), np.ones(4, np.float32))
    for op in ("sin", "cos"):
        assert np.isnan(run(op, np.array([np.inf, -np.inf, np.nan], np.float32))).all()


# ---- vector code ------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["exp", "erf", "tanh", "sin", "cos"])
def test_function_loops_are_vector_code_without_libm_calls(op):
    # packed arithmetic at the width the profile chose for this host (the default: the
    # host's widest), on Intel (whose LLVM tuning would prefer 256 bits) and AMD alike
    from rlx.backends.llvm.target import target_for

    b = GraphBuilder(f"vec_{op}")
    b.output(getattr(b, op)(b.input("x", (4096,))))
    asm = compile_graph(b.build(), LLVM).dump("asm")
    calls = set(re.findall(r"\bcall\w*\s+\*?([A-Za-z_][\w@.]*)", asm))
    assert not calls, calls
    reg = {512: "zmm", 256: "ymm", 128: "xmm"}[target_for("cpu").vector_bits]
    assert re.search(rf"\tv\w+ps\s[^\n]*%{reg}", asm), f"no packed {reg} arithmetic in {op}"
