"""The intermediate representation: types, graphs, ops, builder, text form, verifier.

This package executes and optimizes nothing; passes and backends build on it.
"""

from rlx.ir.types import TensorType, DTYPES  # noqa: F401
from rlx.ir.graph import Graph, Node, Value, walk  # noqa: F401
from rlx.ir.ops import OPS, get_op  # noqa: F401
from rlx.ir.builder import GraphBuilder  # noqa: F401
from rlx.ir.printer import print_graph  # noqa: F401
from rlx.ir.parser import parse, parse_file  # noqa: F401
from rlx.ir.verifier import verify  # noqa: F401

__all__ = ["TensorType", "DTYPES", "Graph", "Node", "Value", "walk", "OPS", "get_op",
           "GraphBuilder", "print_graph", "parse", "parse_file", "verify"]
