"""`rlx dump-ir`: show a graph as built, or after any pass of the compile pipeline."""

from __future__ import annotations

import os
import sys

from rlx.errors import RlxError
from rlx.ir.analysis import to_dot
from rlx.ir.graph import Graph
from rlx.ir.parser import parse_file
from rlx.ir.printer import print_graph

FORMATS = {"text": "the IR text form", "dot": "Graphviz DOT",
           "kernels": "the generated kernel source of the profile's backend",
           "llvm": "the optimized LLVM IR of the kernels (llvm backend)",
           "asm": "the assembly of the kernels (llvm backend)"}
#: formats printed from the graph itself; the others come from the profile's backend
GRAPH_FORMATS = ("text", "dot")


def add_arguments(p) -> None:
    p.add_argument("target", help="a registered model name (see `rlx list`) or a .rlx text file")
    p.add_argument("--subgraph", "-s", help="which subgraph of the model (default: the first)")
    p.add_argument("--after", metavar="PASS",
                   help="run the compile pipeline up to and including PASS, then print "
                        "(see `rlx list passes`)")
    p.add_argument("--format", "-f", default="text", choices=sorted(FORMATS),
                   help="output format (default: text)")
    p.add_argument("--lower-attention", action="store_true",
                   help="decompose attention into matmul/softmax (as a profile may)")
    p.add_argument("--profile", "-p",
                   help="compile profile (preset or file) for the backend formats "
                        "kernels/llvm/asm (default: default)")
    p.add_argument("--output", "-o", help="write to this file instead of stdout")


def load_target(target: str, subgraph: str | None) -> Graph:
    if target.endswith(".rlx") or os.path.sep in target or os.path.exists(target):
        if not os.path.exists(target):
            raise RlxError(f"no such IR file: {target}")
        if subgraph:
            raise RlxError("--subgraph applies to models, not to .rlx files")
        return parse_file(target)
    from rlx.zoo import get_model

    return get_model(target).build(subgraph)


def run(args) -> int:
    from rlx.passes import PassManager, PassOptions, default_pipeline, get_pass

    graph = load_target(args.target, args.subgraph)
    if args.after:
        options = PassOptions(lower_attention=args.lower_attention, verify=True)
        names = default_pipeline(options)
        pm = PassManager([get_pass(n) for n in names], options, stop_after=args.after)
        graph = pm.run(graph)
    if args.format not in GRAPH_FORMATS:
        from rlx.runtime import compile_graph

        compiled = compile_graph(graph, args.profile or "default")
        formats = compiled.backend.capabilities().dump_formats
        if args.format not in formats:
            raise RlxError(f"--format {args.format}: profile {compiled.profile.name} compiles "
                           f"with the {compiled.backend.name} backend, which prints "
                           f"{', '.join(formats) or 'no kernel formats'}")
        text = compiled.dump(args.format)
    else:
        text = to_dot(graph) if args.format == "dot" else print_graph(graph)
    if args.output:
        from rlx.utils.fs import atomic_write_text

        atomic_write_text(args.output, text)
    else:
        sys.stdout.write(text)
    return 0
