"""Python source for numba from kernel specs (readable: `rlx dump-ir --format kernels`).

Every generated kernel has the same calling convention::

    kernel(task_lo, task_hi, a0, a1, ..., o0, ...)

It computes tasks ``task_lo <= task < task_hi`` of its iteration space, so the
runtime can split the tasks over threads (kernels are compiled ``nogil``).
The arrays are the *dense views* of the loop nest's accesses: each operand
indexed only by the iteration dims it varies along (a bias over the channel
dim arrives as a 1-D array), strided where a transpose or slice was folded in.

A task is one row of the outer dims times one chunk of the innermost dim, so
the innermost loop is a unit-stride loop over at most CHUNK elements that LLVM
vectorizes. When the innermost dim is short (a depth-to-space shuffle ends in
a dim of 2), such tasks would do almost nothing each; then a row spans several
trailing dims and a task covers a block of rows (`inner_block_dims`). Source depends on
ranks, broadcast patterns and that one choice, never on sizes: one compiled
kernel serves every shape with the same pattern.
"""

from __future__ import annotations

import math

from rlx.backends.common.nest import Access, LoopNest
from rlx.backends.common.scalar import Const, Instr, Sym
from rlx.backends.common.spec import OUT, ElementwiseSpec, NormSpec

CHUNK = 2048
NORM_CHUNK = 512
#: rows of an elementwise kernel span trailing dims until they hold this many elements ...
SMALL_INNER = 64
#: ... with about this many elements per task
ROW_BLOCK = 1024

NUMBA_TYPES = {"f32": "float32", "f64": "float64", "i32": "int32", "i64": "int64",
               "bool": "boolean"}
NP_TYPES = {"f32": "np.float32", "f64": "np.float64", "i32": "np.int32", "i64": "np.int64",
            "bool": "np.bool_"}


class Source:
    """Accumulates a module: header, constants, one kernel function."""

    def __init__(self, title: str):
        self.title = title
        self.consts: dict[tuple, str] = {}
        self.lines: list[str] = []

    def const(self, c: Const) -> str:
        if c.dtype == "bool":
            return "True" if c.value else "False"
        key = (c.dtype, repr(float(c.value)))
        if key not in self.consts:
            self.consts[key] = f"C{len(self.consts)}"
        return self.consts[key]

    def emit(self, line: str, indent: int) -> None:
        self.lines.append("    " * indent + line)

    def module(self, signature: str, flags: str, args: list[str]) -> str:
        head = [f"# rlx numba kernel: {self.title}",
                "import math",
                "import numpy as np",
                "from numba import njit, types as nt",
                "from rlx.backends.numba.prelude import (erf32, exp32, row_max, row_sqdev64,",
                "                                        row_sum64, tanh32)",
                ""]
        for (dtype, value), name in self.consts.items():
            v = value if value not in ("inf", "-inf", "nan") else f"float({value!r})"
            head.append(f"{name} = {NP_TYPES[dtype]}({v})")
        head += ["", "", f"@njit({signature}, {flags})",
                 f"def kernel({', '.join(args)}):"]
        return "\n".join(head + self.lines) + "\n"


def array_type(dtype: str, ndim: int, contiguous: bool, readonly: bool) -> str:
    layout = "C" if contiguous else "A"
    ro = ", readonly=True" if readonly else ""
    return f"nt.Array(nt.{NUMBA_TYPES[dtype]}, {ndim}, {layout!r}{ro})"


def flags(fastmath: bool) -> str:
    fm = "{'contract', 'reassoc', 'nsz', 'arcp', 'afn'}" if fastmath else "False"
    return f"cache=True, nogil=True, error_model='numpy', fastmath={fm}"


# ---- scalar instructions -----------------------------------------------------------------------


def _arg(src: Source, a) -> str:
    if isinstance(a, Sym):
        return a.name
    return src.const(a)


def instr_line(src: Source, ins: Instr) -> str:
    a = [_arg(src, x) for x in ins.args]
    p, dt = ins.prim, ins.out.dtype
    in_dt = ins.args[0].dtype if ins.args else dt
    f32 = in_dt == "f32"
    if p in ("add", "sub", "mul"):
        expr = f"{a[0]} {'+-*'[('add', 'sub', 'mul').index(p)]} {a[1]}"
    elif p == "div":
        expr = f"{a[0]} / {a[1]}"
        if dt in ("i32", "i64"):
            expr = f"{NP_TYPES[dt]}({expr})"
    elif p == "max":
        expr = f"{a[0]} if ({a[0]} > {a[1]} or {a[0]} != {a[0]}) else {a[1]}"
    elif p == "min":
        expr = f"{a[0]} if ({a[0]} < {a[1]} or {a[0]} != {a[0]}) else {a[1]}"
    elif p == "pow":
        expr = f"{a[0]} ** {a[1]}"
    elif p == "neg":
        expr = f"-{a[0]}"
    elif p == "abs":
        expr = f"abs({a[0]})"
    elif p == "exp":
        expr = f"exp32({a[0]})" if f32 else f"math.exp({a[0]})"
    elif p == "erf":
        expr = f"erf32({a[0]})" if f32 else f"math.erf({a[0]})"
    elif p == "tanh":
        expr = f"tanh32({a[0]})" if f32 else f"math.tanh({a[0]})"
    elif p in ("log", "sqrt", "sin", "cos"):
        expr = f"math.{p}({a[0]})"
    elif p in ("lt", "gt", "le", "ge", "eq"):
        op = {"lt": "<", "gt": ">", "le": "<=", "ge": ">=", "eq": "=="}[p]
        expr = f"{a[0]} {op} {a[1]}"
    elif p == "select":
        expr = f"{a[1]} if {a[0]} else {a[2]}"
    elif p == "cast":
        expr = f"{a[0]} != 0" if ins.to == "bool" else f"{NP_TYPES[ins.to]}({a[0]})"
    else:  # pragma: no cover - PRIMITIVES is closed
        raise KeyError(p)
    if p in ("exp", "erf", "tanh", "log", "sqrt", "sin", "cos") and f32 and \
            p not in ("exp", "erf", "tanh"):
        expr = f"np.float32({expr})"
    return f"{ins.out.name} = {expr}"


# ---- indexing helpers ------------------------------------------------------------------------


def _index(acc: Access, names: dict[int, str]) -> str:
    """Subscript of a dense view: one index per dim the access varies along."""
    dims = acc.dims()
    if not dims:
        return "[0]"
    return "[" + ", ".join(names[d] for d in dims) + "]"


def _decompose(src: Source, var: str, dims: list[int], sizes: dict[int, str], indent: int):
    """i_d for the row-major dims `dims` from the flat index `var`."""
    if not dims:
        return
    if len(dims) == 1:
        src.emit(f"i{dims[0]} = {var}", indent)
        return
    src.emit(f"r = {var}", indent)
    for d in reversed(dims[1:]):
        src.emit(f"i{d} = r % {sizes[d]}", indent)
        src.emit(f"r = r // {sizes[d]}", indent)
    src.emit(f"i{dims[0]} = r", indent)


def _advance(src: Source, dims: list[int], sizes: dict[int, str], indent: int) -> None:
    """Step the row-major index (i_d for `dims`) to the next row, odometer-style.

    Integer division is slow (tens of cycles); re-deriving every index from a
    flat row number costs more than moving a short row does."""
    for depth, d in enumerate(reversed(dims)):
        ind = indent + depth
        src.emit(f"i{d} += 1", ind)
        if depth == len(dims) - 1:
            return
        src.emit(f"if i{d} == {sizes[d]}:", ind)
        src.emit(f"i{d} = 0", ind + 1)  # carry: the next dim's step nests one level deeper


def _dense_dtypes(nest: LoopNest, in_dtypes, out_dtypes) -> list[str]:
    parts = []
    for acc, dt in zip(nest.inputs, in_dtypes):
        parts.append(array_type(dt, max(len(acc.dims()), 1), acc.is_contiguous_over(nest.shape),
                                readonly=True))
    for acc, dt in zip(nest.outputs, out_dtypes):
        parts.append(array_type(dt, max(len(acc.dims()), 1), acc.is_contiguous_over(nest.shape),
                                readonly=False))
    return parts


def _signature(types_: list[str]) -> str:
    return "nt.void(nt.int64, nt.int64, " + ", ".join(types_) + ")"


def _size_lines(src: Source, nest: LoopNest, indent: int) -> dict[int, str]:
    """n_d = <an operand's shape>, read from an output (outputs span every dim)."""
    sizes = {}
    out = nest.outputs[0]
    dense_pos = {d: k for k, d in enumerate(out.dims())}
    for d in range(len(nest.shape)):
        if d in dense_pos:
            sizes[d] = f"n{d}"
            src.emit(f"n{d} = o0.shape[{dense_pos[d]}]", indent)
        else:
            sizes[d] = "1"
    return sizes


# ---- elementwise --------------------------------------------------------------------------------


def inner_block_dims(nest: LoopNest) -> int:
    """How many trailing dims one row of a task spans: 1 normally (a task is a chunk of
    the innermost dim), more when the innermost dim is short: then the trailing dims
    whose sizes multiply to at least SMALL_INNER are iterated whole, by nested loops,
    and a task is a block of such rows (see `elementwise_source`)."""
    shape = nest.shape
    if len(shape) < 2 or shape[-1] >= SMALL_INNER:
        return 1
    k, size = 1, shape[-1]
    while k < len(shape) - 1 and size < SMALL_INNER:
        k += 1
        size *= shape[-k]
    return k


def elementwise_source(spec: ElementwiseSpec, in_dtypes: list[str], out_dtypes: list[str],
                       fastmath: bool, title: str) -> str:
    """A kernel for an elementwise spec. `in_dtypes[k]` is the dtype of nest input k."""
    nest = spec.nest
    src = Source(title + " [" + ", ".join(spec.ops) + "]")
    nd = len(nest.shape)
    last = nd - 1
    sizes = _size_lines(src, nest, 1)
    kin = inner_block_dims(nest)
    if kin > 1:
        _elementwise_blocks(src, spec, nest, sizes, kin)
    else:
        _elementwise_chunks(src, spec, nest, sizes)
    args = ["task_lo", "task_hi"] + [f"a{k}" for k in range(len(nest.inputs))] + \
        [f"o{k}" for k in range(len(nest.outputs))]
    sig = _signature(_dense_dtypes(nest, in_dtypes, out_dtypes))
    return src.module(sig, flags(fastmath), args)


def _in_place(nest: LoopNest, acc: Access) -> bool:
    """True when input `acc` is the output buffer read at the element being written (a
    GEMM epilogue updating its accumulator): the kernel then loads it through the
    output's own view. Loaded through a second view of the same memory, LLVM's
    runtime alias check fails and the loop runs scalar (10x slower with GELU)."""
    out = nest.outputs[0]
    return acc.arg == OUT and out.arg == 0 and acc.offset == out.offset and \
        acc.strides == out.strides


def _elementwise_chunks(src: Source, spec: ElementwiseSpec, nest: LoopNest, sizes) -> None:
    """Tasks = (row of the outer dims, CHUNK of the innermost dim)."""
    last = len(nest.shape) - 1
    src.emit(f"nch = ({sizes[last]} + {CHUNK - 1}) // {CHUNK}", 1)
    src.emit("for task in range(task_lo, task_hi):", 1)
    src.emit("row = task // nch", 2)
    src.emit(f"lo = (task - row * nch) * {CHUNK}", 2)
    src.emit(f"hi = min(lo + {CHUNK}, {sizes[last]})", 2)
    _decompose(src, "row", list(range(last)), sizes, 2)
    names = {d: f"i{d}" for d in range(last)}
    body_loads = []
    for k, (acc, sym) in enumerate(zip(nest.inputs, spec.leaf_syms)):
        if _in_place(nest, acc):
            body_loads.append(f"{sym.name} = w0[j]")
        elif last in acc.dims():
            sub = _index(acc, {**names, last: "lo:hi"})
            src.emit(f"r{k} = a{k}{sub}", 2)
            body_loads.append(f"{sym.name} = r{k}[j]")
        else:
            src.emit(f"{sym.name} = a{k}{_index(acc, names)}", 2)
    for k, acc in enumerate(nest.outputs):
        src.emit(f"w{k} = o{k}{_index(acc, {**names, last: 'lo:hi'})}", 2)
    src.emit("for j in range(hi - lo):", 2)
    for line in body_loads:
        src.emit(line, 3)
    for ins in spec.program.instrs:
        src.emit(instr_line(src, ins), 3)
    for k, out in enumerate(spec.out_syms):
        src.emit(f"w{k}[j] = {_arg(src, out)}", 3)


def _elementwise_blocks(src: Source, spec: ElementwiseSpec, nest: LoopNest, sizes,
                        kin: int) -> None:
    """Tasks = blocks of rows, a row = the last `kin` dims walked by nested loops.

    A depth-to-space shuffle ends in dims of 2: chunking the innermost dim would
    make tasks of two elements, each paying for index decomposition and slicing.
    Here the outer index is decomposed once per task and then stepped
    odometer-style; each operand is sliced once per row, and the nested loops
    index the (small) row views directly.
    """
    nd = len(nest.shape)
    outer = list(range(nd - kin))
    inner = list(range(nd - kin, nd))
    src.emit("rpt = max(1, " + f"{ROW_BLOCK} // (" + " * ".join(sizes[d] for d in inner) + "))", 1)
    src.emit("nrow = " + " * ".join(sizes[d] for d in outer), 1)
    src.emit("for task in range(task_lo, task_hi):", 1)
    src.emit("row0 = task * rpt", 2)
    _decompose(src, "row0", outer, sizes, 2)
    src.emit("for row in range(row0, min(row0 + rpt, nrow)):", 2)
    names = {d: f"i{d}" for d in outer}
    jn = {d: f"j{d}" for d in inner}
    body_loads, stores = [], []

    def row_view(acc, arr: str, var: str) -> str:
        """Slice `arr` once per row; return the per-element subscript of the slice."""
        dims = acc.dims()
        inner_dims = [d for d in dims if d in jn]
        if not inner_dims:
            return ""
        if any(d in names for d in dims):
            src.emit(f"{var} = {arr}{_index(acc, {**names, **{d: ':' for d in inner}})}", 3)
        else:
            src.emit(f"{var} = {arr}", 3)
        return "[" + ", ".join(jn[d] for d in inner_dims) + "]"

    for k, (acc, out) in enumerate(zip(nest.outputs, spec.out_syms)):
        sub = row_view(acc, f"o{k}", f"w{k}")
        stores.append(f"w{k}{sub} = {_arg(src, out)}")
        if k == 0:
            out_sub = sub
    for k, (acc, sym) in enumerate(zip(nest.inputs, spec.leaf_syms)):
        if _in_place(nest, acc):  # through the output's view (see _in_place)
            body_loads.append(f"{sym.name} = w0{out_sub}")
            continue
        sub = row_view(acc, f"a{k}", f"r{k}")
        if sub:
            body_loads.append(f"{sym.name} = r{k}{sub}")
        else:
            src.emit(f"{sym.name} = a{k}{_index(acc, names)}", 3)
    ind = 3
    for d in inner:
        src.emit(f"for {jn[d]} in range({sizes[d]}):", ind)
        ind += 1
    for line in body_loads:
        src.emit(line, ind)
    for ins in spec.program.instrs:
        src.emit(instr_line(src, ins), ind)
    for line in stores:
        src.emit(line, ind)
    _advance(src, outer, sizes, 3)


def elementwise_tasks(nest: LoopNest) -> int:
    kin = inner_block_dims(nest)
    if kin > 1:
        rpt = max(1, ROW_BLOCK // math.prod(nest.shape[-kin:]))
        return -(-math.prod(nest.shape[:-kin]) // rpt)
    outer = math.prod(nest.shape[:-1])
    return outer * max(1, -(-nest.shape[-1] // CHUNK))


# ---- norms ------------------------------------------------------------------------------------


def norm_layout(nest: LoopNest) -> str:
    """"row" when the reduced dim is innermost, else "column" (vectorize across the last dim)."""
    return "row" if nest.reduce == len(nest.shape) - 1 else "column"


def norm_tasks(nest: LoopNest) -> int:
    nd = len(nest.shape)
    others = [d for d in range(nd) if d != nest.reduce]
    if norm_layout(nest) == "row":
        return math.prod(nest.shape[d] for d in others)
    outer = math.prod(nest.shape[d] for d in others[:-1])
    return outer * max(1, -(-nest.shape[-1] // NORM_CHUNK))


def norm_source(spec: NormSpec, in_dtypes: list[str], out_dtype: str, fastmath: bool,
                title: str) -> str:
    nest = spec.nest
    src = Source(title + " [" + ", ".join(spec.ops) + "]")
    nd = len(nest.shape)
    r = nest.reduce
    sizes = _size_lines(src, nest, 1)
    layout = norm_layout(nest)
    prologue = spec.program.instrs[:spec.split]
    epilogue = spec.program.instrs[spec.split:]
    x, out = _arg(src, spec.x), _arg(src, spec.out)
    ln = spec.op == "layer_norm"
    src.emit(f"nc = {sizes[r]}", 1)
    if layout == "row" and out_dtype == "f32" and spec.x.dtype == "f32" and \
            nest.outputs[0].is_contiguous_over(nest.shape):
        _norm_rows_staged(src, spec, nest, sizes, prologue, epilogue, x, out, ln)
        args = ["task_lo", "task_hi"] + [f"a{k}" for k in range(len(nest.inputs))] + ["o0"]
        sig = _signature(_dense_dtypes(nest, in_dtypes, [out_dtype]))
        return src.module(sig, flags(fastmath), args)
    if layout == "row":
        outer = [d for d in range(nd) if d != r]
        src.emit("for task in range(task_lo, task_hi):", 1)
        _decompose(src, "task", outer, sizes, 2)
        names = {d: f"i{d}" for d in outer}
    else:
        last = nd - 1
        outer = [d for d in range(nd) if d not in (r, last)]
        src.emit(f"nch = ({sizes[last]} + {NORM_CHUNK - 1}) // {NORM_CHUNK}", 1)
        src.emit("for task in range(task_lo, task_hi):", 1)
        src.emit("row = task // nch", 2)
        src.emit(f"lo = (task - row * nch) * {NORM_CHUNK}", 2)
        src.emit(f"hi = min(lo + {NORM_CHUNK}, {sizes[last]})", 2)
        _decompose(src, "row", outer, sizes, 2)
        names = {d: f"i{d}" for d in outer}

    def hoist(indent, c_name):
        """Row slices / scalars of every leaf, emitted before the innermost loop."""
        for k, acc in enumerate(nest.inputs):
            idx = dict(names)
            if layout == "row":
                if r in acc.dims():
                    idx[r] = ":"
                    src.emit(f"r{k} = a{k}{_index(acc, idx)}", indent)
                else:
                    src.emit(f"{spec.leaf_syms[k].name} = a{k}{_index(acc, idx)}", indent)
            else:
                idx[r] = c_name
                if nd - 1 in acc.dims():
                    idx[nd - 1] = "lo:hi"
                    src.emit(f"r{k} = a{k}{_index(acc, idx)}", indent)
                else:
                    src.emit(f"{spec.leaf_syms[k].name} = a{k}{_index(acc, idx)}", indent)
        idx = dict(names)
        if layout == "row":
            idx[r] = ":"
        else:
            idx[r] = c_name
            idx[nd - 1] = "lo:hi"
        src.emit(f"w0 = o0{_index(nest.outputs[0], idx)}", indent)

    inner = "c" if layout == "row" else "j"
    streamed = [k for k, acc in enumerate(nest.inputs)
                if (r if layout == "row" else nd - 1) in acc.dims()]

    def loads(indent, c_name):
        for k in streamed:
            src.emit(f"{spec.leaf_syms[k].name} = r{k}[{inner}]", indent)

    def out_ref(c_name):
        return f"w0[{inner}]"

    def loop(indent, body):
        """for c [for j]: body(indent) with leaves hoisted before the innermost loop."""
        if layout == "row":
            hoist(indent, "c")
            src.emit("for c in range(nc):", indent)
            body(indent + 1, "c")
        else:
            src.emit("for c in range(nc):", indent)
            hoist(indent + 1, "c")
            src.emit("for j in range(hi - lo):", indent + 1)
            body(indent + 2, "c")

    base = 2

    def acc_init(name, value):
        if layout == "row":
            src.emit(f"{name} = {value}", base)
        else:
            src.emit(f"{name} = np.full(hi - lo, {value}, np.float64)", base)

    def acc_ref(name):
        return name if layout == "row" else f"{name}[j]"

    def prologue_body(indent, c):
        loads(indent, c)
        for ins in prologue:
            src.emit(instr_line(src, ins), indent)

    if ln:
        acc_init("s1", "0.0")

        def p1(indent, c):
            prologue_body(indent, c)
            src.emit(f"{acc_ref('s1')} += {x}", indent)
        loop(base, p1)
        if layout == "row":
            src.emit("mean = s1 / nc", base)
        else:
            src.emit("mean = s1 / nc", base)
        acc_init("s2", "0.0")

        def p2(indent, c):
            prologue_body(indent, c)
            m = "mean" if layout == "row" else "mean[j]"
            src.emit(f"d = {x} - {m}", indent)
            src.emit(f"{acc_ref('s2')} += d * d", indent)
        loop(base, p2)
        src.emit(f"rstd = 1.0 / np.sqrt(s2 / nc + {spec.eps!r})", base)

        def p3(indent, c):
            prologue_body(indent, c)
            m = "mean" if layout == "row" else "mean[j]"
            rs = "rstd" if layout == "row" else "rstd[j]"
            expr = f"({x} - {m}) * {rs}"
            if spec.weight is not None:
                expr = f"({expr}) * {spec.weight.name}"
            if spec.bias is not None:
                expr = f"{expr} + {spec.bias.name}"
            src.emit(f"{spec.y.name} = {NP_TYPES[spec.y.dtype]}({expr})", indent)
            for ins in epilogue:
                src.emit(instr_line(src, ins), indent)
            src.emit(f"{out_ref(c)} = {out}", indent)
        loop(base, p3)
    else:  # softmax
        acc_init("m", "-np.inf")

        def p1(indent, c):
            prologue_body(indent, c)
            src.emit(f"if {x} > {acc_ref('m')}:", indent)
            src.emit(f"{acc_ref('m')} = {x}", indent + 1)
        loop(base, p1)

        def p2(indent, c):
            prologue_body(indent, c)
            m = "m" if layout == "row" else "m[j]"
            if out_dtype == "f32":
                src.emit(f"{out_ref(c)} = exp32(np.float32({x} - {m}))", indent)
            else:
                src.emit(f"{out_ref(c)} = math.exp({x} - {m})", indent)
        loop(base, p2)
        acc_init("s", "0.0")

        def p3(indent, c):
            src.emit(f"{acc_ref('s')} += {out_ref(c)}", indent)
        loop(base, p3)
        src.emit("inv = 1.0 / s", base)

        def p4(indent, c):
            loads(indent, c)
            i = "inv" if layout == "row" else "inv[j]"
            src.emit(f"{spec.y.name} = np.float32({out_ref(c)} * {i})", indent)
            for ins in epilogue:
                src.emit(instr_line(src, ins), indent)
            src.emit(f"{out_ref(c)} = {out}", indent)
        loop(base, p4)
    args = ["task_lo", "task_hi"] + [f"a{k}" for k in range(len(nest.inputs))] + ["o0"]
    sig = _signature(_dense_dtypes(nest, in_dtypes, [out_dtype]))
    return src.module(sig, flags(fastmath), args)


def _norm_rows_staged(src: Source, spec: NormSpec, nest: LoopNest, sizes, prologue, epilogue,
                      x: str, out: str, ln: bool) -> None:
    """Row norms staged through the output row: the prologue is evaluated once into the
    output, the statistics come from lane-split row reductions (prelude), and the last
    pass normalizes in place and applies the epilogue. Every pass is a plain loop over
    a row in L1 that LLVM vectorizes."""
    nd = len(nest.shape)
    r = nest.reduce
    outer = [d for d in range(nd) if d != r]
    names = {d: f"i{d}" for d in outer}
    src.emit("for task in range(task_lo, task_hi):", 1)
    _decompose(src, "task", outer, sizes, 2)
    streamed = []
    for k, acc in enumerate(nest.inputs):
        idx = dict(names)
        if r in acc.dims():
            idx[r] = ":"
            src.emit(f"r{k} = a{k}{_index(acc, idx)}", 2)
            streamed.append(k)
        else:
            src.emit(f"{spec.leaf_syms[k].name} = a{k}{_index(acc, idx)}", 2)
    idx = dict(names)
    idx[r] = ":"
    src.emit(f"w0 = o0{_index(nest.outputs[0], idx)}", 2)

    def loads(indent):
        for k in streamed:
            src.emit(f"{spec.leaf_syms[k].name} = r{k}[c]", indent)

    src.emit("for c in range(nc):", 2)
    loads(3)
    for ins in prologue:
        src.emit(instr_line(src, ins), 3)
    src.emit(f"w0[c] = {x}", 3)
    y = spec.y.name
    if ln:
        src.emit("mean = row_sum64(w0) / nc", 2)
        src.emit("rstd = 1.0 / np.sqrt(row_sqdev64(w0, np.float32(mean)) / nc + "
                 f"{spec.eps!r})", 2)
        src.emit("for c in range(nc):", 2)
        loads(3)
        expr = "(w0[c] - mean) * rstd"
        if spec.weight is not None:
            expr = f"({expr}) * {spec.weight.name}"
        if spec.bias is not None:
            expr = f"{expr} + {spec.bias.name}"
        src.emit(f"{y} = np.float32({expr})", 3)
    else:
        src.emit("m = row_max(w0)", 2)
        src.emit("for c in range(nc):", 2)
        src.emit("w0[c] = exp32(w0[c] - m)", 3)
        src.emit("inv = np.float32(1.0 / row_sum64(w0))", 2)
        src.emit("for c in range(nc):", 2)
        loads(3)
        src.emit(f"{y} = w0[c] * inv", 3)
    for ins in epilogue:
        src.emit(instr_line(src, ins), 3)
    src.emit(f"w0[c] = {out}", 3)


# ---- fixed kernels (same source for every shape) --------------------------------------------


def attention_softmax_source(fastmath: bool) -> str:
    """Bias + unnormalized softmax in place over rows of a score block s[n, rows, nk].

    rel_h[n, rows, kh] is added to key rows, rel_w[n, rows, kw] to key columns
    (keys are laid out y * kw + x); the row max is subtracted before exp. The
    row is left as exp(x - max) and 1 / sum is written to inv[n * rows]: the
    caller scales the (much narrower) rows of P @ V instead of every score.
    """
    src = Source("attention: scale + decomposed rel-pos + softmax on a score block")
    for line in [
        "n, rows, nk = s.shape",
        "kh = rh.shape[2]",
        "kw = rw.shape[2]",
        "for task in range(task_lo, task_hi):",
        "    bi = task // rows",
        "    r = task - bi * rows",
        "    row = s[bi, r]",
        "    if has_rel:",
        "        wr = rw[bi, r]",
        "        for y in range(kh):",
        "            h = rh[bi, r, y]",
        "            seg = row[y * kw:(y + 1) * kw]",
        "            for x in range(kw):",
        "                seg[x] = seg[x] * scale + (h + wr[x])",
        "    else:",
        "        for c in range(nk):",
        "            row[c] = row[c] * scale",
        "    m = row_max(row)",
        "    for c in range(nk):",
        "        row[c] = exp32(row[c] - m)",
        "    total = row_sum64(row)",
        "    inv[task] = np.float32(1.0 / total)",
    ]:
        src.emit(line, 1)
    sig = ("nt.void(nt.int64, nt.int64, nt.Array(nt.float32, 3, 'C'), "
           "nt.Array(nt.float32, 3, 'C', readonly=True), "
           "nt.Array(nt.float32, 3, 'C', readonly=True), nt.float32, nt.boolean, "
           "nt.Array(nt.float32, 1, 'C'))")
    return src.module(sig, flags(fastmath), ["task_lo", "task_hi", "s", "rh", "rw", "scale",
                                             "has_rel", "inv"])


def native_gemm_source(dtype: str, fastmath: bool) -> str:
    """c[b, i, :] = sum_k a[b, i, k] * b[b, k, :], one task per output row."""
    src = Source(f"native gemm ({dtype})")
    for line in [
        "m = c.shape[1]",
        "kk = a.shape[2]",
        "n = c.shape[2]",
        "for task in range(task_lo, task_hi):",
        "    bi = task // m",
        "    i = task - bi * m",
        "    crow = c[bi, i]",
        "    for j in range(n):",
        "        crow[j] = 0",
        "    for k in range(kk):",
        "        aik = a[bi, i, k]",
        "        brow = b[bi, k]",
        "        for j in range(n):",
        "            crow[j] += aik * brow[j]",
    ]:
        src.emit(line, 1)
    t = NUMBA_TYPES[dtype]
    sig = (f"nt.void(nt.int64, nt.int64, nt.Array(nt.{t}, 3, 'C', readonly=True), "
           f"nt.Array(nt.{t}, 3, 'C', readonly=True), nt.Array(nt.{t}, 3, 'C'))")
    return src.module(sig, flags(fastmath), ["task_lo", "task_hi", "a", "b", "c"])
