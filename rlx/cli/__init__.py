"""The `rlx` command line: one module per command, plus commands models contribute.

Every input error (an `RlxError`) becomes one line on stderr and exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from rlx.errors import RlxError

# (module, command name, one-line help) for rlx's own commands, in --help order.
BUILTIN = [
    ("rlx.cli.dump_ir", "dump-ir", "print a graph's IR (text, DOT, ...) at any pipeline stage"),
    ("rlx.cli.convert", "convert", "convert a checkpoint (.pth/.safetensors) to .safetensors"),
    ("rlx.cli.list_cmd", "list", "list registered models, passes and presets"),
    ("rlx.cli.compile", "compile", "compile every subgraph of a model and report kernels, time, cache"),
    ("rlx.cli.bench", "bench", "time compiled subgraphs (min/median, GFLOP/s, peak memory)"),
    ("rlx.cli.cache", "cache", "the kernel cache: where, how big, entries per backend (info); empty it (clear)"),
]


def build_parser() -> argparse.ArgumentParser:
    import importlib

    from rlx import __version__
    from rlx.zoo import list_commands

    parser = argparse.ArgumentParser(
        prog="rlx", description="rlx: a small ML compiler for the CPU (flagship: Segment Anything)")
    parser.add_argument("--version", action="version", version=f"rlx {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module, name, help_ in BUILTIN:
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_, description=help_)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    for cmd in list_commands():
        if cmd.name in sub.choices:
            continue
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except RlxError as e:
        print(f"rlx {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
