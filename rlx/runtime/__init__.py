"""The runtime: compile profiles, compiled graphs (executable plans), timing."""

from rlx.runtime.compiler import CompiledGraph, CompileReport, compile_graph, lower  # noqa: F401
from rlx.runtime.profile import (  # noqa: F401
    PRESETS, CompileProfile, load_profile_file, profile_near_weights, resolve_profile)
