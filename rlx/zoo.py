"""The model registry: how the CLI finds models without `rlx` importing `models/`.

A model package announces itself through the ``rlx.models`` entry-point group
(see pyproject.toml) or the ``RLX_MODEL_MODULES`` environment variable (a
comma-separated list of modules); each such module exposes ``register()``,
which calls `register_model` for every model it provides and may add CLI
commands with `register_command` (SAM adds ``rlx segment`` this way).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from rlx.errors import RlxError
from rlx.ir.graph import Graph


@dataclass
class ModelSpec:
    """What rlx needs to know about a model to dump, compile and benchmark it."""

    name: str
    description: str
    #: subgraph name -> builder returning the HIR graph (subgraphs compile separately)
    subgraphs: dict[str, Callable[[], Graph]]
    #: seed -> weights keyed like the graph's weights (clearly synthetic)
    synthetic_weights: Callable[[int], Mapping[str, np.ndarray]]
    #: checkpoint path -> weights (None: the model has no checkpoint format)
    load_weights: Callable[[str], Mapping[str, np.ndarray]] | None = None
    #: (subgraph, seed) -> example inputs for benchmarks (default: random normal)
    example_inputs: Callable[[str, int], list[np.ndarray]] | None = None
    aliases: tuple[str, ...] = ()
    #: other implementations of the same subgraphs, for side-by-side benchmarks
    #: (``rlx bench --peer NAME``): name -> factory(subgraph, weights, threads)
    #: returning a callable on the same numpy inputs (returning a list of numpy
    #: outputs), or None when the peer has no counterpart of that subgraph. A
    #: factory raises ImportError when its own dependencies (torch, ...) are missing.
    peers: dict[str, Callable] = field(default_factory=dict)

    def build(self, subgraph: str | None = None) -> Graph:
        name = subgraph or next(iter(self.subgraphs))
        try:
            builder = self.subgraphs[name]
        except KeyError:
            raise RlxError(f"model {self.name} has no subgraph {name!r}; subgraphs: "
                           f"{', '.join(self.subgraphs)}") from None
        return builder()

    def inputs_for(self, subgraph: str, seed: int = 0) -> list[np.ndarray]:
        if self.example_inputs is not None:
            return self.example_inputs(subgraph, seed)
        g = self.build(subgraph)
        rng = np.random.default_rng(seed)
        return [rng.standard_normal(v.shape).astype(v.type.np_dtype) for v in g.inputs]


@dataclass
class Command:
    """A CLI command contributed by a model package (e.g. ``rlx segment``)."""

    name: str
    help: str
    add_arguments: Callable  # (argparse.ArgumentParser) -> None
    run: Callable  # (argparse.Namespace) -> int


_MODELS: dict[str, ModelSpec] = {}
_COMMANDS: dict[str, Command] = {}
_loaded = False
_load_errors: list[str] = []


def register_model(spec: ModelSpec) -> None:
    for key in (spec.name, *spec.aliases):
        if key in _MODELS and _MODELS[key] is not spec:
            raise RlxError(f"model name {key!r} registered twice")
        _MODELS[key] = spec


def register_command(command: Command) -> None:
    _COMMANDS[command.name] = command


def _load_plugins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    modules = [m.strip() for m in os.environ.get("RLX_MODEL_MODULES", "").split(",") if m.strip()]
    from importlib.metadata import entry_points

    for ep in entry_points(group="rlx.models"):
        try:
            ep.load()()
        except Exception as e:  # a broken plugin must not take the CLI down
            _load_errors.append(f"{ep.name} ({ep.value}): {type(e).__name__}: {e}")
    for mod in modules:
        try:
            importlib.import_module(mod).register()
        except Exception as e:
            _load_errors.append(f"{mod}: {type(e).__name__}: {e}")


def get_model(name: str) -> ModelSpec:
    _load_plugins()
    try:
        return _MODELS[name]
    except KeyError:
        known = ", ".join(sorted({s.name for s in _MODELS.values()})) or "none"
        hint = f" (plugins that failed to load: {'; '.join(_load_errors)})" if _load_errors else ""
        raise RlxError(f"unknown model {name!r}; registered models: {known}{hint}") from None


def list_models() -> list[ModelSpec]:
    _load_plugins()
    seen, out = set(), []
    for spec in _MODELS.values():
        if id(spec) not in seen:
            seen.add(id(spec))
            out.append(spec)
    return out


def list_commands() -> list[Command]:
    _load_plugins()
    return list(_COMMANDS.values())


def load_errors() -> list[str]:
    _load_plugins()
    return list(_load_errors)
