"""The target machine for a device profile, and LLVM's O3 pipeline.

`cpu` is this host: LLVM's own detection of the CPU name and feature string,
so AVX-512 / AVX2 are used where present. The ISA levels name the x86-64
micro-architecture levels LLVM knows (`x86-64`, `x86-64-v3` = AVX2+FMA,
`x86-64-v4` = AVX-512), so code can be built for a machine other than this
one. The CPU name and features are part of every kernel-cache key.

The vector width is a decision of the device profile, not of LLVM's tuning:
for Intel server CPUs (and the `x86-64-v4` level) LLVM's tuning prefers
256-bit vectors, for AMD Zen 4/5 512-bit, so the same profile would run at
half width on one vendor. The target therefore always says the width it
wants in its feature string (`prefer-128-bit` / `prefer-256-bit` on or off)
and in every function's attributes (`with_width`), and the explicit-SIMD kernels (`vecir.vector_config`) size their registers
from the same number. A device's width is its widest vector unless the
profile's ``vector_bits`` asks for less. 512 on AVX-512 devices is a reasoned
default, not a measured one: Zen 4/5 run 512-bit ops as two 256-bit halves at
no clock penalty (never slower than 256), Sapphire/Emerald Rapids have only
small AVX-512 frequency offsets, and the kernels that dominate (GEMM,
attention) are written 16 lanes wide anyway.

Optimization is LLVM's standard per-module O3 pipeline (new pass manager)
with loop vectorization, SLP vectorization, unrolling and interleaving on.
"""

from __future__ import annotations

import functools
import re
import threading
from dataclasses import dataclass

import llvmlite.binding as llvm

from rlx.errors import ProfileError

_AVX512 = ("avx512f", "avx512bw", "avx512dq", "avx512vl")
_BF16 = ("avx512bf16",)
_AMX = ("amx-tile", "amx-bf16")
#: device -> (LLVM CPU name, required host features to *run* the code); the levels past
#: cpu-avx512 name the matrix units (bf16 dot products: Zen 4/5, Sapphire/Emerald Rapids;
#: AMX tiles: Sapphire/Emerald/Granite Rapids), added to x86-64-v4 as LLVM features
ISA_LEVELS = {
    "cpu-generic": ("x86-64", ()),
    "cpu-avx2": ("x86-64-v3", ("avx2", "fma", "bmi2")),
    "cpu-avx512": ("x86-64-v4", _AVX512),
    "cpu-avx512-bf16": ("x86-64-v4", _AVX512 + _BF16),
    "cpu-amx": ("x86-64-v4", _AVX512 + _BF16 + _AMX),
}
#: features past the ISA level's CPU name that a device level adds to the feature string
_EXTRA = {"cpu-avx512-bf16": _BF16, "cpu-amx": _BF16 + _AMX}
#: the widths a profile may ask for
VECTOR_BITS = (128, 256, 512)

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


_host_features: frozenset | None = None


def host_features() -> set[str]:
    """This CPU's features, asked of LLVM once per process (a fresh set each call): the
    kernels of a warm compile each ask, and LLVM's query costs ~0.3 ms."""
    global _host_features
    if _host_features is None:
        initialize()
        flat = llvm.get_host_cpu_features().flatten()
        _host_features = frozenset(f[1:] for f in flat.split(",") if f.startswith("+"))
    return set(_host_features)


def widest_vector(features) -> int:
    """Bits of the widest float vector register a CPU with `features` has."""
    features = set(features)
    if "avx512f" in features:
        return 512
    return 256 if "avx2" in features and "fma" in features else 128


def width_features(bits: int) -> str:
    """Feature-string flags that make LLVM's vectorizers use `bits`-wide vectors (they
    override the CPU's tuning, which for Intel server CPUs prefers 256 bits)."""
    return {512: "-prefer-128-bit,-prefer-256-bit", 256: "-prefer-128-bit,+prefer-256-bit",
            128: "+prefer-128-bit,+prefer-256-bit"}[bits]


@dataclass(frozen=True)
class Target:
    device: str
    triple: str
    cpu: str
    #: the LLVM feature string, width flags included (see `width_features`)
    features: str
    #: the vector width the code uses (the device's widest unless the profile asked less)
    vector_bits: int = 128
    #: the device's widest vector width (AVX-512: 512, and 32 vector registers)
    max_bits: int = 128

    def fingerprint(self) -> dict:
        """What compiled code depends on (goes into every cache key; the width is in the
        feature string)."""
        import llvmlite

        return {"llvm_triple": self.triple, "llvm_cpu": self.cpu,
                "llvm_features": self.features, "llvm_codemodel": CODE_MODEL,
                "llvmlite": llvmlite.__version__,
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
                                            reloc="pic", codemodel=CODE_MODEL)


#: The JIT places each object's sections wherever the process has room; in a process with a
#: large, fragmented address space (a Ray worker, a long-lived server) code and its constant
#: pool can land more than 2 GB apart, which the small model's 32-bit PC-relative references
#: cannot span (RuntimeDyld aborts the process linking it). The large model addresses data
#: with 64-bit immediates; inside the hot loops those loads are hoisted, so it costs nothing
#: measurable there.
CODE_MODEL = "large"


def device_features(device: str) -> set[str]:
    """The CPU features code for `device` may use (`cpu`: what this host has)."""
    if device == "cpu":
        return host_features()
    if device not in ISA_LEVELS:
        raise ProfileError(f"llvm backend: unknown device {device!r}; "
                           f"choose from cpu, {', '.join(ISA_LEVELS)}")
    return set(ISA_LEVELS[device][1])


def matrix_units(device: str) -> tuple[str, ...]:
    """The bf16 matrix units code for `device` may use: ``avx512bf16`` (vdpbf16ps dot
    products) and ``amx-bf16`` (AMX tiles), in that order; () without any."""
    have = device_features(device)
    units = ("avx512bf16",) if "avx512bf16" in have and "avx512f" in have else ()
    return units + (("amx-bf16",) if {"amx-bf16", "amx-tile"} <= have else ())


def host_level() -> str:
    """The most capable device level this host runs (`cpu` as an ISA level name)."""
    have = host_features()
    for level in ("cpu-amx", "cpu-avx512-bf16", "cpu-avx512", "cpu-avx2"):
        if set(ISA_LEVELS[level][1]) <= have:
            return level
    return "cpu-generic"


def check_precision(device: str, precision: str, profile_name: str = "") -> None:
    """A ProfileError when `precision` asks for matrix units `device` lacks (bf16 needs
    AVX512-BF16 or AMX; generated code never emulates it)."""
    if precision == "bf16" and not matrix_units(device):
        where = (f"this CPU ({llvm.get_host_cpu_name()}, level {host_level()})"
                 if device == "cpu" else f"device {device}")
        raise ProfileError(
            f"profile {profile_name or '?'}: precision bf16 needs a CPU with AVX512-BF16 or "
            f"AMX-BF16, and {where} has neither; use precision f32 (the default profile), "
            f"or compile for --device cpu-avx512-bf16 / cpu-amx to run elsewhere")


def vector_bits_for(device: str, asked: int | None = None) -> int:
    """The vector width code for `device` uses: `asked` (a profile's ``vector_bits``), or
    the device's widest. Asking more than the device has is a ProfileError."""
    widest = widest_vector(device_features(device))
    if asked is None:
        return widest
    if asked not in VECTOR_BITS:
        raise ProfileError(f"vector_bits must be one of {', '.join(map(str, VECTOR_BITS))}, "
                           f"got {asked}")
    if asked > widest:
        raise ProfileError(f"vector_bits {asked}: device {device} has at most {widest}-bit "
                           f"vectors")
    return asked


def profile_target(profile) -> Target:
    """The target of a compile profile (its device and vector width)."""
    return target_for(profile.device, getattr(profile, "vector_bits", None))


@functools.lru_cache(maxsize=None)
def target_for(device: str, vector_bits: int | None = None, cpu: str | None = None) -> Target:
    """The target for `device` at `vector_bits` (None: the device's widest). `cpu` names
    another LLVM CPU for an ISA level (cross-compiling, e.g. ``sapphirerapids`` or
    ``znver4`` for ``cpu-avx512``: the code is not run here, its assembly is read)."""
    initialize()
    triple = llvm.get_process_triple()
    bits = vector_bits_for(device, vector_bits)
    widest = widest_vector(device_features(device))
    if device == "cpu":
        return Target(device, triple, cpu or llvm.get_host_cpu_name(),
                      llvm.get_host_cpu_features().flatten() + "," + width_features(bits),
                      bits, widest)
    if not triple.startswith(("x86_64", "amd64")):
        raise ProfileError(f"llvm backend: device {device} is an x86-64 level, "
                           f"but this host is {triple}")
    extra = "".join(f"+{f}," for f in _EXTRA.get(device, ()))
    return Target(device, triple, cpu or ISA_LEVELS[device][0], extra + width_features(bits),
                  bits, widest)


_DEFINE = re.compile(r"^(define [^\n]*?)\s*\{$", re.M)


def with_width(ir_text: str, bits: int) -> str:
    """`ir_text` with every function told the width (``prefer-vector-width``) and that
    wider vector types need not be legal (``min-legal-vector-width``): explicit wide
    values (an 8 x i64 address vector at 256 bits) are then split instead of using zmm."""
    attrs = f'"prefer-vector-width"="{bits}" "min-legal-vector-width"="{bits}"'
    return _DEFINE.sub(lambda m: f"{m.group(1)} {attrs} {{", ir_text)


def parse(ir_text: str, target: Target) -> llvm.ModuleRef:
    mod = llvm.parse_assembly(with_width(ir_text, target.vector_bits))
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
