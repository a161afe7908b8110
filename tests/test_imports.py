"""No import cycle between the project's modules, read statically with ``ast`` (nothing is imported).

Imports inside functions count too: a late import hides a cycle from Python's loader, not from a reader.
Imports under ``if TYPE_CHECKING:`` do not: they are annotations and never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = tuple(sorted(p.name for p in REPO.iterdir() if (p / "__init__.py").is_file()))


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))}


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports anywhere in its file: ``from a.b import c`` is ``a.b.c``
    when that is a module, else ``a.b``; a package's ``__init__`` counts as the package."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node.test)
                   for statement in node.body for inner in ast.walk(statement)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            # The longest known module the import names (``a.b.c`` -> ``a.b`` if c is a function).
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    return {name: imported_modules(name, path, known) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None. A package's ``__init__`` importing its own modules is an
    edge like any other: a module that imports its package back closes a cycle."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" once fully explored
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_walk_sees_the_packages_and_late_imports():
    graph = import_graph()
    assert {"gpusizer_common", "reference_model", "bench", "reports"} <= set(PACKAGES)
    # bench.run.controller imports these at the top and inside functions; both kinds must be found.
    assert "bench.config.cases" in graph["bench.run.controller"]
    assert "reference_model" in graph["bench.run.worker"]


def test_find_cycle_reports_a_cycle_through_a_late_import():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"p": {"p.x"}, "p.x": {"p"}}) == ["p", "p.x", "p"]  # a module importing its package


def test_reports_never_import_bench_and_the_common_package_imports_neither():
    # DESIGN.md's one direction: only bench/ writes result files, only reports/ reads them; what both
    # need lives in gpusizer_common/, which must not pull either side back in.
    graph = import_graph()
    package = {name: name.partition(".")[0] for name in graph}
    reports_to_bench = sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                              if package[a] == "reports" and package[b] == "bench")
    common_to_project = sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                               if package[a] == "gpusizer_common" and package[b] != "gpusizer_common")
    assert reports_to_bench == [] and common_to_project == []


def test_no_import_cycle_between_project_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
