"""Kernel specs: what one kernel computes, independent of how code is generated.

`describe(node)` accepts a plain node or a `fused` group and returns one of

* `ElementwiseSpec` — a scalar program evaluated over a loop nest (fused
  elementwise chains, single elementwise ops, and copies such as transpose or
  slice, which are the identity program over a strided read);
* `GemmSpec` — a (batched) matmul whose output is then updated in place by an
  optional elementwise epilogue (bias, GELU, residual, scale);
* `NormSpec` — layer_norm or softmax over one axis, with an optional
  elementwise prologue (recomputed per pass) and epilogue;
* `AttentionSpec` — blocked softmax(q kᵀ·scale + decomposed rel-pos) v;
* `HostSpec` — data movement best done by the host array library (pad,
  concat, gather, im2col, reductions, fills);

or None when the node is not supported (the runtime then runs it on the
reference kernels). Operands are numbered as the node's inputs; the special
argument `OUT` stands for the kernel's first output buffer (a GEMM epilogue
reads and rewrites it in place).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlx.backends.common.nest import LoopNest, build_nest
from rlx.backends.common.scalar import Const, ScalarProgram, Sym, emit_node
from rlx.ir.graph import Graph, Node, Value
from rlx.ir.ops import get_op
from rlx.ir.views import VIEW_OPS, StridedView, batched_view, gemm_operand_view, view_of

#: argument number meaning "the kernel's output buffer 0"
OUT = -1
SUPPORTED_DTYPES = frozenset({"f32", "f64", "i32", "i64", "bool"})
HOST_OPS = frozenset({"pad", "concat", "gather", "im2col", "reduce_sum", "reduce_mean",
                      "reduce_max", "const", "arange"})
COPY_OPS = frozenset({"transpose", "broadcast_to", "slice"})


class Unsupported(Exception):
    """Raised inside `describe` helpers; `describe` turns it into None."""


@dataclass
class ElementwiseSpec:
    nest: LoopNest
    program: ScalarProgram
    #: symbol holding each nest input's element (aligned with nest.inputs)
    leaf_syms: list[Sym]
    #: symbol or constant stored to each nest output (aligned with nest.outputs)
    out_syms: list
    ops: list[str] = field(default_factory=list)
    kind: str = "elementwise"


@dataclass
class GemmSpec:
    a: int
    b: int
    transpose_a: bool
    transpose_b: bool
    a_shape: tuple
    b_shape: tuple
    out_shape: tuple
    #: applied in place to the output after the product (reads OUT), or None
    epilogue: ElementwiseSpec | None = None
    ops: list[str] = field(default_factory=list)
    kind: str = "gemm"
    #: index maps of the operands over their kernel arguments (`rlx.ir.views.gemm_operand_view`:
    #: shape [*batch, R, C] with the first batch dim possibly split, unit stride along R or
    #: C), or None when the argument is the operand itself (contiguous)
    a_view: StridedView | None = None
    b_view: StridedView | None = None
    #: "bf16": operands rounded to bf16, f32 accumulation (a kernel on the CPU's matrix
    #: units; `describe(..., bf16=True)`); "f32" otherwise
    precision: str = "f32"


@dataclass
class NormSpec:
    op: str  # layer_norm | softmax
    eps: float
    nest: LoopNest  # reduce = the normalized axis
    program: ScalarProgram
    leaf_syms: list[Sym]
    #: the norm input (computed by the prologue, program.instrs[:split])
    x: object
    split: int
    #: the normalized value the epilogue (program.instrs[split:]) reads
    y: Sym
    out: object
    weight: Sym | None = None
    bias: Sym | None = None
    ops: list[str] = field(default_factory=list)
    kind: str = "norm"


@dataclass
class AttentionSpec:
    q_shape: tuple
    k_shape: tuple
    v_shape: tuple
    rel: tuple | None  # (kh, kw) when a decomposed rel-pos bias is given
    scale: float
    block: int = 256
    #: per attention input (q, k, v, rel_h, rel_w): (kernel argument, index map over the
    #: operand's shape, whose batch dim may be split into several leading dims), or None
    #: when absent; plain nodes read their inputs as they are
    operands: tuple = ()
    ops: list[str] = field(default_factory=lambda: ["attention"])
    kind: str = "attention"


@dataclass
class HostSpec:
    op: str
    attrs: dict
    in_shapes: list
    out_shape: tuple
    ops: list[str] = field(default_factory=list)
    kind: str = "host"


KernelSpec = ElementwiseSpec | GemmSpec | NormSpec | AttentionSpec | HostSpec


# ---- walking a body ----------------------------------------------------------------------


class _Leaves:
    """Collects the nest inputs of a body: one access (and symbol) per distinct read."""

    def __init__(self, program: ScalarProgram, arg_of: dict[int, int]):
        self.program = program
        self.arg_of = arg_of  # body input value id -> kernel argument
        self.views: list[tuple[int, StridedView]] = []
        self.syms: list[Sym] = []
        self._memo: dict[tuple, Sym] = {}

    def read(self, root: Value, chain: list, space, final_space=None) -> Sym:
        view = view_of(root.shape, chain, space)
        if view is None:
            raise Unsupported(f"{root.ref} is not a strided view over {space}")
        if final_space is not None and tuple(final_space) != view.shape:
            view = view.reshape(final_space)
            if view is None:
                raise Unsupported(f"{root.ref} does not map into {final_space}")
        arg = self.arg_of[id(root)]
        key = (arg, view)
        if key not in self._memo:
            sym = self.program.input(f"x{len(self.syms)}", root.dtype)
            self.views.append((arg, view))
            self.syms.append(sym)
            self._memo[key] = sym
        return self._memo[key]

    def add(self, arg: int, view: StridedView, dtype: str) -> Sym:
        sym = self.program.input(f"x{len(self.syms)}", dtype)
        self.views.append((arg, view))
        self.syms.append(sym)
        return sym


class _Env:
    """Values of a body as scalar symbols/constants, or deferred views of a body input."""

    def __init__(self, leaves: _Leaves):
        self.leaves = leaves
        self.scalar: dict[int, object] = {}
        self.views: dict[int, tuple[Value, list]] = {}

    def bind_input(self, v: Value) -> None:
        self.views[id(v)] = (v, [])

    def movement(self, node: Node) -> bool:
        """Record a view op; False if its operand is computed inside (not a view)."""
        src = node.inputs[0]
        if id(src) in self.scalar:
            c = self.scalar[id(src)]
            if isinstance(c, (Const, float, int)):  # a view of a literal is the literal
                self.scalar[id(node.output)] = c
                return True
            return False
        root, chain = self.views[id(src)]
        self.views[id(node.output)] = (root, chain + [node])
        return True

    def get(self, v: Value, space, final_space=None):
        if id(v) in self.scalar:
            return self.scalar[id(v)]
        if id(v) not in self.views:
            raise Unsupported(f"{v.ref} is not available in the kernel")
        root, chain = self.views[id(v)]
        return self.leaves.read(root, chain, space, final_space)


def _check_dtypes(values) -> None:
    for v in values:
        if v is not None and v.dtype not in SUPPORTED_DTYPES:
            raise Unsupported(f"dtype {v.dtype}")


def _elementwise_op(node: Node) -> bool:
    return node.body is None and get_op(node.op).category == "elementwise"


def _body_env(body: Graph, args: list[int] | None = None):
    program = ScalarProgram()
    arg_of = {id(v): (args[i] if args else i) for i, v in enumerate(body.inputs)}
    leaves = _Leaves(program, arg_of)
    env = _Env(leaves)
    for v in body.inputs:
        env.bind_input(v)
    return program, leaves, env


def _apply(env: _Env, node: Node, space, final_space=None) -> None:
    op = get_op(node.op)
    if node.op == "const":
        env.scalar[id(node.output)] = emit_node(env.leaves.program, op, [], node.attrs)
        return
    args = [env.get(v, node.output.shape if space is None else space, final_space)
            for v in node.inputs]
    env.scalar[id(node.output)] = emit_node(env.leaves.program, op, args, node.attrs)


# ---- elementwise ----------------------------------------------------------------------------


def _elementwise_from_body(body: Graph) -> ElementwiseSpec:
    space = body.outputs[0].shape
    program, leaves, env = _body_env(body)
    ops = []
    for node in body.nodes:
        if node.op in VIEW_OPS:
            if not env.movement(node):
                raise Unsupported("view of a computed value inside an elementwise group")
            continue
        if not _elementwise_op(node):
            raise Unsupported(f"{node.op} in an elementwise group")
        if node.op != "const" and node.output.shape != space:
            raise Unsupported("elementwise group members of different shapes")
        _apply(env, node, space)
        ops.append(node.op)
    outs = [env.scalar[id(v)] for v in body.outputs]
    return _finish_elementwise(program, leaves, outs, space, ops)


def _finish_elementwise(program, leaves, outs, space, ops, out_args=None) -> ElementwiseSpec:
    out_views = [(out_args[i] if out_args else i, StridedView.contiguous(space))
                 for i in range(len(outs))]
    nest = build_nest(space, leaves.views, out_views)
    outs = [program._lift(o, None) if not isinstance(o, (Sym, Const)) else o for o in outs]
    return ElementwiseSpec(nest, program, leaves.syms, outs, ops)


def _single_elementwise(node: Node) -> ElementwiseSpec:
    body = Graph(node.op)
    ins = [Value(f"in{i}", v.type, "input") for i, v in enumerate(node.present_inputs())]
    body.inputs = ins
    n = Node(node.op, ins, node.attrs)
    n.outputs = [Value(v.name, v.type, "result", n, i) for i, v in enumerate(node.outputs)]
    body.nodes = [n]
    body.outputs = list(n.outputs)
    if node.op in COPY_OPS:
        program, leaves, env = _body_env(body)
        env.movement(n)
        out = env.get(n.output, n.output.shape)
        return _finish_elementwise(program, leaves, [out], n.output.shape, [node.op])
    return _elementwise_from_body(body)


# ---- gemm ----------------------------------------------------------------------------------


def _gemm_from_body(body: Graph) -> GemmSpec:
    mms = [n for n in body.nodes if n.op == "matmul"]
    if len(mms) != 1:
        raise Unsupported("gemm group needs exactly one matmul")
    mm = mms[0]
    a, b = mm.inputs
    arg_of = {id(v): i for i, v in enumerate(body.inputs)}
    chain = [n for n in body.nodes if n is not mm]
    # The kernel space: the finest shape among the running value's shapes.
    space = mm.output.shape
    running = mm.output
    for n in chain:
        if any(v is running for v in n.inputs):
            running = n.output
            if n.op == "reshape" and len(n.output.shape) > len(space):
                space = n.output.shape
    program, leaves, env = _body_env(body)
    acc = leaves.add(OUT, StridedView.contiguous(space), mm.output.dtype)
    env.scalar[id(mm.output)] = acc
    ops = ["matmul"]
    for n in chain:
        if n.op in VIEW_OPS and id(n.inputs[0]) in env.scalar and \
                isinstance(env.scalar[id(n.inputs[0])], Sym) and n.op == "reshape":
            env.scalar[id(n.output)] = env.scalar[id(n.inputs[0])]  # reshape of the running value
            continue
        if n.op in VIEW_OPS:
            if not env.movement(n):
                raise Unsupported("view of a computed value in a gemm epilogue")
            continue
        if not _elementwise_op(n):
            raise Unsupported(f"{n.op} in a gemm epilogue")
        if n.op == "const":
            _apply(env, n, None)
            continue
        _apply(env, n, n.output.shape, final_space=space)
        ops.append(n.op)
    out = env.scalar[id(body.outputs[0])]
    epilogue = None
    if len(ops) > 1:
        epilogue = _finish_elementwise(program, leaves, [out], space, ops[1:])
    (a_arg, a_view), (b_arg, b_view) = (_gemm_operand(env, arg_of, v) for v in (a, b))
    return GemmSpec(a_arg, b_arg, mm.attrs["transpose_a"], mm.attrs["transpose_b"], a.shape,
                    b.shape, mm.output.shape, epilogue, ops, a_view=a_view, b_view=b_view)


def _gemm_operand(env: _Env, arg_of: dict, v: Value) -> tuple[int, StridedView | None]:
    """(kernel argument, index map or None) of a matmul operand inside a gemm group."""
    if id(v) in arg_of:
        return arg_of[id(v)], None
    if id(v) not in env.views:
        raise Unsupported("matmul operand computed inside the gemm group")
    root, chain = env.views[id(v)]
    view = gemm_operand_view(root.shape, chain, v.shape)
    if view is None:
        raise Unsupported(f"{v.ref} is not a BLAS-readable view")
    return arg_of[id(root)], view


def _plain_gemm(node: Node) -> GemmSpec:
    a, b = node.inputs
    return GemmSpec(0, 1, node.attrs["transpose_a"], node.attrs["transpose_b"], a.shape,
                    b.shape, node.output.shape, None, ["matmul"])


# ---- norm ------------------------------------------------------------------------------------


def _norm_from_body(body: Graph) -> NormSpec:
    norms = [n for n in body.nodes if n.op in ("layer_norm", "softmax")]
    if len(norms) != 1:
        raise Unsupported("norm group needs exactly one layer_norm/softmax")
    norm = norms[0]
    space = norm.output.shape
    axis = norm.attrs["axis"]
    program, leaves, env = _body_env(body)
    ops = []
    split = None
    x_sym = y_sym = w_sym = b_sym = None
    for node in body.nodes:
        if node.op in VIEW_OPS:
            if not env.movement(node):
                raise Unsupported("view of a computed value in a norm group")
            continue
        if node is norm:
            x_sym = env.get(node.inputs[0], space)
            if isinstance(x_sym, (Const, float, int)):
                raise Unsupported("norm of a constant")
            for k, v in enumerate(node.inputs[1:3]):
                if v is None:
                    continue
                if id(v) not in env.views or env.views[id(v)][1]:
                    raise Unsupported("layer_norm weight/bias must be group inputs")
                strides = tuple(1 if d == axis else 0 for d in range(len(space)))
                sym = leaves.add(leaves.arg_of[id(v)], StridedView(space, strides, 0), v.dtype)
                if k == 0:
                    w_sym = sym
                else:
                    b_sym = sym
            split = len(program.instrs)
            y_sym = program.input("y", norm.output.dtype)
            program.inputs.pop()  # y is not a loaded leaf
            env.scalar[id(norm.output)] = y_sym
            ops.append(node.op)
            continue
        if not _elementwise_op(node):
            raise Unsupported(f"{node.op} in a norm group")
        if node.op != "const" and node.output.shape != space:
            raise Unsupported("norm group members of different shapes")
        _apply(env, node, space)
        ops.append(node.op)
    out = env.scalar[id(body.outputs[0])]
    nest = build_nest(space, leaves.views, [(0, StridedView.contiguous(space))], reduce=axis)
    return NormSpec(norm.op, norm.attrs.get("eps", 0.0), nest, program, leaves.syms, x_sym,
                    split, y_sym, out, w_sym, b_sym, ops)


def _plain_norm(node: Node) -> NormSpec:
    body = Graph(node.op)
    ins = [Value(f"in{i}", v.type, "input") if v is not None else None
           for i, v in enumerate(node.inputs)]
    body.inputs = [v for v in ins if v is not None]
    n = Node(node.op, ins, node.attrs)
    n.outputs = [Value("out", node.output.type, "result", n, 0)]
    body.nodes = [n]
    body.outputs = [n.output]
    return _norm_from_body(body)


# ---- attention ------------------------------------------------------------------------------


def _attention(node: Node, operands: tuple, block: int) -> AttentionSpec | None:
    q, k, v, rh, rw = node.inputs
    if q.dtype != "f32":
        return None
    rel = (rh.shape[2], rw.shape[2]) if rh is not None else None
    return AttentionSpec(q.shape, k.shape, v.shape, rel, node.attrs["scale"], block, operands)


def _attention_from_body(body: Graph, block: int) -> AttentionSpec | None:
    (attn,) = [n for n in body.nodes if n.op == "attention"] or [None]
    if attn is None or any(n is not attn and n.op not in VIEW_OPS for n in body.nodes):
        raise Unsupported("attention group holds other ops")
    program, leaves, env = _body_env(body)
    for n in body.nodes:
        if n is not attn and not env.movement(n):
            raise Unsupported("view of a computed value in an attention group")
    operands = []
    for v in attn.inputs:
        if v is None:
            operands.append(None)
            continue
        root, chain = env.views[id(v)]
        view = batched_view(root.shape, chain, v.shape)
        if view is None:
            raise Unsupported(f"{v.ref} is not a strided view")
        operands.append((leaves.arg_of[id(root)], view))
    return _attention(attn, tuple(operands), block)


# ---- entry point ----------------------------------------------------------------------------


def reduced_precision(node: Node) -> bool:
    """True when `node` (or an op in its fused body) computes a product in bf16
    (`rlx.passes.precision`): a kernel for it must round its operands exactly so."""
    nodes = node.body.nodes if node.op == "fused" else [node]
    return any(n.attrs.get("precision", "f32") != "f32" for n in nodes)


def describe(node: Node, attention_block: int = 256, bf16: bool = False) -> KernelSpec | None:
    """The kernel spec of `node`, or None if it is not supported natively.

    Nodes computing a product in bf16 (`reduced_precision`) are described only when the
    caller has a bf16 GEMM for the device (`bf16`: the llvm backend on a CPU with
    AVX512-BF16 or AMX): a matmul or fused gemm group then gets a `GemmSpec` with
    ``precision = "bf16"``. Otherwise, and for bf16 attention, None: the node runs on the
    reference kernel, which computes the bf16 semantics."""
    if reduced_precision(node):
        return _bf16_gemm(node, attention_block) if bf16 else None
    return _describe_f32(node, attention_block)


def _describe_f32(node: Node, attention_block: int) -> KernelSpec | None:
    """`describe` of a node, its precision attributes aside."""
    try:
        _check_dtypes(node.inputs)
        _check_dtypes(node.outputs)
        if node.op == "fused":
            for inner in node.body.nodes:
                _check_dtypes(inner.inputs)
                _check_dtypes(inner.outputs)
            kind = node.attrs["kind"]
            if kind == "elementwise":
                return _elementwise_from_body(node.body)
            if kind == "gemm":
                return _gemm_from_body(node.body)
            if kind == "norm":
                return _norm_from_body(node.body)
            if kind == "attention":
                return _attention_from_body(node.body, attention_block)
            return None
        if node.op == "matmul":
            if node.output.dtype not in ("f32", "f64"):
                return None
            return _plain_gemm(node)
        if node.op in ("layer_norm", "softmax"):
            if node.output.dtype not in ("f32", "f64"):
                return None
            return _plain_norm(node)
        if node.op == "attention":
            operands = tuple((i, StridedView.contiguous(v.shape)) if v is not None else None
                             for i, v in enumerate(node.inputs))
            return _attention(node, operands, attention_block)
        if node.op in HOST_OPS:
            return HostSpec(node.op, dict(node.attrs),
                            [v.shape if v is not None else None for v in node.inputs],
                            node.output.shape, [node.op])
        if node.op in COPY_OPS or _elementwise_op(node):
            return _single_elementwise(node)
    except Unsupported:
        return None
    return None


def _bf16_gemm(node: Node, attention_block: int) -> GemmSpec | None:
    """A bf16 product's spec: a matmul or gemm group on f32 operands, else None."""
    gemm = node.op == "matmul" or (node.op == "fused" and node.attrs.get("kind") == "gemm")
    if not gemm:
        return None
    mm = node if node.op == "matmul" else next(
        (n for n in node.body.nodes if n.op == "matmul"), None)
    if mm is None or any(v.dtype != "f32" for v in list(mm.inputs) + list(mm.outputs)):
        return None
    if node.op == "fused" and any(n is not mm and n.attrs.get("precision", "f32") != "f32"
                                  for n in node.body.nodes):
        return None
    spec = _describe_f32(node, attention_block)
    if not isinstance(spec, GemmSpec):
        return None
    spec.precision = "bf16"
    return spec
