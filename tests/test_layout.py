"""The package's shape: its folders are the pipeline's stages, every import points down the
stages (a lower layer never imports a higher one), and no import cycle exists among
autopeft's modules, found from the modules' own import statements, those inside functions
too (a deferred import is still a dependency; only ``if TYPE_CHECKING:`` blocks are left
out). The checker is shown to fail on a planted cycle and a planted upward import."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import autopeft

#: lowest first; a module may import its own layer or any below it. Within a layer the
#: modules' imports must still be free of cycles.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("autopeft.errors", "autopeft._yaml", "autopeft.plugins", "autopeft.costs", "autopeft.pareto",
                    "autopeft.models", "autopeft.config", "autopeft.objectives", "autopeft.devices")),
    ("space", ("autopeft.space",)),
    ("tasks", ("autopeft.tasks",)),
    ("training", ("autopeft.training",)),
    ("adapters", ("autopeft.adapters",)),
    ("strategies", ("autopeft.strategies",)),  # wrap adapters: they import adapters, never the reverse
    ("optimizers", ("autopeft.optimizers", "autopeft.schedulers")),
    ("trial", ("autopeft.trial",)),
    ("results", ("autopeft.results",)),
    ("driver", ("autopeft.driver",)),
    ("entry points", ("autopeft.cli", "autopeft")),
]


def layer_of(module: str) -> int:
    """The index in LAYERS of the most specific prefix that names ``module``."""
    best = (-1, -1)
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best[1]:
                best = (index, len(prefix))
    if best[0] < 0:
        raise AssertionError(f"module {module} is in no layer: add it to LAYERS")
    return best[0]


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Every module of ``package`` (its folder ``root``), by dotted name; a package is its __init__."""
    out = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join((package, *parts))
        out[name.removesuffix(".__init__")] = path
    return out


def _type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def imports(path: Path, package: str, known: set[str]) -> set[str]:
    """The modules of ``package`` that the file at ``path`` imports, anywhere in it but under
    ``if TYPE_CHECKING:``; ``from a.b import c`` is the module ``a.b.c`` where there is one."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking(node):
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == package)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == package:
            for alias in node.names:
                found.add(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the package's modules it imports. A module's import of a package above it (a
    submodule reading its own package's public names) is left out: Python runs that package's
    __init__ first, so it is no cycle."""
    files = module_files(root, package)
    graph = {}
    for name, path in files.items():
        targets = {t for t in imports(path, package, set(files)) if t in files and t != name}
        graph[name] = {t for t in targets if not name.startswith(t + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def upward(graph: dict[str, set[str]]) -> list[str]:
    """Imports from a lower layer into a higher one."""
    return [f"{src} ({LAYERS[layer_of(src)][0]}) imports {dst} ({LAYERS[layer_of(dst)][0]})"
            for src, targets in sorted(graph.items()) for dst in sorted(targets) if layer_of(dst) > layer_of(src)]


ROOT = Path(autopeft.__file__).parent


def test_every_module_imports() -> None:
    for info in pkgutil.walk_packages(autopeft.__path__, "autopeft."):
        if info.name.endswith("__main__"):
            continue
        importlib.import_module(info.name)


def test_no_import_cycle_among_autopeft_modules() -> None:
    assert cycles(import_graph(ROOT, "autopeft")) == []


def test_every_import_points_down_the_stages() -> None:
    assert upward(import_graph(ROOT, "autopeft")) == []


def test_the_checks_fail_on_a_planted_cycle_and_a_planted_upward_import(tmp_path) -> None:
    package = tmp_path / "autopeft"
    (package / "trial").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "errors.py").write_text("from autopeft.trial import run\n")  # foundation -> trial: upward
    (package / "trial" / "__init__.py").write_text("")
    (package / "trial" / "run.py").write_text("import autopeft.trial.loading\n")
    (package / "trial" / "loading.py").write_text("def f():\n    from autopeft.trial.run import g\n")
    graph = import_graph(package, "autopeft")
    assert cycles(graph) == [["autopeft.trial.loading", "autopeft.trial.run"]]
    assert upward(graph) == ["autopeft.errors (foundation) imports autopeft.trial.run (trial)"]
    (package / "trial" / "loading.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                                  "    from autopeft.trial.run import g\n")
    assert cycles(import_graph(package, "autopeft")) == []


@pytest.mark.parametrize("folder", ["driver", "trial", "results", "training"])
def test_the_stage_folders_exist(folder) -> None:
    assert (ROOT / folder / "__init__.py").is_file()
