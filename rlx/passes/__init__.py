"""Graph-to-graph passes: lowering, cleanup, fusion, memory planning.

Passes know the IR only. Each is a function ``(graph, options) -> graph`` that
returns a new graph; all are registered in `rlx.passes.registry`.
"""

from rlx.passes.manager import Pass, PassManager, run_passes  # noqa: F401
from rlx.passes.options import PassOptions  # noqa: F401
from rlx.passes.registry import PASSES, default_pipeline, get_pass  # noqa: F401
