"""Loop-nest helpers: task decomposition and strided addressing, with sizes baked in.

A kernel's tasks are numbered; a task index is split into per-dimension
indices with constant divisors (LLVM turns them into multiply-shift), and
every operand's element offset is its `Access.offset` plus the sum of
index * stride over the dims it varies along. Shapes and strides are
constants in the IR: LLVM compiles fast, the object cache absorbs the rest,
and constant trip counts let the vectorizer drop remainder checks.
"""

from __future__ import annotations

from llvmlite import ir

from rlx.backends.common.nest import Access, LoopNest
from rlx.backends.llvm.irutil import i64


def decompose(b: ir.IRBuilder, flat, sizes: list[int]) -> list:
    """Row-major indices for `flat` over dims of `sizes` (the first index is not reduced)."""
    if not sizes:
        return []
    idx = [None] * len(sizes)
    rest = flat
    for k in range(len(sizes) - 1, 0, -1):
        if sizes[k] == 1:
            idx[k] = i64(0)
            continue
        q = b.udiv(rest, i64(sizes[k]))
        idx[k] = b.sub(rest, b.mul(q, i64(sizes[k])))
        rest = q
    idx[0] = rest
    return idx


def offset(b: ir.IRBuilder, acc: Access, iv: dict[int, ir.Value], base: int | None = None):
    """Element offset of `acc` at the indices `iv` (dims missing from `iv` count as 0)."""
    total = i64(acc.offset if base is None else base)
    for d, s in enumerate(acc.strides):
        if s == 0 or d not in iv:
            continue
        term = iv[d] if s == 1 else b.mul(iv[d], i64(s), flags=("nsw",))
        total = b.add(total, term, flags=("nsw",))
    return total


def split_last(nest: LoopNest, inner: int) -> LoopNest:
    """The same nest with its last dim L split into (L // inner, inner) (inner divides L)."""
    last = nest.shape[-1]
    assert last % inner == 0
    if inner == last:
        return nest

    def acc(a: Access) -> Access:
        s = a.strides[-1]
        return Access(a.arg, a.offset, a.strides[:-1] + (s * inner, s))

    reduce = nest.reduce
    return LoopNest(nest.shape[:-1] + (last // inner, inner),
                    tuple(acc(a) for a in nest.inputs), tuple(acc(a) for a in nest.outputs),
                    reduce)
