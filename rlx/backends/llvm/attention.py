"""Blocked attention: softmax(scale q k^T + decomposed rel-pos) v without the full score matrix.

``f(task_lo, task_hi, q, k, v, rel_h, rel_w, out, scratch)``: a task is one
batch entry (batch x heads) and one block of `block` query rows. Per task:

1. S = scale * Q_blk K^T into the thread's scratch block (BLAS, alpha = scale);
2. per row: S += rel_h[y] + rel_w[x] on the kh x kw key grid (the reference's
   order: the two biases are summed first), the row max (`llvm.maxnum`),
   e = exp(S - max) with the vectorized exp, the sum in float64, and S *= 1/sum;
3. out[blk] = S V (BLAS).

So the score block is written once, normalized in L1/L2 row by row, and
consumed by the second product; global attention over 4096 tokens never
materializes its 4096 x 4096 matrix. `scratch` is per calling thread
(block * Nk elements), supplied by the runtime.
"""

from __future__ import annotations

from llvmlite import ir

from rlx.backends.common.spec import AttentionSpec
from rlx.backends.llvm import blas
from rlx.backends.llvm import irutil as U
from rlx.backends.llvm.gemm import native_kernel
from rlx.backends.llvm.mathlib import MathLib


def block_rows(spec: AttentionSpec) -> int:
    return max(1, min(spec.block, spec.q_shape[1]))


def tasks(spec: AttentionSpec) -> int:
    b, nq, _ = spec.q_shape
    return b * -(-nq // block_rows(spec)) if nq else 0


def attention_module(spec: AttentionSpec, title: str, int_bits: int, native: bool = False) -> str:
    """IR of the blocked attention kernel. With `native`, both products use the native
    GEMM loop and `k` arrives transposed ([batch, d, Nk], packed by the runtime)."""
    nb, nq, d = spec.q_shape
    nk = spec.k_shape[1]
    dv = spec.v_shape[2]
    blk = block_rows(spec)
    nblocks = -(-nq // blk)
    module = U.new_module(title)
    fn = U.entry_function(module, 7)
    for a in fn.args[2:]:
        a.add_attribute("noalias")
    q, k, v, rh, rw, out, scratch = fn.args[2:]
    math_ = MathLib(module)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    f32 = U.F32
    maxnum = U.intrinsic(module, "llvm.maxnum.f32", f32, [f32, f32])

    def at(ptr, index):
        return b.gep(ptr, [index], inbounds=True, source_etype=f32)

    with U.loop(b, fn.args[0], fn.args[1], "task") as task:
        e = b.udiv(task, U.i64(nblocks))
        r0 = b.mul(b.sub(task, b.mul(e, U.i64(nblocks))), U.i64(blk))
        rows = b.sub(U.smin(b, b.add(r0, U.i64(blk)), U.i64(nq)), r0)
        q_blk = at(q, b.add(b.mul(e, U.i64(nq * d)), b.mul(r0, U.i64(d))))
        k_e = at(k, b.mul(e, U.i64(nk * d)))
        v_e = at(v, b.mul(e, U.i64(nk * dv)))
        # 1. S = scale * Q_blk K^T (native: S = Q_blk K^T, scaled in the row pass)
        if native:
            b.call(native_kernel(module, "f32", nk, d), [rows, q_blk, k_e, scratch])
        else:
            blas.call_gemm(b, module, "f32", int_bits, False, True, rows, nk, d,
                           float(spec.scale), q_blk, d, k_e, d, 0.0, scratch, nk)
        # 2. bias + softmax, row by row
        with U.loop(b, 0, rows, "r") as r:
            row = at(scratch, b.mul(r, U.i64(nk)))
            qrow = b.add(b.mul(e, U.i64(nq)), b.add(r0, r))  # global query row
            if native:
                scale = ir.Constant(f32, float(spec.scale))
                with U.loop(b, 0, nk, "c0") as c:
                    U.store(b, b.fmul(U.load(b, row, c, "f32"), scale), row, c, "f32")
            if spec.rel is not None:
                kh, kw = spec.rel
                hrow = b.mul(qrow, U.i64(kh))
                wrow = b.mul(qrow, U.i64(kw))
                with U.loop(b, 0, kh, "y") as y:
                    h = U.load(b, rh, b.add(hrow, y), "f32")
                    seg = b.mul(y, U.i64(kw))
                    with U.loop(b, 0, kw, "x") as x:
                        bias = b.fadd(h, U.load(b, rw, b.add(wrow, x), "f32"))
                        i = b.add(seg, x)
                        U.store(b, b.fadd(U.load(b, row, i, "f32"), bias), row, i, "f32")
            m = _reduce(b, nk, ir.Constant(f32, float("-inf")),
                        lambda c, acc: b.call(maxnum, [acc, U.load(b, row, c, "f32")]))

            def exp_sum(c, acc):
                ev = math_.unary(b, "exp", b.fsub(U.load(b, row, c, "f32"), m))
                U.store(b, ev, row, c, "f32")
                return b.fadd(acc, b.fpext(ev, U.F64), flags=("reassoc",))
            s = _reduce(b, nk, ir.Constant(U.F64, 0.0), exp_sum)
            inv = b.fptrunc(b.fdiv(ir.Constant(U.F64, 1.0), s), f32)
            with U.loop(b, 0, nk, "c3") as c:
                U.store(b, b.fmul(U.load(b, row, c, "f32"), inv), row, c, "f32")
        # 3. out[blk] = P V
        o_blk = at(out, b.add(b.mul(e, U.i64(nq * dv)), b.mul(r0, U.i64(dv))))
        if native:
            b.call(native_kernel(module, "f32", dv, nk), [rows, scratch, v_e, o_blk])
        else:
            blas.call_gemm(b, module, "f32", int_bits, False, False, rows, dv, nk, 1.0,
                           scratch, nk, v_e, dv, 0.0, o_blk, dv)
    b.ret_void()
    return str(module)


def _reduce(b: ir.IRBuilder, n: int, init, body):
    """acc = body(c, acc) for c in [0, n) (n >= 1), returned after the loop."""
    fn = b.block.function
    pre = b.block
    loop = fn.append_basic_block("red.body")
    done = fn.append_basic_block("red.done")
    b.branch(loop)
    b.position_at_end(loop)
    c = b.phi(U.I64, name="c")
    c.add_incoming(U.i64(0), pre)
    acc = b.phi(init.type)
    acc.add_incoming(init, pre)
    new = body(c, acc)
    nxt = b.add(c, U.i64(1), flags=("nsw",))
    c.add_incoming(nxt, b.block)
    acc.add_incoming(new, b.block)
    b.cbranch(b.icmp_signed("<", nxt, U.i64(n)), loop, done)
    b.position_at_end(done)
    return new
