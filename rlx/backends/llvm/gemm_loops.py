"""Generated GEMM loops that stand in for a BLAS call where BLAS's fixed costs dominate.

* `small_kernel`: batches of small products (SAM's rel-pos terms), one register tile per
  batch entry;
* `skinny_kernel`: a handful of rows times a linear layer's [N, K] weight (SAM decoder's
  token-side products), dot products along K;
* `native_kernel`: the profile's ``gemm = "native"`` micro-kernel on packed operands.

`rlx.backends.llvm.gemm` decides (`small`, `skinny_columns`) and calls them per task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llvmlite import ir

from rlx.backends.llvm import irutil as U

if TYPE_CHECKING:
    from rlx.backends.llvm.gemm import GemmPlan

#: native micro-kernel tile: MR rows x NR_VECTORS vectors of C in registers
MR, NR_VECTORS = 4, 2
#: batched products at most this many multiply-adds per entry and at most SMALL_COLS columns
#: run on a register-tiled loop instead of one BLAS call each: a 64x64x64 entry costs
#: OpenBLAS ~7 us of call and packing overhead, the tile loop ~2 us (SAM's rel-pos terms).
#: The limit is in columns, not vectors, so the choice is the same at every vector width
#: (narrower vectors take the columns in several register panels)
SMALL_WORK = 64 * 64 * 64
SMALL_COLS = 64
#: vectors of C per row in one register panel of `small_kernel`, by vector registers: with
#: 16 registers a 2-vector panel keeps 6 rows in registers (a 4-vector one only 2)
PANEL_VECTORS = {32: 4, 16: 2}
#: a single product with at most this many rows whose B is read as [N, K] rows (a linear
#: layer's weight) runs on `skinny_kernel`: dot products along K, B streamed once per group
#: of rows. OpenBLAS spends ~60 us of set-up on a [7,256]x[256,256] product that is 0.5 M
#: multiply-adds (SAM decoder: ~25 such token-side products per click)
SKINNY_ROWS = 8


def small(p: GemmPlan, dtype: str, vc) -> bool:
    """True when the batched product runs on `small_kernel` (see SMALL_WORK)."""
    return (vc is not None and dtype == "f32" and p.nbatch > 1 and not p.tb
            and p.m * p.n * p.k <= SMALL_WORK and 0 < p.n <= SMALL_COLS and p.block == p.m)


def skinny_shape(p: GemmPlan, vc, dtype: str = "f32") -> tuple[int, int]:
    """(rows per group, output columns at once) of `skinny_kernel` for `p`; (0, 0) when it
    does not apply. All m rows in one group when their accumulators fit the registers
    (2 columns: 2m accumulators + m A vectors + 2 B vectors; else 1 column: m + 1 + 1),
    else groups of rows that fit with 2 columns (B is then read once per group)."""
    if (vc is None or dtype != "f32" or p.batch or not (1 <= p.m <= SKINNY_ROWS) or not p.tb
            or p.ta or p.k < 1):
        return 0, 0
    if 3 * p.m + 2 <= vc.regs:
        return p.m, 2
    if 2 * p.m + 1 <= vc.regs:
        return p.m, 1
    return (vc.regs - 2) // 3, 2


def skinny_columns(p: GemmPlan, vc, dtype: str = "f32") -> int:
    """Output columns `skinny_kernel` accumulates at once for `p` (0: it does not apply)."""
    return skinny_shape(p, vc, dtype)[1]


# ---- skinny products: dot products along K ------------------------------------------------------


def skinny_kernel(module: ir.Module, vc, p: GemmPlan) -> ir.Function:
    """mm(j0, j1, A, B, C): C[:, j0:j1] = A B^T for a product of m <= SKINNY_ROWS rows whose
    B is stored as [N, K] rows (unit stride along K), like a linear layer's weight.

    For `c` output columns at a time, m x c vector accumulators run along K (A's rows and
    B's rows loaded a vector at a time, the K tail masked) and are summed across lanes at
    the end: B is read once per group of rows (`skinny_shape`: one group unless the
    registers are too few), A stays in L1, nothing is packed."""
    from rlx.backends.llvm.vecir import Vec, fold_range

    V = Vec(module, vc)
    L = vc.lanes
    group, cols = skinny_shape(p, vc)
    m, k = p.m, p.k
    full_k = (k // L) * L
    fn = U.internal_function(module, "skinny_mm", U.VOID, [U.I64, U.I64] + [U.PTR] * 3)
    j0, j1, A, B, C = fn.args
    for a in (A, B, C):
        a.add_attribute("noalias")
    reduce = U.intrinsic(module, f"llvm.vector.reduce.fadd.v{L}f32", U.F32, [U.F32, V.ty])
    b = ir.IRBuilder(fn.append_basic_block("entry"))

    def rows(j, c: int, r0: int, r1: int):
        """Columns j .. j+c-1 (c of them), rows r0 .. r1-1."""
        def step(kk, acc, n_valid=L):
            bv = [V.load_n(b, B, b.add(b.mul(b.add(j, U.i64(q)), U.i64(p.ldb)), kk), n_valid)
                  for q in range(c)]
            out = []
            for i in range(r0, r1):
                av = V.load_n(b, A, b.add(U.i64(i * p.lda), kk), n_valid)
                out.extend(V.fma(b, av, bv[q], acc[(i - r0) * c + q]) for q in range(c))
            return out
        acc = fold_range(b, 0, full_k, [V.const(0.0)] * ((r1 - r0) * c), step, name="sk",
                         step=L)
        if full_k < k:
            acc = step(U.i64(full_k), acc, k - full_k)
        for i in range(r0, r1):
            for q in range(c):
                total = b.call(reduce, [ir.Constant(U.F32, 0.0), acc[(i - r0) * c + q]],
                               fastmath=("reassoc",))
                U.store(b, total, C, b.add(U.i64(i * p.n), b.add(j, U.i64(q))), "f32")

    def block(j, c: int):
        for r0 in range(0, m, group):
            rows(j, c, r0, min(m, r0 + group))

    if cols == 2:
        pairs_end = b.add(j0, b.mul(b.sdiv(b.sub(j1, j0), U.i64(2)), U.i64(2)))
        with U.loop(b, j0, pairs_end, "sj", step=2) as j:
            block(j, 2)
        with U.loop(b, pairs_end, j1, "sj1") as j:
            block(j, 1)
    else:
        with U.loop(b, j0, j1, "sj") as j:
            block(j, 1)
    b.ret_void()
    return fn


# ---- small products: a register tile per entry ---------------------------------------------------


def small_kernel(module: ir.Module, vc, p: GemmPlan) -> ir.Function:
    """mm(A, B, C): C[m, n] = op(A) B for one batch entry, all sizes and strides constant.

    C's rows are register tiles of MR rows x up to PANEL_VECTORS vectors (a panel of
    columns; wider products take several panels), accumulated over the whole
    k loop: B's row k is loaded once per tile (the last vector masked), each
    A element is broadcast; C is stored once (masked the same way). A is read at any
    strides, B's rows must be unit-stride (op(B) not transposed)."""
    from rlx.backends.llvm.vecir import Vec, fold_range

    V = Vec(module, vc)
    L = vc.lanes
    fn = U.internal_function(module, "small_mm", U.VOID, [U.PTR] * 3)
    A, B, C = fn.args
    for a in fn.args:
        a.add_attribute("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    a_row, a_col = (1, p.lda) if p.ta else (p.lda, 1)

    def tile(m0, rows: int, c0: int, nv: int, tail: int):
        """C[m0:m0+rows, c0:c0+(nv-1)*L+tail] over the whole k loop in registers."""
        def step(kk, acc):
            bv = [V.load_n(b, B, b.add(b.mul(kk, U.i64(p.ldb)), U.i64(c0 + v * L)),
                           tail if v == nv - 1 else L) for v in range(nv)]
            out = []
            for r in range(rows):
                row = b.add(m0, U.i64(r))
                at = b.add(b.mul(row, U.i64(a_row)), b.mul(kk, U.i64(a_col)))
                av = V.splat(b, U.load(b, A, at, "f32"))
                out.extend(V.fma(b, av, bv[v], acc[r * nv + v]) for v in range(nv))
            return out
        acc = fold_range(b, 0, p.k, [V.const(0.0)] * (rows * nv), step, name="sk")
        for r in range(rows):
            row = b.add(m0, U.i64(r))
            for v in range(nv):
                V.store_n(b, acc[r * nv + v], C,
                          b.add(b.mul(row, U.i64(p.n)), U.i64(c0 + v * L)),
                          tail if v == nv - 1 else L)

    panel = PANEL_VECTORS.get(vc.regs, 2) * L
    for c0 in range(0, p.n, panel):  # register panels of columns
        width = min(panel, p.n - c0)
        nv = -(-width // L)
        tail = width - (nv - 1) * L
        mr = max(1, min(p.m, (vc.regs - nv - 2) // nv))
        full = (p.m // mr) * mr
        with U.loop(b, 0, full, "sm", step=mr) as m0:
            tile(m0, mr, c0, nv, tail)
        if p.m % mr:
            tile(U.i64(full), p.m % mr, c0, nv, tail)
    b.ret_void()
    return fn


# ---- the native micro-kernel --------------------------------------------------------------------


def native_kernel(module: ir.Module, dtype: str, n: int, k: int, vc=None) -> ir.Function:
    """mm(rows, A, B, C): C[rows, n] = A[rows, k] B[k, n], all row-major and contiguous;
    vectors of the target's width (`vc`; None: 512 bits)."""
    bits = 32 * vc.lanes if vc is not None else 512
    lanes = bits // (32 if dtype == "f32" else 64)
    name = f"native_gemm_{dtype}_{n}_{k}_{bits}"
    try:
        return module.get_global(name)
    except KeyError:
        pass
    ty = U.REG[dtype]
    vec = ir.VectorType(ty, lanes)
    nr = NR_VECTORS * lanes
    fn = U.internal_function(module, name, U.VOID, [U.I64, U.PTR, U.PTR, U.PTR])
    rows, A, B, C = fn.args
    for a in (A, B, C):
        a.add_attribute("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    fma = U.intrinsic(module, f"llvm.fmuladd.v{lanes}{'f32' if dtype == 'f32' else 'f64'}",
                      vec, [vec, vec, vec])
    zero = ir.Constant(vec, [0.0] * lanes)
    slots = [[b.alloca(vec, name=f"acc{r}_{v}") for v in range(NR_VECTORS)] for r in range(MR)]
    full_panels = n // nr
    full_rows = b.mul(b.udiv(rows, U.i64(MR)), U.i64(MR))

    def vload(ptr, at):
        return b.load(b.gep(ptr, [at], inbounds=True, source_etype=ty), typ=vec, align=4)

    def vstore(v, ptr, at):
        b.store(v, b.gep(ptr, [at], inbounds=True, source_etype=ty), align=4)

    def tile(i0, j0, mr):
        """C[i0:i0+mr, j0:j0+nr] over the whole K loop in registers."""
        for r in range(mr):
            for v in range(NR_VECTORS):
                b.store(zero, slots[r][v])
        with U.loop(b, 0, k, "kk") as kk:
            bv = [vload(B, b.add(b.mul(kk, U.i64(n)), b.add(j0, U.i64(v * lanes))))
                  for v in range(NR_VECTORS)]
            for r in range(mr):
                row = b.add(i0, U.i64(r)) if r else i0
                a = U.load(b, A, b.add(b.mul(row, U.i64(k)), kk), dtype)
                splat = b.insert_element(ir.Constant(vec, ir.Undefined), a, U.i64(0))
                splat = b.shuffle_vector(splat, ir.Constant(vec, ir.Undefined),
                                         ir.Constant(ir.VectorType(U.I32, lanes), [0] * lanes))
                for v in range(NR_VECTORS):
                    acc = b.load(slots[r][v], typ=vec)
                    b.store(b.call(fma, [splat, bv[v], acc]), slots[r][v])
        for r in range(mr):
            row = b.add(i0, U.i64(r)) if r else i0
            for v in range(NR_VECTORS):
                at = b.add(b.add(b.mul(row, U.i64(n)), j0), U.i64(v * lanes))
                vstore(b.load(slots[r][v], typ=vec), C, at)

    if full_panels:
        with U.loop(b, 0, full_panels, "jp") as jp:
            j0 = b.mul(jp, U.i64(nr))
            with U.loop(b, 0, full_rows, "ib", step=MR) as i0:
                tile(i0, j0, MR)
            with U.loop(b, full_rows, rows, "ir") as i0:
                tile(i0, j0, 1)
    if n % nr:  # remaining columns: plain loops (LLVM vectorizes the j loop)
        fma1 = U.intrinsic(module, f"llvm.fmuladd.{'f32' if dtype == 'f32' else 'f64'}",
                           ty, [ty, ty, ty])
        with U.loop(b, 0, rows, "i") as i:
            with U.loop(b, full_panels * nr, n, "j") as j:
                b.store(ir.Constant(ty, 0.0), b.gep(C, [b.add(b.mul(i, U.i64(n)), j)],
                                                    inbounds=True, source_etype=ty))
            with U.loop(b, 0, k, "k") as kk:
                a = U.load(b, A, b.add(b.mul(i, U.i64(k)), kk), dtype)
                with U.loop(b, full_panels * nr, n, "j2") as j:
                    at = b.add(b.mul(i, U.i64(n)), j)
                    bval = U.load(b, B, b.add(b.mul(kk, U.i64(n)), j), dtype)
                    c_old = U.load(b, C, at, dtype)
                    U.store(b, b.call(fma1, [a, bval, c_old]), C, at, dtype)
    b.ret_void()
    return fn
