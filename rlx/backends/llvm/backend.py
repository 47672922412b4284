"""The llvm backend: LLVM IR emitted with llvmlite per kernel, O3-vectorized for the device's CPU.

For every node, `rlx.backends.common.describe` says what the kernel is; this
backend emits one IR module for it (`elementwise`, `norm`, `gemm`,
`attention`), compiles it for the profile's device through the object cache
(`jit`) and wraps the entry point (`kernels`). Shapes and strides are
constants in the IR, so equal kernels (the blocks of a ViT) have equal text
and are compiled once. Host data movement (pad, concat, gather, im2col,
reductions) runs through numpy.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Sequence

from rlx.backends.base import Capabilities, KernelContext, KernelInfo
from rlx.backends.common.scalar import ScalarProgram
from rlx.backends.common.spec import (COPY_OPS, HOST_OPS, AttentionSpec, ElementwiseSpec,
                                      GemmSpec, HostSpec, NormSpec, describe,
                                      reduced_precision)
from rlx.errors import RlxError
from rlx.ir.graph import Node
from rlx.ir.ops import OPS

NATIVE_OPS = frozenset(
    {name for name, op in OPS.items() if op.category == "elementwise"}
    | {"matmul", "layer_norm", "softmax", "attention", "fused"} | COPY_OPS | HOST_OPS)
DUMP_FORMATS = ("llvm", "asm")
#: per-element cost of heavy primitives, for deciding whether to split work over threads
_HEAVY = frozenset({"exp", "erf", "tanh", "log", "sin", "cos", "pow", "sqrt", "div"})


@dataclass
class Generated:
    """The IR of one node's kernel and how to call it."""

    kind: str
    ir: str
    n_tasks: int
    work: int
    n_ptrs: int


def _title(node: Node, spec) -> str:
    """Module name: the kind and ops, never the node's name (equal kernels, equal text)."""
    kind = f"fused.{node.attrs['kind']}" if node.op == "fused" else node.op
    return f"rlx {kind} [{', '.join(spec.ops)}]"


def _cost(program) -> int:
    return 1 + sum(8 if i.prim in _HEAVY else 1 for i in program.instrs)


def _canon(obj):
    """A hashable value that determines `obj` (a kernel spec) completely."""
    if isinstance(obj, ScalarProgram):
        return ("program", str(obj), tuple(obj.inputs))
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return (type(obj).__name__,) + tuple(_canon(getattr(obj, f.name))
                                             for f in dataclasses.fields(obj))
    if isinstance(obj, (list, tuple)):
        return tuple(_canon(x) for x in obj)
    if isinstance(obj, dict):
        return tuple(sorted((k, _canon(v)) for k, v in obj.items()))
    return obj


class LLVMBackend:
    name = "llvm"

    def __init__(self):
        self._specs: dict[int, tuple] = {}
        #: generated IR by everything it depends on: the blocks of a ViT share entries
        self._generated: dict[tuple, Generated | None] = {}

    def capabilities(self) -> Capabilities:
        return Capabilities(ops=NATIVE_OPS,
                            fused_kinds=frozenset({"elementwise", "gemm", "norm", "attention"}),
                            blocked_attention=True, dump_formats=DUMP_FORMATS)

    # ---- analysis ------------------------------------------------------------------------------

    def _bf16_unit(self, ctx: KernelContext) -> str | None:
        """The unit bf16 GEMMs compile for under `ctx`'s profile (None: the device has no
        bf16 matrix unit, and they run on the reference kernel)."""
        from rlx.backends.llvm.gemm_bf16 import unit_for

        return unit_for(ctx.profile.device)

    def _bf16_lanes(self, ctx: KernelContext) -> int:
        """Lanes of the bf16 kernel's dot pairs (the profile's vector width)."""
        from rlx.backends.llvm.gemm_bf16 import lanes_for
        from rlx.backends.llvm.target import profile_target
        from rlx.backends.llvm.vecir import vector_config

        unit = self._bf16_unit(ctx)
        return lanes_for(unit, vector_config(profile_target(ctx.profile)).lanes) if unit else 0

    def _spec(self, node: Node, ctx: KernelContext | None = None):
        """`describe(node)` under `ctx`'s profile. Without a context (`supports`, which
        the runtime calls without a profile) bf16 products are described as if the device
        had a unit; `compile` then gives a reference kernel where it has none."""
        block = getattr(ctx.profile, "attention_block", 256) if ctx is not None else 256
        bf16 = ctx is None or self._bf16_unit(ctx) is not None
        key = (id(node), block, bf16)
        hit = self._specs.get(key)
        if hit is None or hit[0] is not node:
            hit = self._specs[key] = (node, describe(node, attention_block=block, bf16=bf16))
        return hit[1]

    def supports(self, node: Node) -> bool:
        return self._spec(node) is not None

    # ---- code ----------------------------------------------------------------------------------

    def _settings(self, ctx: KernelContext) -> tuple:
        """Everything besides the spec that the generated code depends on."""
        from rlx.backends.llvm import blas
        from rlx.backends.llvm.target import profile_target
        from rlx.backends.llvm.vecir import vector_config

        found = blas.find()
        return (bool(getattr(ctx.profile, "fastmath", False)),
                getattr(ctx.profile, "gemm", "blas") == "native" or found is None,
                found.int_bits if found is not None else 64, ctx.profile.effective_threads,
                vector_config(profile_target(ctx.profile)), self._bf16_unit(ctx),
                self._bf16_lanes(ctx))

    def generate(self, node: Node, ctx: KernelContext) -> Generated | None:
        """The IR module of `node`'s kernel (None for host kernels)."""
        spec = self._spec(node, ctx)
        settings = self._settings(ctx)
        key = (_canon(spec), _title(node, spec), len(node.inputs),
               tuple(v.dtype for v in node.outputs), settings)
        if key not in self._generated:
            self._generated[key] = self._generate(node, spec, *settings)
        return self._generated[key]

    def _generate(self, node: Node, spec, fm: bool, native: bool, bits: int,
                  threads: int, vc, bf16_unit: str | None, lanes: int) -> Generated | None:
        from rlx.backends.llvm import attention, elementwise, gemm, gemm_bf16, norm

        title = _title(node, spec)
        n_in, n_out = len(node.inputs), len(node.outputs)
        out_dts = [v.dtype for v in node.outputs]
        if isinstance(spec, ElementwiseSpec):
            return Generated("elementwise",
                             elementwise.elementwise_module(spec, n_in, out_dts, title, fm),
                             elementwise.tasks(spec.nest.shape), spec.nest.numel *
                             _cost(spec.program), n_in + n_out)
        if isinstance(spec, NormSpec):
            return Generated("norm", norm.norm_module(spec, n_in, out_dts[0], title, fm),
                             norm.tasks(spec), spec.nest.numel * (_cost(spec.program) + 12),
                             n_in + 1)
        if isinstance(spec, GemmSpec) and spec.precision == "bf16":
            bp = gemm_bf16.bf16_plan(spec, threads, bf16_unit, lanes)
            return Generated("gemm", gemm_bf16.bf16_gemm_module(spec, n_in, title, threads,
                                                                bf16_unit, fm, lanes),
                             bp.p.tasks, math.prod(spec.out_shape) * max(bp.p.k, 1), n_in + 4)
        if isinstance(spec, GemmSpec):
            p = gemm.kernel_plan(spec, native, threads, out_dts[0], vc)
            work = math.prod(spec.out_shape) * max(p.k, 1)
            return Generated("gemm", gemm.gemm_module(spec, n_in, out_dts[0], title, native,
                                                      bits, threads, fm, vc), p.tasks, work,
                             n_in + 1 + (2 if native else 0))
        if isinstance(spec, AttentionSpec):
            b, nq, d = spec.q_shape
            nk, dv = spec.k_shape[1], spec.v_shape[2]
            _, n_ops = attention.operand_maps(spec)
            return Generated("attention", attention.attention_module(spec, title, vc),
                             attention.tasks(spec, vc), b * nq * nk * (d + dv + 8), n_ops + 2)
        return None

    def compile(self, node: Node, ctx: KernelContext):
        spec = self._spec(node, ctx)
        if spec is None and reduced_precision(node) and self._spec(node) is not None:
            return self._reference(node, ctx)
        if spec is None:
            raise RlxError(f"llvm backend cannot compile {node.op} ({node.outputs[0].ref})")
        t0 = time.perf_counter()
        gen = None if isinstance(spec, HostSpec) else self.generate(node, ctx)
        return self._kernel(node, spec, gen, ctx, t0)

    def _kernel(self, node: Node, spec, gen: Generated | None, ctx: KernelContext, t0: float):
        """The callable kernel of `node` from its spec and generated IR (linked via the cache)."""
        from rlx.backends.llvm import attention, blas, jit, kernels
        from rlx.backends.llvm.target import profile_target

        kind = node.attrs["kind"] if node.op == "fused" else node.op
        if isinstance(spec, HostSpec):
            info = KernelInfo(name=node.outputs[0].name, kind=f"llvm.host.{spec.op}",
                              extra={"compiled": False})
            return kernels.HostKernel(spec, info, ctx.profile.effective_threads)
        target = profile_target(ctx.profile)
        found = blas.find()
        loaded = jit.load(gen.ir, target, ctx.cache, found.imports() if found else {})
        info = KernelInfo(name=node.outputs[0].name, kind=f"llvm.{kind}", source=gen.ir,
                          from_cache=loaded.from_cache,
                          compile_seconds=time.perf_counter() - t0,
                          extra={"compiled": True, "key": loaded.key, "device": target.device,
                                 "cpu": target.cpu, "vector_bits": target.vector_bits})
        missing = target.missing_host_features()
        unusable = (f"kernel {node.outputs[0].ref} was compiled for {target.device} "
                    f"({target.cpu}); this CPU lacks {', '.join(missing)}") if missing else None
        nthreads = ctx.profile.effective_threads
        common = (loaded, gen.n_ptrs, gen.n_tasks, gen.work, nthreads, info)
        native = getattr(ctx.profile, "gemm", "blas") == "native" or found is None
        if isinstance(spec, GemmSpec) and spec.precision == "bf16":
            return self._bf16_kernel(node, spec, common, ctx, unusable)
        blas_calls = (isinstance(spec, GemmSpec) and not native
                      and self._calls_blas(spec, node, ctx))
        if isinstance(spec, GemmSpec) and native:
            return kernels.NativeGemmKernel(*common, unusable=unusable, spec=spec)
        if isinstance(spec, AttentionSpec):
            from rlx.backends.llvm.vecir import vector_config

            return kernels.AttentionKernel(
                *common, unusable=unusable, n_operand_ptrs=gen.n_ptrs - 2,
                scratch_elems=attention.scratch_floats(spec, vector_config(target)))
        return kernels.CompiledKernel(*common, unusable=unusable, calls_blas=blas_calls)

    def _reference(self, node: Node, ctx: KernelContext):
        """The reference kernel for a bf16 product on a device without bf16 units (it
        computes the bf16 semantics in numpy; nothing is compiled)."""
        from rlx.backends.reference.backend import ReferenceKernel

        kernel = ReferenceKernel(node)
        kernel.info.extra.update(compiled=False, reason=(
            f"bf16 product on device {ctx.profile.device}, which has no bf16 matrix unit"))
        return kernel

    def _bf16_kernel(self, node: Node, spec, common: tuple, ctx: KernelContext,
                     unusable: str | None):
        """The bf16 GEMM kernel; unusable (a clear error instead of SIGILL) when this CPU
        lacks the unit it was compiled for."""
        from rlx.backends.llvm.bf16_kernel import Bf16GemmKernel
        from rlx.backends.llvm.gemm_bf16 import CPUINFO_FLAG, FEATURE
        from rlx.backends.llvm.target import host_features
        from rlx.ir.graph import WEIGHT  # derived weights (a folded reshape) included

        unit = self._bf16_unit(ctx)
        if unusable is None and unit in FEATURE and FEATURE[unit] not in host_features():
            unusable = (f"bf16 kernel {node.outputs[0].ref} uses {unit}; this CPU lacks "
                        f"{CPUINFO_FLAG[unit]}")
        info = common[-1]
        b_is_weight = node.inputs[spec.b].kind == WEIGHT
        packer = self._bf16_packer(node, spec, ctx, unit, unusable)
        info.extra["bf16_unit"] = unit
        info.kind = f"{info.kind}.{unit}"  # RLX_PROFILE and reports show the unit that ran
        info.extra["bf16_lanes"] = self._bf16_lanes(ctx)
        return Bf16GemmKernel(*common, unusable=unusable, spec=spec, unit=unit,
                              threads=ctx.profile.effective_threads,
                              b_is_weight=b_is_weight, packer=packer)

    def _bf16_packer(self, node: Node, spec, ctx: KernelContext, unit: str,
                     unusable: str | None):
        """The parallel kernel packing B (a weight once, an activation per call)."""
        from rlx.backends.llvm import blas, jit, kernels
        from rlx.backends.llvm.gemm_bf16 import bf16_plan, pack_b_module
        from rlx.backends.llvm.target import profile_target

        bp = bf16_plan(spec, ctx.profile.effective_threads, unit)
        ir_text, tasks = pack_b_module(bp, math.prod(spec.b_shape[:-2]))
        found = blas.find()
        loaded = jit.load(ir_text, profile_target(ctx.profile), ctx.cache,
                          found.imports() if found else {})
        info = KernelInfo(name=f"{node.outputs[0].name}.pack_b", kind="llvm.bf16_pack_b",
                          source=ir_text, from_cache=loaded.from_cache)
        return kernels.CompiledKernel(loaded, 2, tasks, tasks * bp.np_ * 2,
                                      ctx.profile.effective_threads, info, unusable=unusable)

    def _calls_blas(self, spec, node: Node, ctx: KernelContext) -> bool:
        """The GEMM calls BLAS (not one of the generated loops of `gemm_loops`)."""
        from rlx.backends.llvm import gemm
        from rlx.backends.llvm.target import profile_target
        from rlx.backends.llvm.vecir import vector_config

        return gemm.uses_blas(spec, False, ctx.profile.effective_threads,
                              node.outputs[0].dtype, vector_config(profile_target(ctx.profile)))

    def run_context(self):
        """Entered around every call of a compiled plan: OpenBLAS at one thread for the
        whole call (BLAS kernels then find it set instead of toggling it, ~25 us each);
        the fork-join's workers woken on entry (their wake-up overlaps the plan's first
        kernels) and parked on exit."""
        from rlx.backends.llvm import kernels

        return kernels.PlanCall()

    def compile_many(self, nodes: Sequence[Node], ctx: KernelContext) -> list:
        from rlx.backends.common import threads
        from rlx.backends.llvm import forkjoin

        threads.configure(ctx.profile.effective_threads)
        forkjoin.use_store(ctx.cache)
        return [self.compile(n, ctx) for n in nodes]

    # ---- compiled-plan cache (rlx.runtime.plan_cache) ----------------------------------------

    def kernel_state(self, node: Node, kernel, ctx: KernelContext):
        """A picklable description of `node`'s kernel: settings, spec and generated IR."""
        spec = self._spec(node, ctx)
        gen = None if spec is None or isinstance(spec, HostSpec) else self.generate(node, ctx)
        return (self._settings(ctx), spec, gen)

    def restore_many(self, nodes: Sequence[Node], states: Sequence, ctx: KernelContext) -> list:
        """Kernels from `kernel_state` descriptions: no analysis, no code generation, the
        objects linked from the kernel cache. A description made under other settings
        (BLAS found or not, threads, vector width) is ignored and the node compiled."""
        from rlx.backends.common import threads
        from rlx.backends.llvm import forkjoin

        threads.configure(ctx.profile.effective_threads)
        forkjoin.use_store(ctx.cache)
        settings = self._settings(ctx)
        block = getattr(ctx.profile, "attention_block", 256)
        out = []
        for node, state in zip(nodes, states):
            if state is None or state[0] != settings:
                out.append(self.compile(node, ctx))
                continue
            _, spec, gen = state
            if spec is None:  # a bf16 product on a device without units
                out.append(self._reference(node, ctx))
                continue
            self._specs[(id(node), block, self._bf16_unit(ctx) is not None)] = (node, spec)
            out.append(self._kernel(node, spec, gen, ctx, time.perf_counter()))
        return out

    # ---- dumps ---------------------------------------------------------------------------------

    def dump(self, nodes: Sequence[Node], fmt: str, ctx: KernelContext) -> str:
        """Optimized (O3) IR or assembly of every kernel; equal kernels are printed once."""
        from rlx.backends.llvm.target import assembly, optimized_ir, profile_target

        if fmt not in DUMP_FORMATS:
            raise RlxError(f"llvm backend dumps --format {' or '.join(DUMP_FORMATS)}, "
                           f"not {fmt!r}")
        target = profile_target(ctx.profile)
        out = [f"; rlx llvm backend: {fmt} for {target.device} (cpu {target.cpu}, "
               f"{target.triple}, {target.vector_bits}-bit vectors)"]
        seen: dict[str, str] = {}
        comment = ";" if fmt == "llvm" else "#"
        for node in nodes:
            ref = node.outputs[0].ref
            if self._spec(node, ctx) is None:
                out.append(f"{comment} ---- {ref} = {node.op}: reference kernel (not compiled)")
                continue
            gen = self.generate(node, ctx)
            if gen is None:
                out.append(f"{comment} ---- {ref} = {node.op}: host numpy "
                           f"{self._spec(node, ctx).op}")
                continue
            if gen.ir in seen:
                out.append(f"{comment} ---- {ref} ({gen.kind}): same code as {seen[gen.ir]}")
                continue
            seen[gen.ir] = ref
            text = optimized_ir(gen.ir, target) if fmt == "llvm" else assembly(gen.ir, target)
            out.append(f"{comment} ---- {ref} ({gen.kind}) ----\n{text}")
        return "\n".join(out) + "\n"
