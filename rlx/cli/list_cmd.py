"""`rlx list`: what is registered (models and their subgraphs, passes, compile presets)."""

from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("what", nargs="?", default="all",
                   choices=["all", "models", "passes", "presets"],
                   help="what to list (default: all)")


def _preset_summary(profile) -> str:
    parts = [f"backend={profile.backend}", f"device={profile.device}",
             f"precision={profile.precision}",
             f"fusion={'on' if profile.fusion else 'off'}", f"attention={profile.attention}"]
    if profile.vector_bits:
        parts.append(f"vector_bits={profile.vector_bits}")
    if profile.fastmath:
        parts.append("fastmath")
    if profile.verify:
        parts.append("verify")
    return ", ".join(parts)


def run(args) -> int:
    if args.what in ("all", "models"):
        from rlx.zoo import list_models, load_errors

        print("models:")
        for spec in list_models():
            names = ", ".join([spec.name, *spec.aliases])
            print(f"  {names:<28} {spec.description}")
            print(f"  {'':<28} subgraphs: {', '.join(spec.subgraphs)}")
        for err in load_errors():
            print(f"  (failed to load: {err})")
    if args.what in ("all", "passes"):
        from rlx.passes.registry import PASSES, default_pipeline

        pipeline = default_pipeline()
        print("passes (default pipeline order first; * = not in the default pipeline):")
        ordered = pipeline + [n for n in PASSES if n not in pipeline]
        for name in ordered:
            mark = " " if name in pipeline else "*"
            print(f" {mark}{name:<24} {PASSES[name].doc}")
    if args.what in ("all", "presets"):
        from rlx.runtime.profile import PRESETS

        from rlx.runtime.device import device_info

        print("compile presets (rlx ... --profile NAME):")
        for name, profile in PRESETS.items():
            print(f"  {name:<24} {_preset_summary(profile)}")
        info = device_info(PRESETS["default"])
        units = "+".join(info["matrix_units"]) or "no bf16 units (precision bf16 unavailable)"
        print(f"  device cpu here: {info['cpu']}, {info['vector_bits']}-bit vectors, {units}")
    return 0
