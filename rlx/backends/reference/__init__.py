"""The reference backend: a numpy interpreter, the ground truth for everything else."""

from rlx.backends.reference.interpreter import (  # noqa: F401
    ReferenceRunner, check_inputs, materialize_weights, run_graph)
from rlx.backends.reference.backend import ReferenceBackend, ReferenceKernel  # noqa: F401,E402
