"""`rlx list`: what is registered (models and their subgraphs, passes)."""

from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("what", nargs="?", default="all", choices=["all", "models", "passes"],
                   help="what to list (default: all)")


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
        from rlx.passes.registry import PASSES

        print("passes (default pipeline order):")
        for p in PASSES.values():
            print(f"  {p.name:<24} {p.doc}")
    return 0
