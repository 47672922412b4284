"""Backend-independent kernel analysis shared by the compiled backends (numba, llvm).

`spec.describe(node)` turns a lowered or fused node into a `KernelSpec`: what
to compute (a scalar program over primitive ops, a GEMM with an epilogue, a
norm, blocked attention) and how each operand is indexed (a `LoopNest` of
strided accesses). Code generators only translate a spec; they never look at
the graph again.

Also shared by the compiled backends: `host` (numpy data movement), `threads`
(the thread pool) and `kernel_store` (the on-disk kernel cache, imported by
name only: it needs none of the analysis above).
"""

from rlx.backends.common.nest import Access, LoopNest, build_nest  # noqa: F401
from rlx.backends.common.scalar import Const, Instr, ScalarProgram, Sym  # noqa: F401
from rlx.backends.common.spec import (  # noqa: F401
    AttentionSpec, ElementwiseSpec, GemmSpec, HostSpec, KernelSpec, NormSpec, describe)
