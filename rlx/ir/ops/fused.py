"""The `fused` op: a region of ops that one kernel computes.

Fusion passes wrap groups of nodes into a `fused` node whose ``body`` is a
graph: the body's inputs bind to the node's inputs, its outputs to the node's
outputs. ``kind`` names the kernel pattern (elementwise, gemm, norm, ...) that
backends dispatch on. Its reference semantics are simply those of its body.
"""

from __future__ import annotations

from rlx.ir.ops.registry import Attr, define, fail, get_op

KINDS = ("elementwise", "gemm", "norm", "reduction", "attention", "movement", "other")


def _fused_infer(ins, attrs, body=None):
    if body is None:
        fail("fused", "needs a body")
    if len(ins) != len(body.inputs):
        fail("fused", f"{len(ins)} operands for a body with {len(body.inputs)} inputs")
    for t, v in zip(ins, body.inputs):
        if t != v.type:
            fail("fused", f"operand {t} does not match body input {v.ref}: {v.type}")
    return [v.type for v in body.outputs]


def evaluate_body(body, args):
    """Run a body graph op by op with each op's reference semantics."""
    env = dict(zip(body.inputs, args))
    for node in body.nodes:
        ins = [env[v] if v is not None else None for v in node.inputs]
        outs = get_op(node.op).evaluate(ins, node.attrs, node.body)
        env.update(zip(node.outputs, outs))
    return [env[v] for v in body.outputs]


def _fused_ref(ins, attrs, body=None):
    return evaluate_body(body, ins)


def _fused_flops(ins, outs, attrs, body=None):
    from rlx.ir.analysis import graph_flops

    return graph_flops(body) if body is not None else 0


define("fused", ["xs*"], {"kind": Attr("str", choices=KINDS)}, infer=_fused_infer,
       reference=_fused_ref, category="fused", flops=_fused_flops,
       doc="a group of ops compiled as one kernel; semantics are those of its body",
       takes_body=True)
