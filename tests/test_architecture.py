"""The floors of docs/architecture.md, checked: no import cycles and no import from a lower floor
to a higher one, counting imports at module level and inside functions alike.

Every module of the package has a floor (the most specific prefix in ``FLOORS`` wins). A module
may import modules of its own floor or lower ones. The resharding engine (``distinfer.reshard``)
sits beside the runtime: it and the runtime modules of floor 4 never import each other. Faces
(``FACES``: ``distinfer/__init__.py`` and the MindSpore-named packages and modules) only re-export,
so they may import any floor, and nothing but another face imports a face.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "distinfer"

# Floor of each module, by the most specific dotted prefix. 4.5 is the resharding engine,
# beside the runtime (4): neither imports the other. Its facades (reshard.api) load into a Cell
# through serialization, so they are on floor 5.
FLOORS: dict[str, float] = {
    "distinfer.dtype": 1, "distinfer.errors": 1, "distinfer.layout": 1, "distinfer.plan": 1,
    "distinfer._proto": 1, "distinfer.communication._backend": 1, "distinfer.communication._guard": 1,
    "distinfer.communication._agree": 1, "distinfer._logging": 1,
    "distinfer.launch": 1, "distinfer._version": 1, "distinfer._random": 1, "distinfer._cpu": 1, "distinfer._lazy": 1,
    "distinfer._format": 1,
    "distinfer.context": 2, "distinfer.communication": 2, "distinfer.tensor": 2, "distinfer.common": 2,
    "distinfer._initializers": 2,
    "distinfer.io": 2, "distinfer.runtime": 2,
    "distinfer.ops": 3,
    "distinfer.parallel": 4, "distinfer.autograd": 4, "distinfer.nn": 4, "distinfer.amp": 4,
    "distinfer.reshard": 4.5, "distinfer.reshard.api": 5,
    "distinfer.serialization": 5, "distinfer.train": 5, "distinfer.exporter": 5, "distinfer.dataset": 5,
    "distinfer.cli": 5, "distinfer.__main__": 5,
}
FACES = {"distinfer", "distinfer.nn", "distinfer.parallel", "distinfer.train", "distinfer.common", "distinfer.ops",
         "distinfer.ops.functional", "distinfer.ops.composite",
         # MindSpore's module paths, each re-exporting objects that live elsewhere
         "distinfer.common.dtype", "distinfer.common.tensor", "distinfer.common.parameter", "distinfer.nn.utils",
         "distinfer.nn.optim.optimizer", "distinfer.nn.optim.sgd", "distinfer.nn.optim.momentum",
         "distinfer.nn.optim.adam", "distinfer.train.serialization", "distinfer.parallel.shard",
         "distinfer.parallel.nn", "distinfer.parallel.auto_parallel"}

def modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        if path.name.endswith("_pb2.py"):
            continue
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _target(mods: dict[str, Path], importer: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    """The package modules an import statement names (``from .x import y``: ``x.y`` if that is a
    module, else ``x``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in mods]
    if node.level:
        pkg = importer.split(".") if mods[importer].name == "__init__.py" else importer.split(".")[:-1]
        base = pkg[:len(pkg) - (node.level - 1)] + ([node.module] if node.module else [])
        name = ".".join(base)
    else:
        name = node.module or ""
    if not name.startswith("distinfer"):
        return []
    subs = [f"{name}.{a.name}" for a in node.names if f"{name}.{a.name}" in mods]
    return subs or ([name] if name in mods else [])


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                deps.update(_target(mods, name, node))
        deps.discard(name)
        graph[name] = deps
    return graph


def floor(module: str) -> float:
    best = max((p for p in FLOORS if module == p or module.startswith(p + ".")), key=len, default=None)
    if best is None:
        raise AssertionError(f"module {module} has no floor in FLOORS: add it (docs/architecture.md names floors)")
    return FLOORS[best]


def violations(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    bad = set()
    for src, deps in graph.items():
        for dst in deps:
            if dst in FACES:
                if src not in FACES:
                    bad.add((src, dst))
                continue
            if src in FACES:
                continue
            a, b = floor(src), floor(dst)
            if b > a or {a, b} == {4, 4.5}:
                bad.add((src, dst))
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_floor() -> None:
    for name in modules():
        if name not in FACES:
            floor(name)


def test_no_import_goes_up_a_floor() -> None:
    bad = sorted(violations(import_graph()))
    assert not bad, "imports from a lower floor to a higher one (or between the runtime and reshard):\n" + \
        "\n".join(f"  {a} (floor {floor(a) if a not in FACES else 'face'}) -> {b}" for a, b in bad)


def test_no_import_cycles() -> None:
    # A face imports everything, so an import of a face closes a loop; that import is already a
    # violation above, and the loops that matter are those between the modules that do the work.
    graph = {m: (set() if m in FACES else deps) for m, deps in import_graph().items()}
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join("  " + " <-> ".join(c) for c in found)


def test_the_checks_can_fail() -> None:
    """A graph with an upward import and a cycle is caught (the checks above are not vacuous)."""
    graph = {"distinfer.layout": {"distinfer.tensor"}, "distinfer.tensor": {"distinfer.layout"},
             "distinfer.reshard.sources": {"distinfer.parallel._executor"}, "distinfer.parallel._executor": set()}
    assert ("distinfer.layout", "distinfer.tensor") in violations(graph)
    assert ("distinfer.reshard.sources", "distinfer.parallel._executor") in violations(graph)
    assert cycles(graph) == [["distinfer.layout", "distinfer.tensor"]]
