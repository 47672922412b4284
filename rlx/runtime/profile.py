"""Compile profiles: how to compile (backend, threads, fusion, GEMM strategy, ...).

A profile is a preset name, a TOML/JSON file, or a file stored next to a
checkpoint (so a tuned setting travels with the weights). Files may start from
a preset (``base = "fast"``) and override fields; unknown fields are errors
naming the file and the key, never silently ignored.

The *device* says which CPU to compile for: ``cpu`` (this host, features
detected) or an ISA level (``cpu-generic``, ``cpu-avx2``, ``cpu-avx512``, and the
matrix-unit levels ``cpu-avx512-bf16`` and ``cpu-amx``). It is part of every
kernel-cache key. The *precision* says what the graph may compute in: ``f32``
(every preset but ``bf16``) or ``bf16`` (matrix products on bf16 operands with
f32 accumulation; see `rlx.passes.precision`). The device also fixes the vector width the
generated code uses (its widest, unless ``vector_bits`` asks for less; see
`rlx.backends.llvm.target` for why 512 on AVX-512 CPUs).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from rlx.errors import ProfileError

BACKEND_NAMES = ("reference", "numba", "llvm")
DEVICES = ("cpu", "cpu-generic", "cpu-avx2", "cpu-avx512", "cpu-avx512-bf16", "cpu-amx")
PRECISIONS = ("f32", "bf16")


@dataclass(frozen=True)
class CompileProfile:
    name: str = "custom"
    #: which backend compiles kernels: reference | numba | llvm
    backend: str = "reference"
    #: target CPU: cpu (host) | cpu-generic | cpu-avx2 | cpu-avx512 | cpu-avx512-bf16 | cpu-amx
    device: str = "cpu"
    #: what matrix products compute in: f32 (exact parity) | bf16 (operands rounded to
    #: bfloat16, products accumulated in f32; needs AVX512-BF16 or AMX on compiled backends)
    precision: str = "f32"
    #: threads for kernels and BLAS (0 = all cores)
    threads: int = 0
    #: run the fusion passes
    fusion: bool = True
    #: fuse GEMM epilogues (bias, activation, residual) into the GEMM kernel
    epilogue_fusion: bool = True
    #: GEMMs: "blas" (numpy's BLAS) or "native" (the backend's own tiled kernel)
    gemm: str = "blas"
    #: attention: "blocked" (one kernel, never materializes the score matrix) or "decomposed"
    attention: str = "blocked"
    #: query rows per block in blocked attention
    attention_block: int = 256
    #: 3x3 stride-1 convolutions (>= 16 channels) as Winograd F(m x m, 3 x 3) with output
    #: tile m = 4 (4x fewer GEMM multiply-adds) or 2 (2.25x, rounds less); 0: im2col GEMM
    winograd: int = 4
    #: vector width in bits of the generated loops and register tiles: 128 | 256 | 512
    #: (None: the device's widest -- 512 with AVX-512, 256 with AVX2, 128 otherwise)
    vector_bits: int | None = None
    #: allow fast-math reassociation in generated kernels (results may differ in last bits)
    fastmath: bool = False
    #: verify the graph after every pass
    verify: bool = False
    #: kernel cache directory (None: $RLX_CACHE_DIR or the user cache dir)
    cache_dir: str | None = None
    #: use the on-disk kernel cache at all
    cache: bool = True
    #: kernel cache size cap in MB; least recently used entries go beyond it
    #: (None: $RLX_CACHE_MAX_MB or 2048; 0: no cap)
    cache_max_mb: int | None = None
    #: where this profile came from (preset name or file), for reports
    source: str = field(default="", compare=False)

    def __post_init__(self):
        if self.backend not in BACKEND_NAMES:
            raise ProfileError(f"profile {self.name}: unknown backend {self.backend!r}; "
                               f"choose from {', '.join(BACKEND_NAMES)}")
        if self.device not in DEVICES:
            raise ProfileError(f"profile {self.name}: unknown device {self.device!r}; "
                               f"choose from {', '.join(DEVICES)}")
        if self.precision not in PRECISIONS:
            raise ProfileError(f"profile {self.name}: unknown precision {self.precision!r}; "
                               f"choose from {', '.join(PRECISIONS)}")
        if self.gemm not in ("blas", "native"):
            raise ProfileError(f"profile {self.name}: gemm must be 'blas' or 'native'")
        if self.attention not in ("blocked", "decomposed"):
            raise ProfileError(f"profile {self.name}: attention must be 'blocked' or 'decomposed'")
        if type(self.winograd) is not int or self.winograd not in (0, 2, 4):
            raise ProfileError(f"profile {self.name}: winograd must be 0 (off), 2 or 4 "
                               f"(the output tile), got {self.winograd!r}")
        if self.vector_bits is not None and self.vector_bits not in (128, 256, 512):
            raise ProfileError(f"profile {self.name}: vector_bits must be 128, 256 or 512 "
                               f"(or unset: the device's widest), got {self.vector_bits}")
        if self.cache_max_mb is not None and self.cache_max_mb < 0:
            raise ProfileError(f"profile {self.name}: cache_max_mb must be >= 0 (0: no cap)")
        if self.threads < 0 or self.attention_block <= 0:
            raise ProfileError(f"profile {self.name}: threads >= 0 and attention_block > 0")

    def replace(self, **changes) -> "CompileProfile":
        return dataclasses.replace(self, **changes)

    @property
    def effective_threads(self) -> int:
        return self.threads or os.cpu_count() or 1

    def resolved_cache_dir(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir).expanduser()
        env = os.environ.get("RLX_CACHE_DIR")
        if env:
            return Path(env).expanduser()
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return Path(base) / "rlx"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("source")
        return d


#: The best compiled backend available; "default" and "fast" use it. Chosen by measurement
#: (benchmarks/bench_sam.py, SAM ViT-B, 2 threads): llvm runs the image encoder in ~2.7 s
#: against numba's ~3.7 s and prompt -> masks in ~19 ms against ~22 ms.
BEST_BACKEND = "llvm"

PRESETS: dict[str, CompileProfile] = {
    "default": CompileProfile(name="default", backend=BEST_BACKEND),
    "debug": CompileProfile(name="debug", backend="reference", fusion=False, verify=True,
                            attention="decomposed"),
    "reference": CompileProfile(name="reference", backend="reference"),
    "numba": CompileProfile(name="numba", backend="numba"),
    "llvm": CompileProfile(name="llvm", backend="llvm"),
    #: `fast` stays f32: bf16 moves SAM's embedding by ~1e-2 (rel. L2) and needs matrix
    #: units many CPUs lack, so it is asked for by name, never picked behind the user's back
    "fast": CompileProfile(name="fast", backend=BEST_BACKEND, fastmath=True),
    "bf16": CompileProfile(name="bf16", backend=BEST_BACKEND, precision="bf16"),
}

_FIELDS = {f.name for f in dataclasses.fields(CompileProfile)} - {"source"}
#: field -> (python type, may be None), from the annotations ("int", "str | None", ...)
_FIELD_TYPES = {
    f.name: ({"bool": bool, "int": int, "str": str}[str(f.type).split(" ")[0]],
             str(f.type).endswith("| None"))
    for f in dataclasses.fields(CompileProfile) if f.name in _FIELDS
}


def load_profile_file(path: str | os.PathLike) -> CompileProfile:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ProfileError(f"cannot read profile file {path}: {e.strerror}") from None
    try:
        if path.suffix == ".json":
            data = json.loads(raw.decode("utf-8"))
        elif path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(raw.decode("utf-8"))
        else:
            raise ProfileError(f"profile file {path}: use a .toml or .json file")
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError and TOMLDecodeError
        raise ProfileError(f"profile file {path} is malformed: {e}") from None
    if isinstance(data, dict) and isinstance(data.get("profile"), dict):
        data = data["profile"]  # allow a [profile] table
    if not isinstance(data, dict):
        raise ProfileError(f"profile file {path}: expected a table of settings")
    base_name = data.pop("base", "default")
    if not isinstance(base_name, str):
        raise ProfileError(f"profile file {path}: base must be a preset name, got {base_name!r}")
    if base_name not in PRESETS:
        raise ProfileError(f"profile file {path}: unknown base preset {base_name!r}; "
                           f"presets: {', '.join(PRESETS)}")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise ProfileError(f"profile file {path}: unknown setting(s) {', '.join(unknown)}; "
                           f"known: {', '.join(sorted(_FIELDS))}")
    for key, value in data.items():
        expected, optional = _FIELD_TYPES[key]
        ok = (value is None and optional) or (
            isinstance(value, expected) and not (expected is int and isinstance(value, bool)))
        if not ok:
            raise ProfileError(f"profile file {path}: {key} must be {expected.__name__}"
                               f"{' or null' if optional else ''}, got {value!r}")
    data.setdefault("name", path.stem)
    try:
        return PRESETS[base_name].replace(source=str(path), **data)
    except ProfileError as e:  # a value out of range: say which file it came from
        raise ProfileError(f"profile file {path}: {e}") from None


def near_weights_candidates(checkpoint: str | os.PathLike) -> list[Path]:
    ckpt = Path(checkpoint)
    stem = ckpt.name.split(".")[0]
    return [ckpt.with_name(f"{stem}.rlx.toml"), ckpt.with_name(f"{stem}.rlx.json"),
            ckpt.with_name("rlx-profile.toml"), ckpt.with_name("rlx-profile.json")]


def profile_near_weights(checkpoint: str | os.PathLike | None) -> CompileProfile:
    """The profile file stored next to a checkpoint, if any, else the default preset.

    Looked for, in order: ``<stem>.rlx.toml``, ``<stem>.rlx.json``,
    ``rlx-profile.toml``, ``rlx-profile.json`` in the checkpoint's directory
    (for ``sam_vit_b_01ec64.pth`` the first is ``sam_vit_b_01ec64.rlx.toml``).
    """
    if checkpoint is not None:
        for cand in near_weights_candidates(checkpoint):
            if cand.is_file():
                return load_profile_file(cand)
    return PRESETS["default"].replace(source="default")


def resolve_profile(spec: "str | os.PathLike | CompileProfile | None",
                    checkpoint: str | os.PathLike | None = None) -> CompileProfile:
    """A profile from a preset name, a file path, a profile object, or None (near weights)."""
    if isinstance(spec, CompileProfile):
        return spec
    if spec is None:
        return profile_near_weights(checkpoint)
    spec = str(spec)
    if spec in PRESETS:
        return PRESETS[spec].replace(source=spec)
    if spec.endswith((".toml", ".json")) or os.path.sep in spec:
        return load_profile_file(spec)
    raise ProfileError(f"unknown profile {spec!r}: not a preset ({', '.join(PRESETS)}) "
                       f"nor a .toml/.json file")
