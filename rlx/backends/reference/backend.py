"""The reference backend as a `Backend`: every node runs its numpy reference semantics.

The runtime also uses these kernels as the fallback for nodes a compiled
backend declines, which is why every graph runs on every backend.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from rlx.backends.base import Capabilities, KernelContext, KernelInfo
from rlx.ir.graph import Node
from rlx.ir.ops import OPS, get_op
from rlx.ir.printer import print_graph


class ReferenceKernel:
    def __init__(self, node: Node):
        self.op = get_op(node.op)
        self.attrs = node.attrs
        self.body = node.body
        kind = node.attrs.get("kind", node.op) if node.op == "fused" else node.op
        self.info = KernelInfo(name=node.outputs[0].name, kind=f"reference.{kind}")

    def __call__(self, inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> None:
        results = self.op.evaluate(list(inputs), self.attrs, self.body)
        for out, res in zip(outputs, results):
            np.copyto(out, res, casting="unsafe")


class ReferenceBackend:
    name = "reference"

    def capabilities(self) -> Capabilities:
        return Capabilities(ops=frozenset(OPS), fused_kinds=frozenset({"*"}),
                            blocked_attention=True)

    def supports(self, node: Node) -> bool:
        return True

    def compile(self, node: Node, ctx: KernelContext) -> ReferenceKernel:
        return ReferenceKernel(node)

    def compile_many(self, nodes: Sequence[Node], ctx: KernelContext) -> list[ReferenceKernel]:
        return [ReferenceKernel(n) for n in nodes]

    def dump(self, nodes: Sequence[Node], fmt: str, ctx: KernelContext) -> str:
        out = []
        for n in nodes:
            if n.body is not None:
                out.append(f"# {n.outputs[0].ref}: fused.{n.attrs.get('kind')}\n"
                           + print_graph(n.body))
        return "\n".join(out)
