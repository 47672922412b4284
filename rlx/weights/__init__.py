"""Weight loading: checkpoints (PyTorch ``.pth`` zip, ``.safetensors``) as
read-only maps from Meta's state-dict names to numpy arrays.

``.pth`` files are read without torch and without running any code from the
file; see `rlx.weights.pth`.
"""

from rlx.weights.convert import ConvertSummary, convert, convert_command
from rlx.weights.store import MissingWeightError, WeightStore, load_weights

__all__ = [
    "ConvertSummary",
    "MissingWeightError",
    "WeightStore",
    "convert",
    "convert_command",
    "load_weights",
]
