"""Scalar programs (`rlx.backends.common.scalar`) translated instruction by instruction to IR.

Semantics follow the numpy reference of each primitive: `max`/`min`
propagate NaN like ``np.maximum`` (a NaN in either operand wins), compares are
ordered (NaN compares false), float -> int casts truncate, integer `div` is
true division truncated back (numpy's ``a / b`` then ``astype``), and `pow` is
computed in float64 and rounded (one correctly rounded libm call).
"""

from __future__ import annotations

from llvmlite import ir

from rlx.backends.common.scalar import Const, Instr, ScalarProgram, Sym
from rlx.backends.llvm.irutil import FLOATS, REG, const, convert
from rlx.backends.llvm.mathlib import MathLib

_FCMP = {"lt": "<", "gt": ">", "le": "<=", "ge": ">=", "eq": "=="}
#: fast-math flags of the `fastmath` profile setting (NaN and inf keep their meaning)
FAST_FLAGS = ("contract", "reassoc", "nsz", "arcp")


class Env:
    """Symbol name -> IR value, plus the math library of the module being emitted."""

    def __init__(self, math: MathLib, values: dict[str, ir.Value] | None = None,
                 fastmath: bool = False):
        self.math = math
        self.values = dict(values or {})
        #: flags on the program's own float arithmetic when the profile allows fast math
        #: (never inside the math library, whose rounding tricks need strict IEEE order)
        self.fast = FAST_FLAGS if fastmath else ()

    def get(self, a):
        if isinstance(a, Sym):
            return self.values[a.name]
        if isinstance(a, Const):
            return const(a.dtype, a.value)
        raise TypeError(f"not a scalar operand: {a!r}")

    def value_as(self, b, a, dtype: str):
        """Operand `a` converted to `dtype` (stores into a buffer of another dtype)."""
        src = a.dtype
        if isinstance(a, Const):
            return const(dtype, a.value)
        return convert(b, self.get(a), src, dtype)


def emit_instr(b: ir.IRBuilder, env: Env, ins: Instr) -> None:
    args = [env.get(a) for a in ins.args]
    p = ins.prim
    in_dt = ins.args[0].dtype if ins.args else ins.out.dtype
    fl = in_dt in FLOATS
    if p in ("add", "sub", "mul"):
        op = {"add": (b.fadd, b.add), "sub": (b.fsub, b.sub), "mul": (b.fmul, b.mul)}[p]
        v = op[0](args[0], args[1], flags=env.fast) if fl else op[1](args[0], args[1])
    elif p == "div":
        if fl:
            v = b.fdiv(args[0], args[1], flags=env.fast)
        else:
            q = b.fdiv(convert(b, args[0], in_dt, "f64"), convert(b, args[1], in_dt, "f64"))
            v = convert(b, q, "f64", ins.out.dtype)
    elif p in ("max", "min"):
        x, y = args
        if fl:
            better = b.fcmp_ordered(">" if p == "max" else "<", x, y)
            take_x = b.or_(better, b.fcmp_unordered("uno", x, x))
        else:
            take_x = b.icmp_signed(">" if p == "max" else "<", x, y)
        v = b.select(take_x, x, y)
    elif p == "pow":
        x, y = (convert(b, a, in_dt, "f64") for a in args)
        v = convert(b, env.math.libm(b, "pow", [x, y]), "f64", ins.out.dtype)
    elif p == "neg":
        v = b.fneg(args[0]) if fl else b.neg(args[0])
    elif p == "abs":
        if fl:
            v = env.math.fabs(b, args[0])
        else:
            x = args[0]
            v = b.select(b.icmp_signed("<", x, ir.Constant(x.type, 0)), b.neg(x), x)
    elif p in ("exp", "log", "erf", "tanh", "sin", "cos"):
        v = env.math.unary(b, p, args[0])
    elif p == "sqrt":
        v = env.math.sqrt(b, args[0])
    elif p in _FCMP:
        if in_dt in FLOATS:
            v = b.fcmp_ordered(_FCMP[p], args[0], args[1])
        elif in_dt == "bool":
            v = b.icmp_unsigned(_FCMP[p], args[0], args[1])
        else:
            v = b.icmp_signed(_FCMP[p], args[0], args[1])
    elif p == "select":
        c, x, y = args
        if x.type != y.type:  # a literal lifted with another dtype
            y = convert(b, y, ins.args[2].dtype, ins.args[1].dtype)
        v = b.select(c, x, y)
    elif p == "cast":
        v = convert(b, args[0], in_dt, ins.to)
    else:  # pragma: no cover - PRIMITIVES is closed
        raise KeyError(f"unknown primitive {p}")
    if v.type != REG[ins.out.dtype]:  # e.g. a comparison stored as its result dtype
        v = convert(b, v, _dtype_of_type(v.type), ins.out.dtype)
    env.values[ins.out.name] = v


def emit_instrs(b: ir.IRBuilder, env: Env, instrs) -> None:
    for ins in instrs:
        emit_instr(b, env, ins)


def emit_program(b: ir.IRBuilder, env: Env, program: ScalarProgram) -> None:
    emit_instrs(b, env, program.instrs)


def _dtype_of_type(t) -> str:
    for name, ty in REG.items():
        if ty == t:
            return name
    raise TypeError(t)

