"""Imports point down only: every module under rlx/ is read (with `ast`, never run) and
each import it makes -- at the top, inside a function, or through
``importlib.import_module("...")`` with a literal name -- must land in its own layer or
one below.

The layers, bottom to top (a module may import its own layer and every layer below;
`ALLOWED` spells out the exceptions to a plain ladder):

====  =====================================  =========================================
rank  folders                                why there
====  =====================================  =========================================
0     ``rlx/__init__``, ``rlx/errors.py``,   error types and file helpers everybody
      ``rlx/utils/``                         uses; they know nothing of the IR
1     ``rlx/weights/``                       checkpoint reading; a library beside the
                                             compiler: it sees only rank 0, and only
                                             the runtime and above may use it
1     ``rlx/datasets/``                      run a function over many files; beside the
                                             compiler like weights: sees only rank 0,
                                             used by the front end (and models)
2     ``rlx/ir/``                            graph, types, ops, views (``ir/views.py``)
3     ``rlx/passes/``                        rewrite IR; know only the IR
4     ``rlx/backends/`` (incl. the on-disk   compile a lowered graph, whoever lowered
      kernel store,                          it: they see the IR, never the passes
      ``backends/common/kernel_store.py``)
5     ``rlx/runtime/``                       profiles, compile_graph, plans
6     ``rlx/cli/``, ``rlx/zoo.py``           the front end and the model registry
====  =====================================  =========================================

``models/`` sits above everything and is never imported from rlx/ (models register
through an entry point).
"""

from __future__ import annotations

import ast
from pathlib import Path

RLX = Path(__file__).resolve().parents[1] / "rlx"

BASE = "base"
#: layer -> the layers its modules may import (their own included)
ALLOWED = {
    BASE: {BASE},
    "weights": {BASE, "weights"},
    "datasets": {BASE, "datasets"},
    "ir": {BASE, "ir"},
    "passes": {BASE, "ir", "passes"},
    "backends": {BASE, "ir", "backends"},
    "runtime": {BASE, "weights", "ir", "passes", "backends", "runtime"},
    "front": {BASE, "weights", "datasets", "ir", "passes", "backends", "runtime", "front"},
}
ORDER = ["base", "weights", "datasets", "ir", "passes", "backends", "runtime", "front"]
LIBRARIES = {"weights", "datasets", "ir", "passes", "backends", "runtime"}


def layer_of(module: str) -> str | None:
    """The layer of a dotted module name inside rlx (None: not rlx)."""
    parts = module.split(".")
    if parts[0] != "rlx":
        return None
    if len(parts) == 1 or parts[1] in ("errors", "utils"):
        return BASE
    if parts[1] in ("cli", "zoo"):
        return "front"
    if parts[1] in LIBRARIES:
        return parts[1]
    return "unplaced"


def module_name(path: Path, root: Path = RLX) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path = RLX) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file."""
    tree = ast.parse(path.read_text("utf-8"), str(path))
    here = module_name(path, root).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.append((node.lineno, target))
            # `from rlx import runtime` names a submodule: judge the submodule too
            folder = root.parent.joinpath(*target.split("."))
            found += [(node.lineno, f"{target}.{a.name}") for a in node.names
                      if (folder / a.name).is_dir() or (folder / f"{a.name}.py").is_file()]
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"):
            found.append((node.lineno, node.args[0].value))
    return sorted(found)


def violations(root: Path = RLX) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        src = module_name(path, root)
        src_layer = layer_of(src)
        if src_layer == "unplaced":
            bad.append(f"{path.relative_to(root.parent)}: rlx/{src.split('.')[1]} has no layer "
                       f"yet; place it in tests/test_layers.py")
            continue
        for line, target in imports_of(path, root):
            where = f"{path.relative_to(root.parent)}:{line}"
            if target.split(".")[0] == "models":
                bad.append(f"{where}: {src} imports {target} (rlx/ never imports models/)")
                continue
            dst_layer = layer_of(target)
            if dst_layer is None or dst_layer == "unplaced" or dst_layer in ALLOWED[src_layer]:
                continue
            bad.append(f"{where}: {src} ({src_layer}) imports {target} ({dst_layer})")
    return bad


def test_every_import_points_down():
    bad = violations()
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_the_table_is_a_ladder():
    # Every allowed edge points to the same rank or lower: the exceptions only forbid.
    for layer, allowed in ALLOWED.items():
        for other in allowed:
            assert ORDER.index(other) <= ORDER.index(layer), (layer, other)


def test_the_walker_sees_arrows_back(tmp_path):
    """The walker itself: a planted upward import in each form is reported."""
    pkg = tmp_path / "rlx"
    for sub in ("ir", "backends/numba", "passes"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "ir" / "a.py").write_text("from rlx.passes import x\n")
    (pkg / "ir" / "b.py").write_text("def f():\n    from ..runtime.cache import K\n")
    (pkg / "ir" / "c.py").write_text("import importlib\nimportlib.import_module('rlx.cli')\n"
                                     "from rlx import passes\n")
    (pkg / "ir" / "d.py").write_text("import models.sam\n")
    (pkg / "backends" / "numba" / "e.py").write_text("from rlx.passes.fuse import y\n")
    (pkg / "ir" / "fine.py").write_text("from rlx.errors import RlxError\nfrom . import a\n")
    bad = violations(pkg)
    assert [b.split(" ")[0] for b in bad] == [
        "rlx/backends/numba/e.py:1:", "rlx/ir/a.py:1:", "rlx/ir/b.py:2:", "rlx/ir/c.py:2:",
        "rlx/ir/c.py:3:", "rlx/ir/d.py:1:"]
    assert "rlx.runtime.cache" in bad[2] and "never imports models" in bad[5]
