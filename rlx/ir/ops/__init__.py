"""All ops, registered on import. `OPS` maps op name to its single `OpDef`."""

from rlx.ir.ops.registry import OPS, REQUIRED, Attr, OpDef, define, get_op  # noqa: F401
# registration: importing a family module defines its ops
from rlx.ir.ops import conv, elementwise, fused, gather, linalg, norm, shape  # noqa: F401

__all__ = ["OPS", "Attr", "OpDef", "define", "get_op", "REQUIRED"]
