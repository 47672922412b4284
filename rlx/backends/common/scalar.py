"""Scalar programs: a kernel's per-element computation as SSA over primitive ops.

Each elementwise op in the registry states its meaning as a composition of the
primitives in `rlx.ir.ops.elementwise.PRIMITIVES` (its ``extra["scalar"]``).
`ScalarProgram` is the emitter ``E`` those decompositions are called with:
every call appends one instruction and returns a symbol. Python numbers
become typed constants of the other operand's dtype, so float32 kernels stay
float32. Code generators translate the instruction list line by line.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlx.ir.ops.elementwise import PRIMITIVES

COMPARE = frozenset({"lt", "gt", "le", "ge", "eq"})
UNARY = frozenset({"neg", "abs", "exp", "log", "sqrt", "erf", "tanh", "sin", "cos"})
BINARY = frozenset({"add", "sub", "mul", "div", "max", "min", "pow"}) | COMPARE


@dataclass(frozen=True)
class Sym:
    name: str
    dtype: str


@dataclass(frozen=True)
class Const:
    value: float
    dtype: str


@dataclass(frozen=True)
class Instr:
    out: Sym
    prim: str
    args: tuple
    #: the target dtype of a cast
    to: str | None = None


class ScalarProgram:
    """An SSA list of primitive scalar instructions with named inputs."""

    def __init__(self, default_dtype: str = "f32"):
        self.instrs: list[Instr] = []
        self.inputs: list[Sym] = []
        self.default_dtype = default_dtype
        self._n = 0

    # ---- building ------------------------------------------------------------------

    def input(self, name: str, dtype: str) -> Sym:
        s = Sym(name, dtype)
        self.inputs.append(s)
        return s

    def _fresh(self, dtype: str) -> Sym:
        s = Sym(f"t{self._n}", dtype)
        self._n += 1
        return s

    def _lift(self, x, like: str | None) -> Sym | Const:
        if isinstance(x, (Sym, Const)):
            return x
        if isinstance(x, bool):
            return Const(float(x), "bool")
        return Const(float(x), like or self.default_dtype)

    def _emit(self, prim: str, args: tuple, dtype: str, to: str | None = None) -> Sym:
        out = self._fresh(dtype)
        self.instrs.append(Instr(out, prim, args, to))
        return out

    def __getattr__(self, prim: str):
        if prim.startswith("_") or prim not in PRIMITIVES:
            raise AttributeError(prim)

        def emit(*args):
            return self.apply(prim, *args)

        return emit

    def apply(self, prim: str, *args):
        if prim == "cast":
            x, to = args
            if not isinstance(x, (Sym, Const)):
                return Const(float(x), to)
            return self._emit("cast", (x,), to, to)
        if prim == "select":
            c, a, b = args
            like = _dtype_of(a) or _dtype_of(b)
            a, b = self._lift(a, like), self._lift(b, like)
            return self._emit("select", (self._lift(c, "bool"), a, b), a.dtype)
        like = next((_dtype_of(a) for a in args if _dtype_of(a) is not None), None)
        lifted = tuple(self._lift(a, like) for a in args)
        if prim in COMPARE:
            return self._emit(prim, lifted, "bool")
        return self._emit(prim, lifted, lifted[0].dtype)

    # ---- reading ----------------------------------------------------------------------

    def prims(self) -> set[str]:
        return {i.prim for i in self.instrs}

    def dtypes(self) -> set[str]:
        out = {s.dtype for s in self.inputs}
        for i in self.instrs:
            out.add(i.out.dtype)
            out.update(a.dtype for a in i.args)
        return out

    def __str__(self) -> str:
        def show(a):
            return a.name if isinstance(a, Sym) else f"{a.value!r}:{a.dtype}"

        lines = [f"{i.out.name}:{i.out.dtype} = {i.prim}({', '.join(show(a) for a in i.args)})"
                 for i in self.instrs]
        return "\n".join(lines)


def _dtype_of(x) -> str | None:
    return x.dtype if isinstance(x, (Sym, Const)) else None


def emit_node(program: ScalarProgram, op, args: list, attrs: dict):
    """Append the scalar decomposition of one elementwise op; returns its result."""
    scalar = op.extra.get("scalar")
    if scalar is None:
        raise KeyError(f"op {op.name} has no scalar decomposition")
    return scalar(program, *args, attrs)
