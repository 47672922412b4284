"""The numba backend: generated Python source per kernel, compiled with `numba.njit`.

For every node the backend asks `rlx.backends.common.describe` what the
kernel is (elementwise loop nest, GEMM + epilogue, norm, blocked attention,
host data movement), generates readable source for it (`codegen`), and
compiles that through the persistent cache (`loader`). Identical sources —
the twelve blocks of a ViT produce the same handful — are compiled once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Sequence

from rlx.backends.base import Capabilities, KernelContext, KernelInfo
from rlx.backends.common.spec import (COPY_OPS, HOST_OPS, OUT, AttentionSpec, ElementwiseSpec,
                                      GemmSpec, HostSpec, NormSpec, describe)
from rlx.ir.graph import Node
from rlx.ir.ops import OPS

_HERE = Path(__file__).parent
#: part of every cache key: any change to code generation or the prelude invalidates kernels
CODEGEN_VERSION = hashlib.sha256(
    b"".join((_HERE / f).read_bytes() for f in ("codegen.py", "prelude.py"))).hexdigest()[:16]

NATIVE_OPS = frozenset(
    {name for name, op in OPS.items() if op.category == "elementwise"}
    | {"matmul", "layer_norm", "softmax", "attention", "fused"} | COPY_OPS | HOST_OPS)


def _versions() -> dict:
    import llvmlite
    import numba

    return {"numba": numba.__version__, "llvmlite": llvmlite.__version__,
            "codegen": CODEGEN_VERSION, "numba_cpu": numba.config.CPU_NAME or "host",
            "numba_cpu_features": numba.config.CPU_FEATURES or ""}


class NumbaBackend:
    name = "numba"

    def __init__(self):
        self._specs: dict[int, object] = {}

    def capabilities(self) -> Capabilities:
        return Capabilities(ops=NATIVE_OPS, fused_kinds=frozenset({"elementwise", "gemm", "norm"}),
                            blocked_attention=True, dump_formats=("kernels",))

    # ---- analysis --------------------------------------------------------------------------

    def _spec(self, node: Node, ctx: KernelContext | None = None):
        key = id(node)
        if key not in self._specs:  # the node is kept alive with its spec, so ids stay unique
            self._specs[key] = (node, describe(node))
        spec = self._specs[key][1]
        if isinstance(spec, AttentionSpec) and ctx is not None:
            spec = dataclasses.replace(spec, block=ctx.profile.attention_block)
        return spec

    def supports(self, node: Node) -> bool:
        return self._spec(node) is not None

    # ---- code ------------------------------------------------------------------------------

    def sources(self, node: Node, ctx: KernelContext) -> list[tuple[str, str]]:
        """(role, module source) for every generated function `node` needs."""
        from rlx.backends.numba import codegen

        spec = self._spec(node, ctx)
        fm = bool(getattr(ctx.profile, "fastmath", False))
        # The title names the kind, not the node: equal kernels must have equal source
        # (one compile serves every block of a ViT).
        title = f"fused.{node.attrs['kind']}" if node.op == "fused" else node.op
        if isinstance(spec, ElementwiseSpec):
            return [("main", codegen.elementwise_source(
                spec, _in_dtypes(spec, node), [v.dtype for v in node.outputs], fm, title))]
        if isinstance(spec, NormSpec):
            return [("main", codegen.norm_source(spec, _in_dtypes(spec, node),
                                                 node.outputs[0].dtype, fm, title))]
        if isinstance(spec, GemmSpec):
            out = []
            if spec.epilogue is not None:
                out.append(("epilogue", codegen.elementwise_source(
                    spec.epilogue, _in_dtypes(spec.epilogue, node), [node.outputs[0].dtype], fm,
                    title + " epilogue")))
            if getattr(ctx.profile, "gemm", "blas") == "native":
                out.append(("native", codegen.native_gemm_source(node.outputs[0].dtype, fm)))
            return out
        if isinstance(spec, AttentionSpec):
            return [("softmax", codegen.attention_softmax_source(fm))]
        return []

    def compile(self, node: Node, ctx: KernelContext):
        from rlx.backends.numba import kernels, loader

        spec = self._spec(node, ctx)
        if spec is None:
            raise ValueError(f"numba backend cannot compile {node.op}")
        t0 = time.perf_counter()
        fns, hits, sources = {}, [], []
        for role, source in self.sources(node, ctx):
            loaded = loader.load(source, ctx.cache, _versions())
            fns[role] = loaded.fn
            hits.append(loaded.from_cache)
            sources.append(source)
        kind = node.attrs["kind"] if node.op == "fused" else node.op
        info = KernelInfo(name=node.outputs[0].name, kind=f"numba.{kind}",
                          source="\n".join(sources) or None,
                          from_cache=bool(hits) and all(hits),
                          compile_seconds=time.perf_counter() - t0,
                          extra={"compiled": bool(hits)})
        nt = ctx.profile.effective_threads
        if isinstance(spec, ElementwiseSpec):
            return _nest_kernel(kernels, spec, node, fns["main"], info, "elementwise", nt)
        if isinstance(spec, NormSpec):
            return _nest_kernel(kernels, spec, node, fns["main"], info, "norm", nt)
        if isinstance(spec, GemmSpec):
            epi = None
            if spec.epilogue is not None:
                epi = _nest_kernel(kernels, spec.epilogue, node, fns["epilogue"], info,
                                   "elementwise", nt)
            native = kernels.NativeGemm(fns["native"]) if "native" in fns else None
            return kernels.GemmKernel(spec, epi, native, info, nt)
        if isinstance(spec, AttentionSpec):
            return kernels.AttentionKernel(spec, fns["softmax"], info, nt)
        if isinstance(spec, HostSpec):
            info.kind = f"numba.host.{spec.op}"
            return kernels.HostKernel(spec, info, nt)
        raise ValueError(f"unknown spec {type(spec).__name__}")

    def run_context(self):
        """Entered around every call of a compiled plan: OpenBLAS at one thread (kernels
        split GEMMs over their own threads). Each GEMM kernel also asks for it; set once
        per call, those requests are free instead of ~25 us each."""
        from rlx.backends.common import threads

        return threads.single_threaded_blas()

    def compile_many(self, nodes: Sequence[Node], ctx: KernelContext) -> list:
        from rlx.backends.common import threads

        threads.configure(ctx.profile.effective_threads)
        _check_device(ctx.profile.device)
        return [self.compile(n, ctx) for n in nodes]

    def dump(self, nodes: Sequence[Node], fmt: str, ctx: KernelContext) -> str:
        if fmt != "kernels":
            from rlx.errors import RlxError

            raise RlxError(f"numba backend dumps --format kernels, not {fmt!r}")
        out = []
        for node in nodes:
            if not self.supports(node):
                out.append(f"# {node.outputs[0].ref} = {node.op}: reference kernel "
                           f"(not compiled)\n")
                continue
            srcs = self.sources(node, ctx)
            if not srcs:
                spec = self._spec(node, ctx)
                what = "numpy matmul (BLAS)" if isinstance(spec, GemmSpec) else \
                    f"host numpy {getattr(spec, 'op', node.op)}"
                out.append(f"# {node.outputs[0].ref} = {node.op}: {what}\n")
            for role, s in srcs:
                out.append(f"# ---- {node.outputs[0].ref} ({role}) ----\n{s}")
        return "\n".join(out)


def _in_dtypes(spec, node: Node) -> list[str]:
    """dtype of each nest input (OUT reads the output buffer)."""
    out = []
    for acc in spec.nest.inputs:
        v = node.outputs[0] if acc.arg == OUT else node.inputs[acc.arg]
        out.append(v.dtype)
    return out


def _nest_kernel(kernels, spec, node: Node, fn, info: KernelInfo, which: str, nthreads: int):
    from rlx.backends.numba import codegen

    in_dt = [node.outputs[0].dtype if a.arg == OUT else node.inputs[a.arg].dtype
             for a in spec.nest.inputs]
    out_dt = [node.outputs[a.arg if a.arg >= 0 else 0].dtype for a in spec.nest.outputs]
    if which == "elementwise":
        n_tasks = codegen.elementwise_tasks(spec.nest)
    else:
        n_tasks = codegen.norm_tasks(spec.nest)
    cost = kernels.cost_of(spec.program) + (12 if which == "norm" else 0)
    return kernels.NestKernel(fn, spec.nest, in_dt, out_dt, n_tasks, cost, info, nthreads)


#: profile device -> the CPU name numba must have been started with
DEVICE_CPU = {"cpu-generic": "generic", "cpu-avx2": "haswell", "cpu-avx512": "skylake-avx512"}


def _check_device(device: str) -> None:
    """numba compiles for one CPU per process, chosen when numba starts (NUMBA_CPU_NAME)."""
    if device == "cpu":
        return
    import numba

    want = DEVICE_CPU[device]
    if (numba.config.CPU_NAME or "host") != want:
        from rlx.errors import ProfileError

        raise ProfileError(f"device {device}: the numba backend compiles for the CPU numba was "
                           f"started for ({numba.config.CPU_NAME or 'host'}); run with "
                           f"NUMBA_CPU_NAME={want} or use device 'cpu'")
