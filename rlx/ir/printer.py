"""Text form of a graph. `rlx.ir.parser.parse` reads it back exactly.

    graph mlp {
      input %x: f32[8,16]
      weight @fc1.weight: f32[32,16]
      %linear: f32[8,32] = linear(%x, @fc1.weight, _) {}
      output %linear
    }

Weights appear by name only. Attributes equal to their default are omitted, so
the text stays short and two equal nodes print the same.
"""

from __future__ import annotations

import json
import math
import re

from rlx.errors import VerifyError
from rlx.ir.graph import Graph, Node
from rlx.ir.ops import REQUIRED, get_op


def format_attr(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        r = repr(value)
        return r if any(c in r for c in ".en") else r + ".0"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (tuple, list)):
        return "[" + ",".join(format_attr(v) for v in value) + "]"
    raise TypeError(f"cannot print attribute value {value!r}")


def format_attrs(node: Node) -> str:
    opdef = get_op(node.op)
    shown = []
    for name, spec in opdef.attrs.items():
        value = node.attrs.get(name, spec.default)
        if spec.default is not REQUIRED and value == spec.default and \
                type(value) is type(spec.default):
            continue
        shown.append(f"{name}={format_attr(value)}")
    return " {" + ", ".join(shown) + "}" if shown else ""


def _operands(node: Node) -> str:
    ins = list(node.inputs)
    while ins and ins[-1] is None:
        ins.pop()
    return ", ".join(v.ref if v is not None else "_" for v in ins)


def _call(node: Node) -> str:
    return f"{node.op}({_operands(node)}){format_attrs(node)}"


def _lines(graph: Graph, indent: str) -> list[str]:
    out = []
    for v in graph.inputs:
        out.append(f"{indent}input {v.ref}: {v.type}")
    derived_names = {v.name for n in graph.derived for v in n.outputs}
    for name, v in graph.weights.items():
        if name not in derived_names:
            out.append(f"{indent}weight {v.ref}: {v.type}")
    for node in graph.derived:
        out.append(f"{indent}derived {node.output.ref}: {node.output.type} = {_call(node)}")
    for node in graph.nodes:
        results = ", ".join(f"{v.ref}: {v.type}" for v in node.outputs)
        line = f"{indent}{results} = {_call(node)}"
        if node.body is not None:
            out.append(line + " {")
            out.extend(_lines(node.body, indent + "  "))
            out.append(indent + "}")
        else:
            out.append(line)
    if graph.outputs:
        out.append(f"{indent}output " + ", ".join(v.ref for v in graph.outputs))
    return out


_GRAPH_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


def print_graph(graph: Graph) -> str:
    if not _GRAPH_NAME.match(graph.name):
        raise VerifyError(f"graph name {graph.name!r} cannot be printed (letters, digits, "
                          f"'_', '.', '-'; starting with a letter or '_')")
    return "\n".join([f"graph {graph.name} {{"] + _lines(graph, "  ") + ["}"]) + "\n"
