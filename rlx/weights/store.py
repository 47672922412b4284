"""`WeightStore`: a model's weights as a read-only name -> numpy array map.

Names are the checkpoint's own state-dict names (Meta's
``image_encoder.blocks.0.attn.qkv.weight``), so official checkpoints load
with no remapping and the IR can refer to weights by name. The store is the
one place that knows about file formats: ``WeightStore.load`` looks at the
file's first bytes, not its suffix, and picks the reader.

Arrays are C-contiguous and read-only (``flags.writeable == False``): the
same array may be shared by several stores (``subset``) and by the runtime,
so nobody may change a weight in place. Native dtypes are preserved
(float32, float16, int64, bool, ...), except bfloat16, which numpy lacks:
bf16 tensors are widened to float32 on load (exactly; names in ``widened``).
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from rlx.errors import CheckpointError
from rlx.weights.dtypes import c_contiguous, human_bytes
from rlx.weights.pth import (
    EMPTY_ZIP_MAGIC,
    ZIP_MAGIC,
    legacy_message,
    looks_like_legacy_torch,
    read_pth,
)
from rlx.weights.safetensors_io import looks_like_safetensors, read_safetensors, write_safetensors

# Keys under which training scripts commonly nest the state dict.
STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict")

# How many entries of each kind a `check` message lists before "... and N more".
_LIST_LIMIT = 10


class MissingWeightError(CheckpointError, KeyError):
    """A name looked up in a `WeightStore` is not there.

    A `KeyError` so the store behaves as a `Mapping`; a `CheckpointError` so
    the CLI reports it as one clear line.
    """

    __str__ = BaseException.__str__  # KeyError would repr() the message


class WeightStore(Mapping[str, np.ndarray]):
    """Read-only mapping from state-dict name to numpy array."""

    def __init__(
        self,
        tensors: Mapping[str, Any],
        *,
        source: str | os.PathLike | None = None,
        widened: Iterable[str] = (),
        _prefix: str = "",
    ):
        label = str(source) if source is not None else "weights"
        arrays: dict[str, np.ndarray] = {}
        for name, value in tensors.items():
            if not isinstance(name, str):
                raise CheckpointError(f"{label}: tensor name {name!r} is not a string")
            array = np.asarray(value)
            if array.dtype.hasobject or array.dtype.kind not in "biufc":
                raise CheckpointError(
                    f"{label}: '{_prefix}{name}' has dtype {array.dtype}; "
                    "weights must be numeric or bool arrays"
                )
            view = c_contiguous(array).view()
            view.flags.writeable = False  # a view, so the caller's array stays writable
            arrays[name] = view
        self._tensors = arrays
        self._source = Path(source) if source is not None else None
        self._widened = frozenset(w for w in widened if w in arrays)
        self._prefix = _prefix

    # -- loading ---------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike) -> "WeightStore":
        """Load a checkpoint, choosing the reader from the file's content.

        PyTorch zip checkpoints (``torch.save``) and safetensors files are
        supported. A ``.pth`` may hold the state dict at top level or nested
        under one of ``state_dict``/``model``/``model_state_dict``.
        """
        path = Path(path)
        if not path.exists():
            raise CheckpointError(f"{path}: no such file")
        if not path.is_file():
            raise CheckpointError(f"{path}: not a regular file")
        try:
            with open(path, "rb") as f:
                head = f.read(512)
        except OSError as e:
            raise CheckpointError(f"{path}: cannot read: {e}") from e
        if not head:
            raise CheckpointError(f"{path}: file is empty")
        if head.startswith(ZIP_MAGIC) or head.startswith(EMPTY_ZIP_MAGIC):
            contents = read_pth(path)
            tensors, widened = _select_state_dict(contents.obj, contents.widened, path)
            return cls(tensors, source=path, widened=widened)
        if looks_like_safetensors(head):
            tensors, widened = read_safetensors(path)
            return cls(tensors, source=path, widened=widened)
        if looks_like_legacy_torch(head):
            raise CheckpointError(legacy_message(path, head))
        if len(head) > 262 and head[257:262] == b"ustar":
            raise CheckpointError(
                f"{path}: very old (tar-based) PyTorch checkpoint; re-save it with a "
                "newer torch: torch.save(torch.load(old_path), new_path)"
            )
        raise CheckpointError(
            f"{path}: unrecognised checkpoint format (neither a PyTorch zip checkpoint "
            "nor safetensors)"
        )

    # -- Mapping ---------------------------------------------------------

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self._tensors[name]
        except KeyError:
            pass
        close = difflib.get_close_matches(str(name), self._tensors, n=1)
        hint = f"; did you mean '{self._prefix}{close[0]}'?" if close else ""
        raise MissingWeightError(f"{self._label()}: no tensor '{self._prefix}{name}'{hint}")

    def __contains__(self, name: object) -> bool:
        return name in self._tensors

    def get(self, name, default=None):
        return self._tensors.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def __repr__(self) -> str:
        where = f", source='{self._source}'" if self._source else ""
        prefix = f", prefix='{self._prefix}'" if self._prefix else ""
        return f"WeightStore({len(self)} tensors, {human_bytes(self.nbytes)}{where}{prefix})"

    # -- properties ------------------------------------------------------

    @property
    def source(self) -> Path | None:
        """The file the weights came from, or None if built from a dict."""
        return self._source

    @property
    def widened(self) -> frozenset[str]:
        """Names of tensors stored as bfloat16 in the file, float32 here."""
        return self._widened

    @property
    def nbytes(self) -> int:
        """Total size of all arrays in bytes."""
        return sum(a.nbytes for a in self._tensors.values())

    # -- derived stores ----------------------------------------------------

    def subset(self, prefix: str, strip: bool = True) -> "WeightStore":
        """The tensors under a dotted module path, e.g. ``subset("image_encoder")``.

        ``prefix`` matches whole name components (``"image_encoder"`` and
        ``"image_encoder."`` both select ``image_encoder.*``, never
        ``image_encoder_x.*``). With ``strip`` the prefix is removed from the
        names. Error messages of the new store still show full file names.
        An empty selection is an error (it is almost always a typo).
        """
        dotted = prefix if not prefix or prefix.endswith(".") else prefix + "."
        picked = {k: v for k, v in self._tensors.items() if k.startswith(dotted)}
        if not picked:
            heads = sorted({k.split(".", 1)[0] for k in self._tensors})
            shown = ", ".join(heads[:_LIST_LIMIT]) + (" ..." if len(heads) > _LIST_LIMIT else "")
            raise CheckpointError(
                f"{self._label()}: no tensors under '{self._prefix}{dotted}'; "
                f"top-level names are: {shown}"
            )
        if strip:
            picked = {k[len(dotted):]: v for k, v in picked.items()}
            widened = {w[len(dotted):] for w in self._widened if w.startswith(dotted)}
            new_prefix = self._prefix + dotted
        else:
            widened = set(self._widened)
            new_prefix = self._prefix
        return WeightStore(picked, source=self._source, widened=widened, _prefix=new_prefix)

    # -- validation --------------------------------------------------------

    def check(
        self,
        expected: Mapping[str, tuple[int, ...]],
        *,
        what: str,
        allow_unexpected: bool = False,
    ) -> None:
        """Raise one `CheckpointError` listing every way the store misfits.

        ``expected`` maps name -> shape. The message lists missing names
        (with the expected shape), unexpected names (unless
        ``allow_unexpected``) and wrong shapes (expected vs. got), each list
        cut after a few entries with "... and N more". ``what`` names the
        consumer, e.g. ``"SAM ViT-B image encoder"``.
        """
        p = self._prefix
        missing = [
            f"{p}{name} (expected {_shape(shape)})"
            for name, shape in expected.items()
            if name not in self._tensors
        ]
        wrong = [
            f"{p}{name}: expected {_shape(shape)}, got {_shape(self._tensors[name].shape)}"
            for name, shape in expected.items()
            if name in self._tensors and tuple(self._tensors[name].shape) != tuple(shape)
        ]
        unexpected = (
            []
            if allow_unexpected
            else [
                f"{p}{name} (shape {_shape(a.shape)})"
                for name, a in self._tensors.items()
                if name not in expected
            ]
        )
        if not (missing or wrong or unexpected):
            return
        counts = [
            f"{len(items)} {label}"
            for items, label in ((missing, "missing"), (unexpected, "unexpected"), (wrong, "wrong shape"))
            if items
        ]
        lines = [f"{self._label()}: weights do not fit {what} ({', '.join(counts)})"]
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            for item in items[:_LIST_LIMIT]:
                lines.append(f"  {label}: {item}")
            if len(items) > _LIST_LIMIT:
                lines.append(f"  ... and {len(items) - _LIST_LIMIT} more {label}")
        raise CheckpointError("\n".join(lines))

    # -- saving ------------------------------------------------------------

    def save_safetensors(self, path: str | os.PathLike) -> None:
        """Write all tensors to a safetensors file, atomically."""
        write_safetensors(path, self._tensors)

    def _label(self) -> str:
        return str(self._source) if self._source is not None else "weights"


def load_weights(path: str | os.PathLike) -> WeightStore:
    """Load a checkpoint file; see `WeightStore.load`."""
    return WeightStore.load(path)


def _shape(shape: Iterable[int]) -> str:
    return "[" + ", ".join(str(int(n)) for n in shape) + "]"


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, np.ndarray) for v in obj.values())


def _select_state_dict(
    obj: Any, widened: frozenset[tuple], path: Path
) -> tuple[dict[str, np.ndarray], set[str]]:
    """Find the state dict in an unpickled checkpoint.

    Accepts a dict of tensors, or a dict holding exactly one dict of tensors
    under a key from `STATE_DICT_KEYS` (``{"model": state_dict, "epoch": 3}``).
    """
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{path}: holds a {type(obj).__name__}, expected a dict of tensors (a state dict)"
        )
    if not obj:
        raise CheckpointError(f"{path}: holds an empty dict; no tensors to load")
    if _is_tensor_dict(obj):
        tensors, under = obj, ()
    else:
        not_tensors = [k for k, v in obj.items() if not isinstance(v, np.ndarray)]
        if len(not_tensors) < len(obj):  # some tensors at top level, but not only
            listing = ", ".join(f"{k!r} ({_kind(obj[k])})" for k in not_tensors[:_LIST_LIMIT])
            more = f" and {len(not_tensors) - _LIST_LIMIT} more" if len(not_tensors) > _LIST_LIMIT else ""
            raise CheckpointError(
                f"{path}: top-level dict mixes tensors with other values: {listing}{more}; "
                "expected a dict of tensors (a state dict)"
            )
        found = [k for k in STATE_DICT_KEYS if _is_tensor_dict(obj.get(k))]
        if len(found) != 1:
            listing = ", ".join(f"{k!r} ({_kind(v)})" for k, v in list(obj.items())[:_LIST_LIMIT])
            more = f" and {len(obj) - _LIST_LIMIT} more" if len(obj) > _LIST_LIMIT else ""
            reason = (
                f"several candidate state dicts ({', '.join(found)})"
                if found
                else "no state dict"
            )
            raise CheckpointError(
                f"{path}: {reason}; expected a dict of tensors, or one nested under "
                f"{'/'.join(STATE_DICT_KEYS)}. Top-level keys: {listing}{more}"
            )
        tensors, under = obj[found[0]], (found[0],)
    for name in tensors:
        if not isinstance(name, str):
            raise CheckpointError(f"{path}: tensor name {name!r} is not a string")
    names = {w[len(under)] for w in widened if w[: len(under)] == under and len(w) == len(under) + 1}
    return dict(tensors), names


def _kind(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return "tensor"
    if isinstance(value, dict):
        return "dict of tensors" if _is_tensor_dict(value) else "dict"
    return type(value).__name__
