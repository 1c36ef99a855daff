"""The package's import graph: no cycles, and every import goes down the layers.

Every module of src/mfn_deploy is read with ``ast`` (nothing is imported), and every
import of a mfn_deploy module counts, at module level or inside a function, so a
cycle cannot hide behind a deferred import. Layers, top to bottom (a module may
import its own layer and the ones below):

    cli -> device, train, bench -> face, runtime, android_assets, pretrained -> export
        -> images, weights, stats -> models, evaluate, native, pinned
        -> metrics, contract, files, errors (and the package's __init__: __version__)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "mfn_deploy"
ROOT = Path(__file__).resolve().parent.parent / "src" / PACKAGE

LAYERS = (
    ("cli", "__main__"),
    ("device", "train", "bench"),
    ("face", "runtime", "android_assets", "pretrained"),
    ("export",),
    ("images", "weights", "stats"),
    ("models", "evaluate", "native", "pinned"),
    ("metrics", "contract", "files", "errors", ""),
)


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The module ``name`` refers to: itself, or its nearest enclosing package."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    """Every mfn_deploy module ``module`` imports, wherever the import statement is."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # "from pkg import sub" imports the submodule when there is one.
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            ]
        else:
            continue
        for name in names:
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                target = _resolve(name)
                if target is not None and target != module:
                    found.add(target)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(sorted(c) for c in components)


def _path_through(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A concrete cycle inside a strongly connected component, for the message."""
    members, start = set(component), component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & members):
            if w == start:
                return [*paths[v], start]
            if w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    return component


def _layer(module: str) -> int:
    top = module.removeprefix(PACKAGE).removeprefix(".").split(".")[0]
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module}: not in any layer of LAYERS; add it where it belongs")


def test_the_walker_sees_every_kind_of_import():
    """A guard on the guard: deferred and from-package imports are edges too."""
    assert "mfn_deploy.export.stages" in GRAPH["mfn_deploy.export.plan"]
    assert "mfn_deploy.face.samples" in GRAPH["mfn_deploy.cli"]  # inside a command
    assert "mfn_deploy.models" in GRAPH["mfn_deploy.export.fold"]
    assert "mfn_deploy" in GRAPH["mfn_deploy.export.manifest"]  # from mfn_deploy import __version__
    assert len(MODULES) > 50


def test_the_import_graph_has_no_cycles():
    cycles = _cycles(GRAPH)
    assert not cycles, "import cycles:\n" + "\n".join(
        f"{' -> '.join(_path_through(GRAPH, c))} (the cycle runs through {', '.join(c)})"
        for c in cycles
    )


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_the_layers(module):
    here = _layer(module)
    upward = sorted(t for t in GRAPH[module] if _layer(t) < here)
    assert not upward, f"{module} (layer {here}) imports higher layers: {upward}"


def test_a_cycle_is_reported_with_its_path():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _path_through(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    assert _cycles({"a": {"b"}, "b": set()}) == []
