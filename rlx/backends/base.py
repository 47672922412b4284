"""The backend protocol: compile a node (usually a fused group) into a kernel.

A backend receives lowered, fused graph nodes one at a time (or a batch, so it
can share one compilation unit) and returns kernels. A kernel writes its
results into arrays the runtime preallocated (destination passing), so the
runtime owns all memory and can reuse buffers by liveness.

A backend says what it can compile through `supports`; the runtime runs any
node a backend declines with the reference semantics, so every graph runs on
every backend. Adding a backend means a folder under `rlx/backends/` with a
class following `Backend`, plus one line in `BACKENDS` below.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from rlx.errors import ProfileError
from rlx.ir.graph import Node

#: backend name -> "module:Class" (imported on first use).
BACKENDS: dict[str, str] = {
    "reference": "rlx.backends.reference.backend:ReferenceBackend",
    "numba": "rlx.backends.numba.backend:NumbaBackend",
    "llvm": "rlx.backends.llvm.backend:LLVMBackend",
}


@dataclass
class KernelInfo:
    """What a kernel reports about itself (for dumps, compile reports and timing)."""

    name: str
    kind: str
    source: str | None = None
    from_cache: bool = False
    compile_seconds: float = 0.0
    extra: dict = field(default_factory=dict)


@runtime_checkable
class Kernel(Protocol):
    info: KernelInfo

    def __call__(self, inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> None:
        """Compute the node's results into `outputs` (C-contiguous, preallocated)."""


@dataclass(frozen=True)
class Capabilities:
    #: primitive ops compiled natively (others fall back to the reference kernels)
    ops: frozenset[str] = frozenset()
    #: fused-group kinds compiled natively
    fused_kinds: frozenset[str] = frozenset()
    #: has a blocked attention kernel (else the attention op is lowered before compiling)
    blocked_attention: bool = False
    #: extra `rlx dump-ir --format` values this backend can print (e.g. "llvm", "asm")
    dump_formats: tuple[str, ...] = ()


@dataclass
class KernelContext:
    """Per-compile settings a backend needs (derived from the compile profile)."""

    profile: object  # rlx.runtime.profile.CompileProfile (kept untyped: no upward import)
    cache: object | None = None  # rlx.backends.common.kernel_store.KernelCache or None


class Backend(Protocol):
    name: str

    def capabilities(self) -> Capabilities: ...

    def supports(self, node: Node) -> bool: ...

    def compile(self, node: Node, ctx: KernelContext) -> Kernel: ...

    def compile_many(self, nodes: Sequence[Node], ctx: KernelContext) -> list[Kernel]:
        """Compile several nodes (default: one by one); backends may batch."""
        ...

    def dump(self, nodes: Sequence[Node], fmt: str, ctx: KernelContext) -> str:
        """Text of the generated code in `fmt` (one of capabilities().dump_formats)."""
        ...


def get_backend(name: str) -> Backend:
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ProfileError(f"unknown backend {name!r}; backends: {', '.join(BACKENDS)}") from None
    module, _, cls = target.partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise ProfileError(f"backend {name!r} is not available: {e}") from None
    return getattr(mod, cls)()
