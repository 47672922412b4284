"""The numpy reference interpreter: runs any graph, at any stage, op by op.

It is the ground truth that every pass and every compiled backend is tested
against, so it favours obviously-correct semantics (each op's registered
numpy reference) over speed. It does free each intermediate after its last
use, so a full-size ViT-H still fits in memory.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from rlx.errors import InputError
from rlx.ir.graph import Graph, Value
from rlx.ir.ops import get_op
from rlx.ir.verifier import check_weights


def materialize_weights(graph: Graph, weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Source weights checked against their declarations, plus every derived weight."""
    check_weights(graph, weights)
    out = {name: np.asarray(weights[name]) for name in graph.source_weights()}
    for node in graph.derived:
        # Absent optional operands (e.g. attention without rel-pos) stay None.
        ins = [out[v.name] if v is not None else None for v in node.inputs]
        (result,) = get_op(node.op).evaluate(ins, node.attrs, node.body)
        # asarray(order="C"), not ascontiguousarray: that would make a rank-0 weight 1-d.
        out[node.output.name] = np.asarray(result, dtype=node.output.type.np_dtype, order="C")
    return out


def check_inputs(graph: Graph, inputs) -> list[np.ndarray]:
    """Inputs by position or by name, validated against the graph signature."""
    if isinstance(inputs, Mapping):
        missing = [v.name for v in graph.inputs if v.name not in inputs]
        extra = sorted(set(inputs) - {v.name for v in graph.inputs})
        if missing or extra:
            raise InputError(f"graph {graph.name}: missing inputs {missing}, unknown inputs {extra}"
                             f"; expected {[v.name for v in graph.inputs]}")
        arrays = [inputs[v.name] for v in graph.inputs]
    else:
        arrays = list(inputs)
        if len(arrays) != len(graph.inputs):
            raise InputError(f"graph {graph.name} takes {len(graph.inputs)} inputs "
                             f"({', '.join(v.ref for v in graph.inputs)}), got {len(arrays)}")
    out = []
    for v, a in zip(graph.inputs, arrays):
        if not isinstance(a, np.ndarray):
            raise InputError(f"input {v.ref} must be a numpy array, got {type(a).__name__}")
        if a.shape != v.shape or a.dtype != v.type.np_dtype:
            raise InputError(f"input {v.ref}: expected {v.type}, got "
                             f"{a.dtype}[{','.join(map(str, a.shape))}]")
        out.append(a)
    return out


def run_graph(graph: Graph, inputs, weights: Mapping[str, np.ndarray],
              materialized: bool = False) -> list[np.ndarray]:
    """Evaluate `graph` on `inputs` (list or name->array) with named `weights`."""
    arrays = check_inputs(graph, inputs)
    w = weights if materialized else materialize_weights(graph, weights)
    env: dict[int, np.ndarray] = {id(v): a for v, a in zip(graph.inputs, arrays)}
    for name, v in graph.weights.items():
        env[id(v)] = w[name]
    last_use: dict[int, int] = {}
    for i, node in enumerate(graph.nodes):
        for v in node.present_inputs():
            last_use[id(v)] = i
    keep = {id(v) for v in graph.outputs} | {id(v) for v in graph.weights.values()} | \
        {id(v) for v in graph.inputs}
    for i, node in enumerate(graph.nodes):
        ins = [env[id(v)] if v is not None else None for v in node.inputs]
        outs = get_op(node.op).evaluate(ins, node.attrs, node.body)
        for v, a in zip(node.outputs, outs):
            env[id(v)] = _conform(v, a, node.op)
        for v in node.present_inputs():
            if last_use.get(id(v)) == i and id(v) not in keep:
                env.pop(id(v), None)
    # Results belong to the caller: never hand out (a view of) an input or a weight, nor
    # a read-only array (reshape and broadcast references return views).
    protected = arrays + [w[name] for name in graph.weights]
    results = []
    for v in graph.outputs:
        a = env[id(v)]
        if not a.flags.writeable or any(np.may_share_memory(a, p) for p in protected):
            a = a.copy()
        results.append(a)
    return results


def _conform(v: Value, a: np.ndarray, op: str) -> np.ndarray:
    a = np.asarray(a)
    if a.shape != v.shape:
        raise AssertionError(f"reference of {op} produced shape {a.shape} for {v.ref}: {v.type}")
    if a.dtype != v.type.np_dtype:
        a = a.astype(v.type.np_dtype)
    return a


class ReferenceRunner:
    """A graph bound to weights, callable repeatedly (weights materialized once)."""

    def __init__(self, graph: Graph, weights: Mapping[str, np.ndarray]):
        self.graph = graph
        self.weights = materialize_weights(graph, weights)

    def __call__(self, *inputs, **named) -> list[np.ndarray]:
        return run_graph(self.graph, named if named else list(inputs), self.weights,
                         materialized=True)
