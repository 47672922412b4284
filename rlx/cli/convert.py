"""`rlx convert`: rewrite a checkpoint as .safetensors (atomically)."""

from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("input", help="checkpoint to read (.pth zip format or .safetensors)")
    p.add_argument("output", help="the .safetensors file to write")


def run(args) -> int:
    from rlx.weights import convert_command

    print(convert_command(args.input, args.output))
    return 0
