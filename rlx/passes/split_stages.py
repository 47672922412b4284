"""Split a graph by how often its inputs change: a slow stage and a fast stage.

Some inputs of a graph change rarely: SAM's prompt graph takes the image
embedding (new once per image) and the prompt (new every click). Every node
that depends only on slow inputs and weights computes the same result until a
slow input changes, so it belongs in a *slow stage* that runs once per slow
input and whose results are kept; the *fast stage* runs per call and takes
the kept results as extra inputs. This is constant folding one level up:
fold-constants moves weight-only work to bind time, this moves slow-input-only
work to the first call after the slow inputs change.

`split_stages(graph, slow)` is a partition, not a pipeline pass (it returns
two graphs): both stages are ordinary HIR graphs that compile, dump and cache
like any other (`rlx.runtime.staged` runs them). Rules:

* a node belongs to the slow stage when it reads at least one slow input
  (directly or through other nodes) and no fast input; weight-only nodes go
  to whichever stage reads them (both, if need be; fold-constants turns them
  into derived weights there);
* the *boundary* -- slow-stage values that fast-stage nodes read or that are
  graph outputs -- becomes the slow stage's outputs and the fast stage's
  extra inputs, named after the values they carry;
* a slow input that fast-stage nodes read directly crosses the boundary
  unchanged (the fast stage receives the caller's array);
* a reshape of a slow value that the fast stage reads is recomputed there (a
  reshape is a free view), so its source crosses instead: several reshapes
  of one value carry one array, not several copies.

The graph is CSE'd first, so equal computations cross the boundary once.
When no node ends up in the slow stage (every computation needs a fast
input), `StageSplit.slow_graph` is None and the fast stage is the whole
graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from rlx.errors import RlxError
from rlx.ir.builder import GraphBuilder
from rlx.ir.graph import WEIGHT, Graph, Value
from rlx.passes.cse import cse
from rlx.passes.dce import dce

__all__ = ["SLOW", "FAST", "StageSplit", "split_stages"]

SLOW, FAST = "slow", "fast"


@dataclass
class StageSplit:
    """The two stages of a graph and how they connect.

    ``slow_graph``: inputs = the slow inputs, outputs = the boundary values
    (or None: nothing to precompute). ``fast_graph``: inputs = the graph's
    fast inputs (original order) followed by the boundary values it reads
    (by name; a boundary value may also just be returned). ``outputs``
    says where each output of the original graph comes from: ``("slow", i)``
    = slow-stage output i, ``("fast", i)`` = fast-stage output i.
    """

    graph: Graph
    slow: tuple[str, ...]
    slow_graph: Graph | None
    fast_graph: Graph
    boundary: tuple[str, ...]
    outputs: tuple[tuple[str, int], ...]

    @property
    def slow_inputs(self) -> tuple[str, ...]:
        """Names of the slow inputs (in graph order)."""
        return tuple(v.name for v in self.slow_graph.inputs) if self.slow_graph else ()


def split_stages(graph: Graph, slow: Iterable[str], name_suffixes=(".slow", ".fast")) -> StageSplit:
    slow = tuple(slow)
    original, graph = graph, cse(graph)  # equal computations cross the boundary once
    names = [v.name for v in graph.inputs]
    unknown = [s for s in slow if s not in names]
    if unknown:
        raise RlxError(f"graph {graph.name}: no input(s) {', '.join(unknown)} to mark slow; "
                       f"inputs: {', '.join(names)}")
    stage: dict[int, str | None] = {}  # value id -> SLOW, FAST or None (weights only)
    for v in graph.inputs:
        stage[id(v)] = SLOW if v.name in slow else FAST
    for node in graph.nodes:
        kinds = {stage.get(id(v)) for v in node.present_inputs()}
        s = FAST if FAST in kinds else SLOW if SLOW in kinds else None
        for v in node.outputs:
            stage[id(v)] = s

    slow_nodes = [n for n in graph.nodes if stage[id(n.outputs[0])] == SLOW]
    if not slow_nodes:
        return StageSplit(original, slow, None, original, (),
                          tuple((FAST, i) for i in range(len(graph.outputs))))

    # A reshape is a free view in either stage: one read by the fast stage is recomputed
    # there, so its source crosses instead (three reshapes of one value carry one array).
    outputs = {id(v) for v in graph.outputs}
    fast_read: set[int] = set()
    dup: set[int] = set()
    for node in reversed(graph.nodes):
        s = stage[id(node.outputs[0])]
        if s == SLOW and node.op == "reshape" and (
                id(node.output) in fast_read or id(node.output) in outputs):
            dup.add(id(node))
            s = FAST
        if s != SLOW:
            fast_read.update(id(v) for v in node.present_inputs())

    def on_fast_side(node) -> bool:
        return stage[id(node.outputs[0])] != SLOW or id(node) in dup

    # Boundary: slow values the fast side reads or returns, in order of first use.
    boundary: list[Value] = []
    seen: set[int] = set()

    def cross(v: Value) -> None:
        if stage.get(id(v)) == SLOW and id(v) not in seen:
            seen.add(id(v))
            boundary.append(v)

    fast_side = {id(v) for n in graph.nodes if on_fast_side(n) for v in n.outputs}
    for node in graph.nodes:
        if on_fast_side(node):
            for v in node.present_inputs():
                if id(v) not in fast_side:
                    cross(v)
    carried = list(boundary)  # what the fast stage reads
    for v in graph.outputs:
        if id(v) not in fast_side:
            cross(v)

    slow_g = _stage_graph(graph, graph.name + name_suffixes[0],
                          [v for v in graph.inputs if v.name in slow], [],
                          [n for n in graph.nodes if stage[id(n.outputs[0])] in (SLOW, None)],
                          boundary)
    fast_outputs = [v for v in graph.outputs if id(v) in fast_side or stage.get(id(v)) != SLOW]
    fast_g = _stage_graph(graph, graph.name + name_suffixes[1],
                          [v for v in graph.inputs if v.name not in slow], carried,
                          [n for n in graph.nodes if on_fast_side(n)], fast_outputs)
    where = []
    for v in graph.outputs:
        if v in fast_outputs:
            where.append((FAST, fast_outputs.index(v)))
        else:
            where.append((SLOW, boundary.index(v)))
    return StageSplit(original, slow, slow_g, fast_g, tuple(v.name for v in boundary),
                      tuple(where))


def _stage_graph(graph: Graph, name: str, inputs: list[Value], carried: list[Value], nodes,
                 outputs: list[Value]) -> Graph:
    """A graph of `nodes` reading `inputs` and the `carried` values (as extra inputs)."""
    b = GraphBuilder(name)
    vmap: dict[int, Value] = {}
    for v in inputs:
        vmap[id(v)] = b.input(v.name, v.shape, v.dtype)
    for v in carried:
        if id(v) not in vmap:
            vmap[id(v)] = b.input(v.name, v.shape, v.dtype)
    derived = {id(n.output): n for n in graph.derived}

    def get(v: Value | None) -> Value | None:
        if v is None:
            return None
        got = vmap.get(id(v))
        if got is not None:
            return got
        if v.kind == WEIGHT:
            node = derived.get(id(v))
            if node is None:
                vmap[id(v)] = b.weight(v.name, v.shape, v.dtype)
            else:
                vmap[id(v)] = _derive(b, node, [get(x) for x in node.inputs])
            return vmap[id(v)]
        raise RlxError(f"stage {name}: {v.ref} is not available ({v.kind})")

    for node in nodes:
        out = b.emit(node.op, [get(v) for v in node.inputs], node.attrs, body=node.body,
                     out_names=[v.name for v in node.outputs], canonical=True)
        outs = list(out) if isinstance(out, tuple) else [out]
        for old, new in zip(node.outputs, outs):
            vmap[id(old)] = new
    b.graph.outputs = [get(v) for v in outputs]
    return dce(b.graph)


def _derive(b: GraphBuilder, node, inputs) -> Value:
    """Copy a derived-weight node (its result is a weight again)."""
    scratch = GraphBuilder("scratch")
    out = scratch.emit(node.op, inputs, node.attrs, out_names=["d"])
    new = scratch.graph.nodes[0]
    out.name, out.kind = node.output.name, WEIGHT
    b.graph.weights[out.name] = out
    b.graph.derived.append(new)
    return out

