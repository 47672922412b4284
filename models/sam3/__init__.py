"""The SAM3 detection neck for rlx (``Sam3DualViTDetNeck`` without its SAM2 copy).

From the last ViT trunk feature ``[1, 1024, 72, 72]`` a SimpleFPN makes four
levels ``[1, 256, h, w]`` at scale factors 4, 2, 1 and 0.5, each with a sine
positional encoding. Modules: `config` (structure and state-dict layout),
`builder` (one HIR subgraph per branch), `position_encoding` (host-side,
cached per shape), `weights` (checkpoint extraction, synthetic weights),
`neck` (the compiled, user-facing object), `registration` (``rlx`` CLI).
"""

from .config import DEFAULT, NeckConfig  # noqa: F401
from .neck import Sam3Neck, load_neck  # noqa: F401

__all__ = ["load_neck", "Sam3Neck", "NeckConfig", "DEFAULT"]
