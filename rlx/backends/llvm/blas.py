"""numpy's bundled OpenBLAS, called from generated code through imported symbols.

Generated modules declare ``rlx_blas_sgemm`` / ``rlx_blas_dgemm`` with the
CBLAS signature; the JIT links them to this process's addresses of numpy's
``cblas_?gemm`` (found with ctypes in numpy's library folder). The integer
width of the library (ILP64 wheels take 64-bit sizes) is part of the
declaration, hence of the IR text and the cache key. No address is ever baked
into code, so cached objects stay valid in every process.

If numpy's OpenBLAS cannot be found (another BLAS vendor), `available()` is
False and the backend uses its native GEMM kernel.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from rlx.backends.llvm.irutil import F32, F64, I32, PTR, VOID

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
SYMBOL = {"f32": "rlx_blas_sgemm", "f64": "rlx_blas_dgemm"}


@dataclass(frozen=True)
class Blas:
    path: str
    int_bits: int
    sgemm: int  # addresses
    dgemm: int

    def imports(self) -> dict[str, int]:
        return {SYMBOL["f32"]: self.sgemm, SYMBOL["f64"]: self.dgemm}


def _candidates():
    libdir = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    return sorted(glob.glob(os.path.join(libdir, "*openblas*.so*")))


@functools.lru_cache(maxsize=None)
def find() -> Blas | None:
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_cblas_", "cblas_"):
            for suffix, bits in (("64_", 64), ("", 32)):
                s = getattr(lib, f"{prefix}sgemm{suffix}", None)
                d = getattr(lib, f"{prefix}dgemm{suffix}", None)
                if s is not None and d is not None:
                    addr = lambda f: ctypes.cast(f, ctypes.c_void_p).value  # noqa: E731
                    return Blas(path, bits, addr(s), addr(d))
    return None


def available() -> bool:
    return find() is not None


def declare(module: ir.Module, dtype: str, int_bits: int) -> ir.Function:
    """The CBLAS ?gemm declaration (order, transa, transb, m, n, k, alpha, a, lda, b, ldb,
    beta, c, ldc)."""
    name = SYMBOL[dtype]
    try:
        return module.get_global(name)
    except KeyError:
        pass
    it = ir.IntType(int_bits)
    ft = F32 if dtype == "f32" else F64
    fnty = ir.FunctionType(VOID, [I32, I32, I32, it, it, it, ft, PTR, it, PTR, it, ft, PTR, it])
    fn = ir.Function(module, fnty, name)
    return fn


def call_gemm(b: ir.IRBuilder, module: ir.Module, dtype: str, int_bits: int, ta: bool, tb: bool,
              m, n, k, alpha: float, a_ptr, lda, b_ptr, ldb, beta: float, c_ptr, ldc) -> None:
    """C[m, n] = alpha op(A) op(B) + beta C, row-major; sizes are i64 values (or ints)."""
    fn = declare(module, dtype, int_bits)
    it = ir.IntType(int_bits)
    ft = F32 if dtype == "f32" else F64

    def size(v):
        if isinstance(v, int):
            return ir.Constant(it, v)
        return v if int_bits == 64 else b.trunc(v, it)

    b.call(fn, [ir.Constant(I32, ROW_MAJOR), ir.Constant(I32, TRANS if ta else NO_TRANS),
                ir.Constant(I32, TRANS if tb else NO_TRANS), size(m), size(n), size(k),
                ir.Constant(ft, alpha), a_ptr, size(lda), b_ptr, size(ldb),
                ir.Constant(ft, beta), c_ptr, size(ldc)])
