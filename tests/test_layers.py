"""The package's layers hold by construction: the core never imports a study or notebook support,
notebook support never imports a study, settings import nothing above them, and no module imports
itself through a circle. Every import counts, also those inside functions or under TYPE_CHECKING."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "helpers"
#: Layer of each subpackage; a module may import only from layers at or below its own.
LAYERS = {"": 0, "notebook": 1, "studies": 2}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The package's modules that `path` imports (`from helpers import x` counts as `helpers.x` when
    that is a module, else as `helpers`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("helpers")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("helpers") and not node.level:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return found & known


def graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(p) for p in paths}
    return {module_name(p): imported_modules(p, known) - {module_name(p)} for p in paths}


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1]] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else 0


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules (first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_folders_hold_the_layers() -> None:
    modules = graph()
    assert {"helpers.train", "helpers.settings", "helpers.notebook.session", "helpers.studies.transfer"} <= set(modules)
    assert layer("helpers.train") == 0 and layer("helpers.notebook.plots") == 1 and layer("helpers.studies.bench") == 2
    assert layer("helpers.notebook") == 1 and layer("helpers") == 0


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = sorted(f"{m} -> {d}" for m, deps in graph().items() for d in deps if layer(d) > layer(m))
    assert upward == []


def test_settings_import_nothing_of_the_package_but_errors() -> None:
    assert graph()["helpers.settings"] <= {"helpers.errors"}


def test_no_import_circles() -> None:
    assert find_cycle(graph()) is None


@pytest.mark.parametrize("edges, cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
    ({"a": {"b"}, "b": {"c"}, "c": {"b"}}, ["b", "c", "b"]),
])
def test_find_cycle_on_small_graphs(edges: dict[str, set[str]], cycle: list[str] | None) -> None:
    assert find_cycle(edges) == cycle


def test_imports_inside_functions_count(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from helpers.studies import bench\n    import helpers.train\n")
    known = {"helpers.studies", "helpers.studies.bench", "helpers.train"}
    assert imported_modules(source, known) == {"helpers.studies.bench", "helpers.train"}
