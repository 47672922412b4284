"""The model-loading options every SAM command shares (`rlx annotate`, `rlx serve`).

One definition, so the checkpoint / size / profile options read and default the same
everywhere; `rlx segment` adds SAM 2's config names to ``--model`` and keeps its own.
"""

from __future__ import annotations

import argparse

__all__ = ["add_model_arguments"]


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", metavar="PATH",
                   help="Meta SAM checkpoint (.pth) or .safetensors; without it: synthetic "
                        "weights (meaningless masks)")
    p.add_argument("--model", default="vit_b", metavar="{vit_b,vit_l,vit_h}",
                   help="model size matching the checkpoint (default vit_b)")
    p.add_argument("--profile", default=None, metavar="P",
                   help="compile profile: a preset or a .toml/.json file (default: a profile "
                        "next to the checkpoint, else 'default')")
