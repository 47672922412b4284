"""LayerNorm and softmax kernels (with prologue and epilogue), two-pass like the reference.

Two layouts, as in the numba backend:

* row (the reduced axis is innermost, e.g. LayerNorm over channels-last): a
  task is one row. LayerNorm sums are accumulated in float64 with `reassoc` on
  the accumulating add only, so LLVM vectorizes the reduction into partial
  sums (the order differs from a serial loop, never the precision: float64
  sums of float32 data). Softmax sums (positive terms, no cancellation) go in
  float32 chunks at full vector width with float64 chunk sums
  (`irutil.chunked_sum`). The max uses `llvm.maxnum`, which vectorizes too.
* column (the reduced axis is not innermost, e.g. LayerNorm2d over NCHW
  channels): a task is a chunk of the innermost dim, with one float64
  accumulator per column on the stack, so the vector loop runs across columns
  and needs no reassociation at all. A float32 softmax over a short axis (the
  attention over a few tokens, one column per pixel) keeps its max and sum in
  float32 instead (`F32_COLUMN_SUM`): twice the vector width.

Statistics follow the reference: mean, then the mean of squared deviations
(two passes), rstd = 1 / sqrt(var + eps); softmax subtracts the row max before
exp and divides by the sum. The prologue (e.g. a residual add) is recomputed
in every pass rather than stored.
"""

from __future__ import annotations

import math

from llvmlite import ir

from rlx.backends.common.spec import NormSpec
from rlx.backends.llvm import irutil as U
from rlx.backends.llvm.elementwise import Operands
from rlx.backends.llvm.mathlib import MathLib
from rlx.backends.llvm.nestir import decompose, offset
from rlx.backends.llvm.program import Env, emit_instrs

#: innermost columns per task in the column layout
COLUMNS = 256
#: a float32 softmax down columns sums in float32 when the reduced axis is at most this
#: long (each sum is then a few terms in (0, 1]: ~n ulp at worst); longer ones in float64
F32_COLUMN_SUM = 64
RED = ("reassoc",)


def layout(spec: NormSpec) -> str:
    return "row" if spec.nest.reduce == len(spec.nest.shape) - 1 else "column"


def tasks(spec: NormSpec) -> int:
    nest = spec.nest
    r, nd = nest.reduce, len(nest.shape)
    if layout(spec) == "row":
        return math.prod(nest.shape[d] for d in range(nd) if d != r)
    outer = math.prod(nest.shape[d] for d in range(nd - 1) if d != r)
    return outer * max(1, -(-nest.shape[-1] // COLUMNS))


class _Pass:
    """Loads of the leaves at one position of the reduced (and inner) loop."""

    def __init__(self, b, spec: NormSpec, ops: Operands, env: Env, bases, inner_dim: int):
        self.b, self.spec, self.ops, self.env = b, spec, ops, env
        self.bases = bases  # per nest input: (base offset value, stride along reduce, along inner)
        self.inner_dim = inner_dim

    def load_leaves(self, c, j=None):
        b = self.b
        for (acc, sym), (base, sr, sj) in zip(zip(self.spec.nest.inputs, self.spec.leaf_syms),
                                              self.bases):
            at = base
            if sr:
                at = b.add(at, c if sr == 1 else b.mul(c, U.i64(sr)))
            if j is not None and sj:
                at = b.add(at, j if sj == 1 else b.mul(j, U.i64(sj)))
            self.env.values[sym.name] = U.load(b, self.ops.ptr(acc.arg), at, sym.dtype)

    def x(self):
        """The norm input at the current position (runs the prologue)."""
        emit_instrs(self.b, self.env, self.spec.program.instrs[:self.spec.split])
        return self.env.get(self.spec.x)


def norm_module(spec: NormSpec, n_inputs: int, out_dtype: str, title: str,
                fastmath: bool = False) -> str:
    module = U.new_module(title)
    fn = U.entry_function(module, n_inputs + 1)
    for a in fn.args[2:]:
        a.add_attribute("noalias")
    ops = Operands(fn, n_inputs)
    math_ = MathLib(module)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    if layout(spec) == "row":
        _row_kernel(b, fn, spec, ops, math_, out_dtype, fastmath)
    else:
        _column_kernel(b, fn, spec, ops, math_, out_dtype, fastmath)
    b.ret_void()
    return str(module)


def _finish(b, env: Env, spec: NormSpec, y, out_ptr, at, out_dtype: str) -> None:
    """y -> epilogue -> store."""
    env.values[spec.y.name] = y
    emit_instrs(b, env, spec.program.instrs[spec.split:])
    U.store(b, env.value_as(b, spec.out, out_dtype), out_ptr, at, out_dtype)


def _affine(b, env: Env, spec: NormSpec, centered):
    """centered * weight + bias (when present), in the norm's dtype."""
    y = centered
    if spec.weight is not None:
        y = b.fmul(y, env.get(spec.weight))
    if spec.bias is not None:
        y = b.fadd(y, env.get(spec.bias))
    return y


# ---- row layout ---------------------------------------------------------------------------------


def _row_kernel(b, fn, spec: NormSpec, ops: Operands, math_: MathLib, out_dtype: str,
                fastmath: bool) -> None:
    nest = spec.nest
    nd, r = len(nest.shape), nest.reduce
    n = nest.shape[r]
    dt = spec.y.dtype
    ty = U.REG[dt]
    outer = [d for d in range(nd) if d != r]
    out_acc = nest.outputs[0]
    with U.loop(b, fn.args[0], fn.args[1], "task") as task:
        iv = dict(zip(outer, decompose(b, task, [nest.shape[d] for d in outer])))
        bases = [(offset(b, a, iv), a.strides[r], 0) for a in nest.inputs]
        out_base = offset(b, out_acc, iv)
        out_ptr = ops.out(0)
        sr_out = out_acc.strides[r]

        def out_at(c):
            return b.add(out_base, c if sr_out == 1 else b.mul(c, U.i64(sr_out)))

        def sweep(body, init):
            """Run `body(c, acc) -> acc` over the row with a loop-carried accumulator."""
            pre = b.block
            accs = init
            loop_block = fn.append_basic_block("c.body")
            done = fn.append_basic_block("c.done")
            b.branch(loop_block)
            b.position_at_end(loop_block)
            c = b.phi(U.I64, name="c")
            c.add_incoming(U.i64(0), pre)
            phis = []
            for a in accs:
                p = b.phi(a.type)
                p.add_incoming(a, pre)
                phis.append(p)
            env = Env(math_, fastmath=fastmath)
            p_ = _Pass(b, spec, ops, env, bases, -1)
            p_.load_leaves(c)
            new = body(c, env, p_, phis)
            nxt = b.add(c, U.i64(1), flags=("nsw",))
            for p, v in zip(phis, new):
                p.add_incoming(v, b.block)
            c.add_incoming(nxt, b.block)
            b.cbranch(b.icmp_signed("<", nxt, U.i64(n)), loop_block, done)
            b.position_at_end(done)
            return new

        zero = ir.Constant(U.F64, 0.0)
        if spec.op == "layer_norm":
            def p1(c, env, p_, accs):
                return [b.fadd(accs[0], U.convert(b, p_.x(), dt, "f64"), flags=RED)]
            (s1,) = sweep(p1, [zero])
            mean = b.fdiv(s1, ir.Constant(U.F64, float(n)))

            def p2(c, env, p_, accs):
                d = b.fsub(U.convert(b, p_.x(), dt, "f64"), mean)
                return [b.fadd(accs[0], b.fmul(d, d), flags=RED)]
            (s2,) = sweep(p2, [zero])
            var = b.fdiv(s2, ir.Constant(U.F64, float(n)))
            rstd = b.fdiv(ir.Constant(U.F64, 1.0),
                          math_.sqrt(b, b.fadd(var, ir.Constant(U.F64, float(spec.eps)))))
            mean_t, rstd_t = U.convert(b, mean, "f64", dt), U.convert(b, rstd, "f64", dt)

            def p3(c, env, p_, accs):
                y = _affine(b, env, spec, b.fmul(b.fsub(p_.x(), mean_t), rstd_t))
                _finish(b, env, spec, y, out_ptr, out_at(c), out_dtype)
                return []
            sweep(p3, [])
        else:
            maxnum = U.intrinsic(b.module, f"llvm.maxnum.{'f32' if dt == 'f32' else 'f64'}",
                                 ty, [ty, ty])

            def p1(c, env, p_, accs):
                return [b.call(maxnum, [accs[0], p_.x()])]
            (m,) = sweep(p1, [ir.Constant(ty, float("-inf"))])

            def exp_store(c):
                env = Env(math_, fastmath=fastmath)
                p_ = _Pass(b, spec, ops, env, bases, -1)
                p_.load_leaves(c)
                e = math_.unary(b, "exp", b.fsub(p_.x(), m))
                U.store(b, e, out_ptr, out_at(c), dt)
                return e

            if dt == "f32":  # float32 chunks at full vector width, chunk sums in float64
                s = U.chunked_sum(b, n, exp_store, name="es")
            else:
                (s,) = sweep(lambda c, env, p_, accs: [
                    b.fadd(accs[0], exp_store(c), flags=RED)], [zero])
            inv = U.convert(b, b.fdiv(ir.Constant(U.F64, 1.0), s), "f64", dt)

            def p3(c, env, p_, accs):
                y = b.fmul(U.load(b, out_ptr, out_at(c), dt), inv)
                _finish(b, env, spec, y, out_ptr, out_at(c), out_dtype)
                return []
            sweep(p3, [])


# ---- column layout ------------------------------------------------------------------------------


def _column_kernel(b, fn, spec: NormSpec, ops: Operands, math_: MathLib, out_dtype: str,
                   fastmath: bool) -> None:
    nest = spec.nest
    nd, r = len(nest.shape), nest.reduce
    last = nd - 1
    n, width = nest.shape[r], nest.shape[last]
    nch = max(1, -(-width // COLUMNS))
    dt = spec.y.dtype
    outer = [d for d in range(last) if d != r]
    out_acc = nest.outputs[0]
    out_ptr = ops.out(0)
    # per-column accumulators live on the stack for the whole call
    entry_b = b
    acc1 = entry_b.alloca(U.F64, size=U.i64(COLUMNS), name="acc1")
    acc2 = entry_b.alloca(U.F64, size=U.i64(COLUMNS), name="acc2")

    def slot(arr, j):
        return b.gep(arr, [j], inbounds=True, source_etype=U.F64)

    with U.loop(b, fn.args[0], fn.args[1], "task") as task:
        row = b.udiv(task, U.i64(nch))
        jlo = b.mul(b.sub(task, b.mul(row, U.i64(nch))), U.i64(COLUMNS))
        cnt = b.sub(U.smin(b, b.add(jlo, U.i64(COLUMNS)), U.i64(width)), jlo)
        iv = dict(zip(outer, decompose(b, row, [nest.shape[d] for d in outer])))
        iv[last] = jlo
        bases = [(offset(b, a, iv), a.strides[r], a.strides[last]) for a in nest.inputs]
        out_base = offset(b, out_acc, iv)
        so_r, so_j = out_acc.strides[r], out_acc.strides[last]

        def out_at(c, j):
            at = b.add(out_base, c if so_r == 1 else b.mul(c, U.i64(so_r)))
            return b.add(at, j if so_j == 1 else b.mul(j, U.i64(so_j)))

        def fill(arr, value):
            with U.loop(b, 0, cnt, "f") as j:
                b.store(value, slot(arr, j))

        def sweep(body):
            with U.loop(b, 0, n, "c") as c:
                with U.loop(b, 0, cnt, "j") as j:
                    env = Env(math_, fastmath=fastmath)
                    p_ = _Pass(b, spec, ops, env, bases, last)
                    p_.load_leaves(c, j)
                    body(c, j, env, p_)

        def each(body):
            with U.loop(b, 0, cnt, "k") as j:
                body(j)

        zero = ir.Constant(U.F64, 0.0)
        if spec.op == "layer_norm":
            fill(acc1, zero)

            def p1(c, j, env, p_):
                s = slot(acc1, j)
                b.store(b.fadd(b.load(s, typ=U.F64), U.convert(b, p_.x(), dt, "f64")), s)
            sweep(p1)

            def to_mean(j):
                s = slot(acc1, j)
                b.store(b.fdiv(b.load(s, typ=U.F64), ir.Constant(U.F64, float(n))), s)
            each(to_mean)
            fill(acc2, zero)

            def p2(c, j, env, p_):
                d = b.fsub(U.convert(b, p_.x(), dt, "f64"), b.load(slot(acc1, j), typ=U.F64))
                s = slot(acc2, j)
                b.store(b.fadd(b.load(s, typ=U.F64), b.fmul(d, d)), s)
            sweep(p2)

            def to_rstd(j):
                s = slot(acc2, j)
                var = b.fdiv(b.load(s, typ=U.F64), ir.Constant(U.F64, float(n)))
                b.store(b.fdiv(ir.Constant(U.F64, 1.0), math_.sqrt(
                    b, b.fadd(var, ir.Constant(U.F64, float(spec.eps))))), s)
            each(to_rstd)

            def p3(c, j, env, p_):
                mean = U.convert(b, b.load(slot(acc1, j), typ=U.F64), "f64", dt)
                rstd = U.convert(b, b.load(slot(acc2, j), typ=U.F64), "f64", dt)
                y = _affine(b, env, spec, b.fmul(b.fsub(p_.x(), mean), rstd))
                _finish(b, env, spec, y, out_ptr, out_at(c, j), out_dtype)
            sweep(p3)
        else:
            # the max is exact at any precision; a short column's sum (a handful of terms
            # in (0, 1]) loses nothing that matters in float32, and float32 slots let the
            # loops run at full vector width (float64 ones halve it)
            ty = U.REG[dt]
            sum_ty = ty if dt == "f32" and n <= F32_COLUMN_SUM else U.F64
            sum_dt = dt if sum_ty == ty else "f64"
            mx = b.bitcast(acc1, ir.PointerType(ty)) if ty != U.F64 else acc1
            sm = b.bitcast(acc2, ir.PointerType(sum_ty)) if sum_ty != U.F64 else acc2

            def at(arr, t, j):
                return b.gep(arr, [j], inbounds=True, source_etype=t)

            with U.loop(b, 0, cnt, "f") as j:
                b.store(ir.Constant(ty, float("-inf")), at(mx, ty, j))
            maxnum = U.intrinsic(b.module, f"llvm.maxnum.{'f32' if dt == 'f32' else 'f64'}",
                                 ty, [ty, ty])

            def p1(c, j, env, p_):
                s_ = at(mx, ty, j)
                b.store(b.call(maxnum, [b.load(s_, typ=ty), p_.x()]), s_)
            sweep(p1)
            with U.loop(b, 0, cnt, "f") as j:
                b.store(ir.Constant(sum_ty, 0.0), at(sm, sum_ty, j))

            def p2(c, j, env, p_):
                e = math_.unary(b, "exp", b.fsub(p_.x(), b.load(at(mx, ty, j), typ=ty)))
                U.store(b, e, out_ptr, out_at(c, j), dt)
                s_ = at(sm, sum_ty, j)
                b.store(b.fadd(b.load(s_, typ=sum_ty), U.convert(b, e, dt, sum_dt)), s_)
            sweep(p2)

            def to_inv(j):
                s_ = at(sm, sum_ty, j)
                b.store(b.fdiv(ir.Constant(sum_ty, 1.0), b.load(s_, typ=sum_ty)), s_)
            each(to_inv)

            def p3(c, j, env, p_):
                inv = U.convert(b, b.load(at(sm, sum_ty, j), typ=sum_ty), sum_dt, dt)
                at_ = out_at(c, j)
                y = b.fmul(U.load(b, out_ptr, at_, dt), inv)
                _finish(b, env, spec, y, out_ptr, at_, out_dtype)
            sweep(p3)
