"""Small llvmlite.ir helpers shared by the kernel emitters: types, constants, loops.

Generated code is written against scalar types only; the loop vectorizer
turns the innermost loops into SIMD code. Booleans are `i1` in registers and
one byte in memory (numpy's layout). Pointers are opaque (`ptr`), so every
load, store and GEP names its element type.
"""

from __future__ import annotations

import contextlib

from llvmlite import ir

I1 = ir.IntType(1)
I8 = ir.IntType(8)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
F32 = ir.FloatType()
F64 = ir.DoubleType()
PTR = ir.PointerType()
VOID = ir.VoidType()

#: register type of each rlx dtype
REG = {"f32": F32, "f64": F64, "i32": I32, "i64": I64, "bool": I1}
#: memory type of each rlx dtype (bool is a byte)
MEM = {"f32": F32, "f64": F64, "i32": I32, "i64": I64, "bool": I8}
FLOATS = frozenset({"f32", "f64"})
#: name of the one exported function of every generated module
ENTRY = "rlx_kernel"


def i64(v: int) -> ir.Constant:
    return ir.Constant(I64, int(v))


def const(dtype: str, value: float) -> ir.Constant:
    """A constant of an rlx dtype (register type)."""
    t = REG[dtype]
    if dtype in FLOATS:
        return ir.Constant(t, float(value))
    if dtype == "bool":
        return ir.Constant(t, 1 if value else 0)
    return ir.Constant(t, int(value))


def new_module(name: str = "rlx") -> ir.Module:
    return ir.Module(name)


def entry_function(module: ir.Module, n_ptrs: int, extra=(), name: str = ENTRY) -> ir.Function:
    """void name(i64 task_lo, i64 task_hi, ptr a0, ..., ptr a{n-1}, *extra).

    Operand pointers never alias an output (the memory planner gives every
    live buffer its own bytes), but inputs may alias each other; emitters add
    `noalias` where they know it holds.
    """
    ftype = ir.FunctionType(VOID, [I64, I64] + [PTR] * n_ptrs + list(extra))
    fn = ir.Function(module, ftype, name)
    fn.attributes.add("nounwind")
    return fn


def internal_function(module: ir.Module, name: str, ret, args) -> ir.Function:
    fn = ir.Function(module, ir.FunctionType(ret, list(args)), name)
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    return fn


def intrinsic(module: ir.Module, name: str, ret, args) -> ir.Function:
    """Declare (once) an LLVM intrinsic or external function."""
    try:
        return module.get_global(name)
    except KeyError:
        fn = ir.Function(module, ir.FunctionType(ret, list(args)), name)
        return fn


@contextlib.contextmanager
def loop(b: ir.IRBuilder, start, stop, name: str = "i", step: int = 1):
    """for (i = start; i < stop; i += step): the body is emitted inside the `with`.

    Yields the induction variable (i64). The loop is guarded, so an empty range
    runs zero times; on exit the builder is positioned after the loop.
    """
    start = i64(start) if isinstance(start, int) else start
    stop = i64(stop) if isinstance(stop, int) else stop
    pre = b.block
    fn = pre.function
    body = fn.append_basic_block(f"{name}.body")
    done = fn.append_basic_block(f"{name}.done")
    b.cbranch(b.icmp_signed("<", start, stop), body, done)
    b.position_at_end(body)
    iv = b.phi(I64, name=name)
    iv.add_incoming(start, pre)
    yield iv
    nxt = b.add(iv, i64(step), name=f"{name}.next", flags=("nsw",))
    iv.add_incoming(nxt, b.block)
    b.cbranch(b.icmp_signed("<", nxt, stop), body, done)
    b.position_at_end(done)


def reduce_range(b: ir.IRBuilder, start, stop, init, body, name: str = "red"):
    """acc = body(i, acc) for i in [start, stop); returns acc (init for an empty range).

    The accumulator is a loop-carried phi, the form LLVM's vectorizer recognizes
    as a reduction (given `reassoc` on a floating-point add, or min/max intrinsics).
    """
    start = i64(start) if isinstance(start, int) else start
    stop = i64(stop) if isinstance(stop, int) else stop
    fn = b.block.function
    pre = b.block
    body_bb = fn.append_basic_block(f"{name}.body")
    exit_bb = fn.append_basic_block(f"{name}.exit")
    done = fn.append_basic_block(f"{name}.done")
    b.cbranch(b.icmp_signed("<", start, stop), body_bb, done)
    b.position_at_end(body_bb)
    iv = b.phi(I64, name=name)
    iv.add_incoming(start, pre)
    acc = b.phi(init.type)
    acc.add_incoming(init, pre)
    new = body(iv, acc)
    nxt = b.add(iv, i64(1), flags=("nsw",))
    iv.add_incoming(nxt, b.block)
    acc.add_incoming(new, b.block)
    b.cbranch(b.icmp_signed("<", nxt, stop), body_bb, exit_bb)
    b.position_at_end(exit_bb)
    b.branch(done)
    b.position_at_end(done)
    result = b.phi(init.type)
    result.add_incoming(init, pre)
    result.add_incoming(new, exit_bb)
    return result


#: elements summed in float32 before a partial sum goes into the float64 total
SUM_CHUNK = 1024


def chunked_sum(b: ir.IRBuilder, n: int, value, name: str = "sum"):
    """sum over i in [0, n) of value(i) (a float32), returned as float64.

    Chunks of `SUM_CHUNK` elements are summed in float32 with `reassoc` (so the
    loop vectorizes at full float32 width; each vector lane adds only a few
    terms), the chunk sums in float64 -- accurate for sums of same-sign terms
    such as softmax denominators.
    """
    chunks = -(-n // SUM_CHUNK)

    def chunk(ci, total):
        lo = b.mul(ci, i64(SUM_CHUNK))
        hi = smin(b, b.add(lo, i64(SUM_CHUNK)), i64(n))
        part = reduce_range(b, lo, hi, ir.Constant(F32, 0.0),
                            lambda i, acc: b.fadd(acc, value(i), flags=("reassoc",)),
                            name=f"{name}.in")
        return b.fadd(total, b.fpext(part, F64))
    return reduce_range(b, 0, chunks, ir.Constant(F64, 0.0), chunk, name=f"{name}.chunk")


def load(b: ir.IRBuilder, ptr, index, dtype: str, name: str = ""):
    """Element `index` of a buffer of rlx `dtype`, as a register value."""
    p = b.gep(ptr, [index], inbounds=True, source_etype=MEM[dtype])
    v = b.load(p, name=name, typ=MEM[dtype])
    if dtype == "bool":
        v = b.icmp_unsigned("!=", v, ir.Constant(I8, 0))
    return v


def store(b: ir.IRBuilder, value, ptr, index, dtype: str) -> None:
    if dtype == "bool":
        value = b.zext(value, I8)
    p = b.gep(ptr, [index], inbounds=True, source_etype=MEM[dtype])
    b.store(value, p)


def smin(b: ir.IRBuilder, x, y):
    return b.select(b.icmp_signed("<", x, y), x, y)


def convert(b: ir.IRBuilder, v, src: str, dst: str):
    """numpy `astype` semantics between rlx dtypes (float -> int truncates, x -> bool is x != 0)."""
    if src == dst:
        return v
    if dst == "bool":
        if src in FLOATS:
            return b.fcmp_unordered("!=", v, ir.Constant(REG[src], 0.0))
        return b.icmp_unsigned("!=", v, ir.Constant(REG[src], 0))
    to = REG[dst]
    if src == "bool":
        return b.uitofp(v, to) if dst in FLOATS else b.zext(v, to)
    if src in FLOATS and dst in FLOATS:
        return b.fpext(v, to) if dst == "f64" else b.fptrunc(v, to)
    if src in FLOATS:
        return b.fptosi(v, to)
    if dst in FLOATS:
        return b.sitofp(v, to)
    return b.sext(v, to) if to.width > REG[src].width else b.trunc(v, to)
