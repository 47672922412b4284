"""Elementwise kernels: a scalar program over a loop nest of strided accesses.

The function is ``f(task_lo, task_hi, in_0, ..., in_{n-1}, out_0, ...)`` with
one pointer per node operand (the kernel's `OUT` argument is the first
output). A task is one row of the outer dims times one chunk of at most
`CHUNK` elements of the innermost dim; the innermost loop is the one LLVM
vectorizes. Operands that do not vary along it are loaded once per task.

When the innermost dims are tiny (a depth-to-space transpose ends in 2 x 2), a
loop over them would cost more in per-row index arithmetic than in copying:
trailing dims of at most `TAIL` elements in all are unrolled into the loop body
(`tail_dims`), and the loop runs along the dim before them.

The same emitter builds GEMM epilogues (`chunk=None`: a task is one whole
row), called on row blocks of the product while they are still in cache.
"""

from __future__ import annotations

import itertools
import math

from llvmlite import ir

from rlx.backends.common.spec import OUT, ElementwiseSpec
from rlx.backends.llvm import irutil as U
from rlx.backends.llvm.mathlib import MathLib
from rlx.backends.llvm.nestir import decompose, offset
from rlx.backends.llvm.program import Env, emit_program

#: innermost elements per task (long rows are split so threads share them)
CHUNK = 4096
#: trailing dims of at most this many elements in all are unrolled (see module doc)
TAIL = 8


def tail_dims(shape, chunk: int | None = CHUNK) -> int:
    """How many trailing dims the body unrolls: 0 unless the innermost dim is shorter
    than `TAIL` (and never for GEMM epilogues, `chunk=None`, whose rows are fixed)."""
    if chunk is None or len(shape) < 2 or shape[-1] >= TAIL:
        return 0
    u = 0
    while u < len(shape) - 1 and math.prod(shape[len(shape) - u - 1:]) <= TAIL:
        u += 1
    return u


def tasks(shape, chunk: int | None = CHUNK) -> int:
    loop = len(shape) - 1 - tail_dims(shape, chunk)
    outer = math.prod(shape[:loop])
    if chunk is None:
        return outer
    return outer * max(1, -(-shape[loop] // chunk))


class Operands:
    """Maps a spec argument number to the function's pointer parameter."""

    def __init__(self, fn: ir.Function, n_inputs: int, first: int = 2):
        self.fn = fn
        self.n_inputs = n_inputs
        self.first = first

    def ptr(self, arg: int):
        k = self.n_inputs if arg == OUT else (arg if arg >= 0 else None)
        return self.fn.args[self.first + k]

    def out(self, k: int):
        return self.fn.args[self.first + self.n_inputs + k]


def elementwise_function(module: ir.Module, spec: ElementwiseSpec, n_inputs: int,
                         out_dtypes: list[str], name: str = U.ENTRY,
                         chunk: int | None = CHUNK, fastmath: bool = False) -> ir.Function:
    """Emit ``name(task_lo, task_hi, ptr...)`` computing `spec` (see module doc)."""
    nest = spec.nest
    fn = U.entry_function(module, n_inputs + len(out_dtypes), name=name)
    if name != U.ENTRY:
        fn.linkage = "internal"
    for a in fn.args[2:]:
        a.add_attribute("noalias")
    ops = Operands(fn, n_inputs)
    math_ = MathLib(module)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    nd = len(nest.shape)
    tail = tail_dims(nest.shape, chunk)
    last = nd - 1 - tail  # the looped dim; dims after it are unrolled
    length = nest.shape[last]
    # constant offsets of every unrolled position, per input and per output
    corners = list(itertools.product(*(range(n) for n in nest.shape[last + 1:])))

    def at(base, acc, j, pos):
        """Element offset of `acc` at loop index `j` and unrolled position `pos`."""
        s = acc.strides[last]
        off = b.add(base, j if s == 1 else b.mul(j, U.i64(s)))
        k = sum(i * st for i, st in zip(pos, acc.strides[last + 1:]))
        return b.add(off, U.i64(k)) if k else off

    nch = 1 if chunk is None else max(1, -(-length // chunk))
    task_lo, task_hi = fn.args[0], fn.args[1]
    with U.loop(b, task_lo, task_hi, "task") as task:
        if nch == 1:
            row, jlo, jhi = task, U.i64(0), U.i64(length)
        else:
            row = b.udiv(task, U.i64(nch))
            jlo = b.mul(b.sub(task, b.mul(row, U.i64(nch))), U.i64(chunk))
            jhi = U.smin(b, b.add(jlo, U.i64(chunk)), U.i64(length))
        idx = decompose(b, row, list(nest.shape[:last])) if last else []
        iv = dict(enumerate(idx))
        env = Env(math_, fastmath=fastmath)
        streamed = []
        for acc, sym in zip(nest.inputs, spec.leaf_syms):
            base = offset(b, acc, iv)
            ptr = ops.ptr(acc.arg)
            if not any(acc.strides[last:]):
                env.values[sym.name] = U.load(b, ptr, base, sym.dtype, name=sym.name)
            else:
                streamed.append((sym, ptr, base, acc))
        out_bases = [(ops.out(k), offset(b, acc, iv), acc, dt)
                     for k, (acc, dt) in enumerate(zip(nest.outputs, out_dtypes))]
        with U.loop(b, jlo, jhi, "j") as j:
            for pos in corners:
                for sym, ptr, base, acc in streamed:
                    env.values[sym.name] = U.load(b, ptr, at(base, acc, j, pos), sym.dtype,
                                                  name=sym.name)
                emit_program(b, env, spec.program)
                for (ptr, base, acc, dt), val in zip(out_bases, spec.out_syms):
                    U.store(b, env.value_as(b, val, dt), ptr, at(base, acc, j, pos), dt)
    b.ret_void()
    return fn


def elementwise_module(spec: ElementwiseSpec, n_inputs: int, out_dtypes: list[str],
                       title: str, fastmath: bool = False) -> str:
    module = U.new_module(title)
    elementwise_function(module, spec, n_inputs, out_dtypes, fastmath=fastmath)
    return str(module)
