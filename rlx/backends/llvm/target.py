"""The target machine for a device profile, and LLVM's O3 pipeline.

`cpu` is this host: LLVM's own detection of the CPU name and feature string,
so AVX-512 / AVX2 are used where present. The ISA levels name the x86-64
micro-architecture levels LLVM knows (`x86-64`, `x86-64-v3` = AVX2+FMA,
`x86-64-v4` = AVX-512), so code can be built for a machine other than this
one. The CPU name and features are part of every kernel-cache key.

Optimization is LLVM's standard per-module O3 pipeline (new pass manager)
with loop vectorization, SLP vectorization, unrolling and interleaving on.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import llvmlite.binding as llvm

from rlx.errors import ProfileError

#: device -> (LLVM CPU name, required host features to *run* the code)
ISA_LEVELS = {
    "cpu-generic": ("x86-64", ()),
    "cpu-avx2": ("x86-64-v3", ("avx2", "fma", "bmi2")),
    "cpu-avx512": ("x86-64-v4", ("avx512f", "avx512bw", "avx512dq", "avx512vl")),
}

_init_lock = threading.Lock()
_initialized = False
#: LLVM is not re-entrant for one module / pass builder: compile on one thread at a time
compile_lock = threading.RLock()


def initialize() -> None:
    global _initialized
    with _init_lock:
        if not _initialized:
            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            _initialized = True


def host_features() -> set[str]:
    initialize()
    flat = llvm.get_host_cpu_features().flatten()
    return {f[1:] for f in flat.split(",") if f.startswith("+")}


@dataclass(frozen=True)
class Target:
    device: str
    triple: str
    cpu: str
    features: str

    def fingerprint(self) -> dict:
        """What compiled code depends on (goes into every cache key)."""
        import llvmlite

        return {"llvm_triple": self.triple, "llvm_cpu": self.cpu,
                "llvm_features": self.features, "llvmlite": llvmlite.__version__,
                "llvm": ".".join(map(str, llvm.llvm_version_info))}

    def missing_host_features(self) -> list[str]:
        """Features this target's code needs that the host lacks (empty: it can run here)."""
        if self.device == "cpu":
            return []
        need = ISA_LEVELS[self.device][1]
        have = host_features()
        return [f for f in need if f not in have]

    @functools.cached_property
    def machine(self) -> llvm.TargetMachine:
        initialize()
        target = llvm.Target.from_triple(self.triple)
        return target.create_target_machine(cpu=self.cpu, features=self.features, opt=3,
                                            reloc="pic", codemodel="default")


@functools.lru_cache(maxsize=None)
def target_for(device: str) -> Target:
    initialize()
    triple = llvm.get_process_triple()
    if device == "cpu":
        return Target(device, triple, llvm.get_host_cpu_name(),
                      llvm.get_host_cpu_features().flatten())
    if device not in ISA_LEVELS:
        raise ProfileError(f"llvm backend: unknown device {device!r}; "
                           f"choose from cpu, {', '.join(ISA_LEVELS)}")
    if not triple.startswith(("x86_64", "amd64")):
        raise ProfileError(f"llvm backend: device {device} is an x86-64 level, "
                           f"but this host is {triple}")
    return Target(device, triple, ISA_LEVELS[device][0], "")


def parse(ir_text: str, target: Target) -> llvm.ModuleRef:
    mod = llvm.parse_assembly(ir_text)
    mod.triple = target.triple
    mod.data_layout = str(target.machine.target_data)
    mod.verify()
    return mod


def optimize(mod: llvm.ModuleRef, target: Target) -> llvm.ModuleRef:
    """LLVM's default O3 module pipeline with both vectorizers (in place)."""
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pto.loop_unrolling = True
    pto.loop_interleaving = True
    pb = llvm.create_pass_builder(target.machine, pto)
    pb.getModulePassManager().run(mod, pb)
    return mod


def compile_ir(ir_text: str, target: Target) -> tuple[llvm.ModuleRef, bytes]:
    """Parse, verify, optimize and emit an object file for `target`."""
    with compile_lock:
        mod = optimize(parse(ir_text, target), target)
        return mod, target.machine.emit_object(mod)


def assembly(ir_text: str, target: Target) -> str:
    with compile_lock:
        mod = optimize(parse(ir_text, target), target)
        return target.machine.emit_assembly(mod)


def optimized_ir(ir_text: str, target: Target) -> str:
    with compile_lock:
        return str(optimize(parse(ir_text, target), target))
