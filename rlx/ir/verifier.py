"""The verifier: checks the invariants every pass must preserve.

Run between passes in debug mode, so the first pass that breaks a graph is the
one named in the error, not some later consumer.
"""

from __future__ import annotations

from typing import Mapping

from rlx.errors import RlxError, VerifyError
from rlx.ir.graph import INPUT, RESULT, WEIGHT, Graph, Node, Value
from rlx.ir.ops import OPS


def _where(graph: Graph, node: Node | None = None) -> str:
    where = f"graph {graph.name}"
    if node is not None:
        outs = ", ".join(v.ref for v in node.outputs) or "(no outputs)"
        where += f", node {outs} = {node.op}"
    return where


def verify(graph: Graph, weights: Mapping | None = None, _region: bool = False) -> None:
    """Raise VerifyError on the first broken invariant.

    Checks: known ops and canonical attributes; every operand defined before use
    (hence no cycles); single definition of each value; result types equal to
    what the op's shape rule infers; weights declared, derived weights computed
    from weights only; when ``weights`` is given, every source weight present
    with the declared shape and dtype.
    """
    defined: set[int] = set()
    names: set[str] = set()

    def define(v: Value, kind: str, node: Node | None):
        if id(v) in defined:
            raise VerifyError(f"{_where(graph, node)}: value {v.ref} defined twice")
        key = ("@" if v.kind == WEIGHT else "%") + v.name
        if key in names:
            raise VerifyError(f"{_where(graph, node)}: name {key} defined twice")
        if v.kind != kind:
            raise VerifyError(f"{_where(graph, node)}: {v.ref} has kind {v.kind}, expected {kind}")
        defined.add(id(v))
        names.add(key)

    for v in graph.inputs:
        define(v, INPUT, None)
    derived_outs = {id(v) for n in graph.derived for v in n.outputs}
    for name, v in graph.weights.items():
        if v.name != name:
            raise VerifyError(f"{_where(graph)}: weight table key {name!r} holds {v.ref}")
        if id(v) not in derived_outs:
            define(v, WEIGHT, None)

    def check_node(node: Node, derived: bool):
        opdef = OPS.get(node.op)
        if opdef is None:
            raise VerifyError(f"{_where(graph, node)}: unknown op {node.op!r}")
        n_in = len(node.inputs)
        try:
            opdef.check_arity(n_in)
        except RlxError as e:
            raise VerifyError(f"{_where(graph, node)}: {e}") from None
        for v in node.inputs:
            if v is None:
                continue
            if id(v) not in defined:
                raise VerifyError(f"{_where(graph, node)}: operand {v.ref} is used before it is "
                                  f"defined (or not defined in this graph: cycle or dangling)")
            if derived and v.kind != WEIGHT:
                raise VerifyError(f"{_where(graph, node)}: derived weight reads non-weight {v.ref}")
        if node.body is not None:
            if not opdef.extra.get("takes_body"):
                raise VerifyError(f"{_where(graph, node)}: op {node.op} cannot have a body")
            verify(node.body, _region=True)
        elif opdef.extra.get("takes_body"):
            raise VerifyError(f"{_where(graph, node)}: op {node.op} needs a body")
        types = [v.type if v is not None else None for v in node.inputs]
        if not opdef.variadic:
            types += [None] * (len(opdef.inputs) - len(types))
        try:
            canon = opdef.canonical_attrs(node.attrs, types)
            expected = opdef.infer_types(types, canon, node.body)
        except RlxError as e:
            raise VerifyError(f"{_where(graph, node)}: {e}") from None
        if canon != node.attrs:
            raise VerifyError(f"{_where(graph, node)}: attributes {node.attrs} are not canonical "
                              f"(expected {canon})")
        got = [v.type for v in node.outputs]
        if got != expected:
            raise VerifyError(f"{_where(graph, node)}: result types {[str(t) for t in got]} but "
                              f"the op infers {[str(t) for t in expected]}")
        for i, v in enumerate(node.outputs):
            if v.producer is not node or v.index != i:
                raise VerifyError(f"{_where(graph, node)}: result {v.ref} does not point back "
                                  f"to its node")
            define(v, WEIGHT if derived else RESULT, node)

    for node in graph.derived:
        if len(node.outputs) != 1:
            raise VerifyError(f"{_where(graph, node)}: derived nodes have one result")
        check_node(node, derived=True)
        if graph.weights.get(node.output.name) is not node.output:
            raise VerifyError(f"{_where(graph, node)}: derived weight not in the weight table")
    for node in graph.nodes:
        check_node(node, derived=False)
    if not graph.outputs:
        raise VerifyError(f"{_where(graph)}: no outputs")
    for v in graph.outputs:
        if id(v) not in defined:
            raise VerifyError(f"{_where(graph)}: output {v.ref} is not defined in the graph")
    if _region and graph.weights:
        raise VerifyError(f"{_where(graph)}: a region body cannot declare weights")
    if weights is not None:
        check_weights(graph, weights)


def check_weights(graph: Graph, weights: Mapping) -> None:
    """Every source weight must be present with the declared shape and dtype."""
    missing, wrong = [], []
    for name, v in graph.source_weights().items():
        if name not in weights:
            missing.append(name)
            continue
        arr = weights[name]
        if tuple(arr.shape) != v.shape or str(arr.dtype) != str(v.type.np_dtype):
            wrong.append(f"{name}: expected {v.type}, got {arr.dtype}{list(arr.shape)}")
    if missing or wrong:
        parts = []
        if missing:
            parts.append(f"missing weights: {', '.join(missing[:10])}"
                         + (f" ... and {len(missing) - 10} more" if len(missing) > 10 else ""))
        if wrong:
            parts.append("wrong weights: " + "; ".join(wrong[:10])
                         + (f" ... and {len(wrong) - 10} more" if len(wrong) > 10 else ""))
        raise VerifyError(f"{_where(graph)}: " + " | ".join(parts))
