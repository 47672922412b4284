"""Bisection switches for the SAM image encoder, read from the environment.

When an embedding disagrees with the official model, the quickest way to find
the culprit is to switch parts of the encoder off on both sides and see where
the disagreement goes away. These switches change the graph rlx builds (the
parity tests apply the same change to the official PyTorch model):

=============================  ===============================================
variable                       effect on the encoder graph
=============================  ===============================================
``RLX_SAM_DEBUG_DEPTH=N``      run only the first N transformer blocks, then
                               the neck (N >= 1, at most the model's depth)
``RLX_SAM_DEBUG_NO_RELPOS=1``  attention without the decomposed relative
                               position bias (the rel-pos tables are unused)
``RLX_SAM_DEBUG_FORCE_GLOBAL=1``  every block attends globally (no windows);
                               the windowed blocks' rel-pos tables are then
                               resized to the global length by the official
                               linear interpolation rule
``RLX_SAM_DEBUG_ZERO_RELH=1``  use an all-zero ``rel_pos_h`` table in every
                               block (the rel-pos ops still run)
``RLX_SAM_DEBUG_ZERO_RELW=1``  the same for ``rel_pos_w``
=============================  ===============================================

Boolean switches accept ``1/true/yes/on`` and ``0/false/no/off`` (or empty);
anything else is an error naming the variable, so a typo never silently
leaves a switch off. A model built with any switch on says so (a
:class:`DebugSwitchWarning`), because its output is no longer SAM's.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, fields
from typing import Mapping, Optional

from rlx.errors import RlxError

__all__ = ["DebugOptions", "DebugSwitchError", "DebugSwitchWarning", "ENV_VARS"]

PREFIX = "RLX_SAM_DEBUG_"

#: field of DebugOptions -> environment variable
ENV_VARS = {
    "depth": PREFIX + "DEPTH",
    "no_relpos": PREFIX + "NO_RELPOS",
    "force_global": PREFIX + "FORCE_GLOBAL",
    "zero_relh": PREFIX + "ZERO_RELH",
    "zero_relw": PREFIX + "ZERO_RELW",
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


class DebugSwitchError(RlxError):
    """An RLX_SAM_DEBUG_* variable has a value that cannot be understood."""


class DebugSwitchWarning(UserWarning):
    """A SAM model was built with debug switches on: its output is not SAM's."""


# Shown every time (not once per call site): each affected model must say so.
warnings.simplefilter("always", DebugSwitchWarning)


@dataclass(frozen=True)
class DebugOptions:
    """Which encoder bisection switches are on (all off by default)."""

    depth: Optional[int] = None
    no_relpos: bool = False
    force_global: bool = False
    zero_relh: bool = False
    zero_relw: bool = False

    def __post_init__(self):
        if self.depth is not None and (isinstance(self.depth, bool) or int(self.depth) != self.depth
                                       or self.depth < 1):
            raise DebugSwitchError(f"{ENV_VARS['depth']} must be a positive integer, "
                                   f"got {self.depth!r}")

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "DebugOptions":
        """Read the switches from ``environ`` (default: ``os.environ``)."""
        env = os.environ if environ is None else environ
        known = set(ENV_VARS.values())
        unknown = sorted(k for k in env if k.startswith(PREFIX) and k not in known)
        if unknown:
            raise DebugSwitchError(
                f"unknown SAM debug switch(es) {', '.join(unknown)}; known: "
                f"{', '.join(ENV_VARS.values())}")
        values = {}
        for field in fields(cls):
            var = ENV_VARS[field.name]
            raw = env.get(var)
            if raw is None:
                continue
            text = raw.strip()
            if field.name == "depth":
                if text == "":
                    continue
                try:
                    values["depth"] = int(text)
                except ValueError:
                    raise DebugSwitchError(f"{var} must be a positive integer, got {raw!r}") \
                        from None
            elif text.lower() in _TRUE:
                values[field.name] = True
            elif text.lower() in _FALSE:
                values[field.name] = False
            else:
                raise DebugSwitchError(f"{var} must be 1/0 (or true/false, yes/no, on/off), "
                                       f"got {raw!r}")
        return cls(**values)

    @property
    def active(self) -> bool:
        return self != DebugOptions()

    def describe(self) -> str:
        """``RLX_SAM_DEBUG_DEPTH=2, RLX_SAM_DEBUG_NO_RELPOS=1`` (empty if none)."""
        parts = []
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name == "depth":
                if value is not None:
                    parts.append(f"{ENV_VARS['depth']}={value}")
            elif value:
                parts.append(f"{ENV_VARS[field.name]}=1")
        return ", ".join(parts)

    def check(self, encoder_depth: int) -> None:
        """Refuse switches that do not fit a model of ``encoder_depth`` blocks."""
        if self.depth is not None and self.depth > encoder_depth:
            raise DebugSwitchError(f"{ENV_VARS['depth']}={self.depth} but the encoder has only "
                                   f"{encoder_depth} blocks")

    def warn(self, what: str) -> None:
        """Announce the active switches (no-op when none is on)."""
        if self.active:
            warnings.warn(f"{what}: SAM debug switches are on ({self.describe()}); the output "
                          "is NOT the model's", DebugSwitchWarning, stacklevel=3)
