"""No private attribute of pytest or pytest-benchmark anywhere in the project's code.

A fresh machine gets the newest releases (issue 18: pytest-benchmark 5.3 broke ``Argument._attrs``, and
with it every run); only the documented hooks, fixtures and options are stable. This reads the source,
so it fails the day a private name appears again, whichever release is installed here.
"""

from __future__ import annotations

import ast
import inspect
import sys
from pathlib import Path

import pytest
import pytest_benchmark.fixture
import pytest_benchmark.session
import pytest_benchmark.stats

REPO = Path(__file__).resolve().parent.parent
SCANNED = ("bench", "reports", "sizing", "reference_model", "gpusizer_common", "scripts", "peers", "tests")
# Objects a plugin or test meets: their private names are what reaching inside looks like.
PUBLIC_TYPES = (pytest.Config, pytest.Parser, pytest.OptionGroup, pytest.Item, pytest.Session, pytest.Function,
                pytest.FixtureRequest, pytest.PytestPluginManager, pytest.TestReport, pytest.CallInfo,
                pytest.Metafunc, pytest.Pytester, pytest.RunResult, pytest.MonkeyPatch,
                pytest_benchmark.fixture.BenchmarkFixture, pytest_benchmark.session.BenchmarkSession,
                pytest_benchmark.stats.Metadata, pytest_benchmark.stats.Stats)
# Set by pytest-benchmark on pytest's Config, so on no type above.
EXTRA_PRIVATE = {"_benchmarksession"}


def classes_to_scan() -> set[type]:
    """The public types, and every class of the modules defining them (pytest's ``Argument``, whose
    ``_attrs`` broke, is reached through ``Parser`` and lives beside it)."""
    found = set()
    for kind in PUBLIC_TYPES:
        found |= set(inspect.getmro(kind))
        found |= {obj for obj in vars(sys.modules[kind.__module__]).values() if inspect.isclass(obj)}
    return found


def private_names() -> set[str]:
    names = set(EXTRA_PRIVATE)
    for kind in classes_to_scan():
        for klass in inspect.getmro(kind):
            if klass is object:
                continue
            names |= {name for name in vars(klass) if name.startswith("_") and not name.startswith("__")}
            # Instance attributes set in __init__ (self._x = ...).
            try:
                tree = ast.parse(inspect.getsource(klass).lstrip())  # lstrip: a nested class's indent
            except (OSError, TypeError, SyntaxError):
                continue
            names |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                      and node.attr.startswith("_") and not node.attr.startswith("__")}
    return names


def private_uses(source: str, private: set[str]) -> list[tuple[int, str]]:
    """``x._name`` for a private name of those packages, except on ``self``/``cls`` (the project's own
    classes keep private state too), and any import of ``_pytest`` or a private pytest_benchmark module."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in private:
            on_own_object = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            if not on_own_object:
                found.append((node.lineno, f".{node.attr}"))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for module in modules:
                if module.split(".")[0] == "_pytest" or (module.startswith("pytest_benchmark")
                                                         and any(p.startswith("_") for p in module.split("."))):
                    found.append((node.lineno, f"import {module}"))
        elif (isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("getattr", "hasattr", "setattr")
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and node.args[1].value in private):
            found.append((node.lineno, f"{node.func.id}(..., {node.args[1].value!r})"))
    return found


def test_the_check_sees_what_broke_before():
    private = private_names()
    # Names every supported release has (pytest 9.2's Argument no longer keeps ``_attrs``, which broke).
    assert {"_parser", "_benchmarksession", "_add_stats"} <= private
    broken = ("def f(config, benchmark):\n"
              "    benchmark._add_stats(None)\n"
              "    return config._parser, getattr(config, '_benchmarksession', None)\n"
              "from _pytest.config import Config\n")
    assert sorted(what for _, what in private_uses(broken, private)) == sorted([
        "._add_stats", "._parser", "getattr(..., '_benchmarksession')", "import _pytest.config"])
    assert private_uses("class A:\n    def f(self):\n        return self._parser\n", private) == []


def test_no_private_pytest_or_pytest_benchmark_attribute_in_the_project():
    private = private_names()
    this_file = Path(__file__).resolve()
    offenders = []
    for folder in SCANNED:
        for path in sorted((REPO / folder).rglob("*.py")):
            if path.resolve() == this_file:
                continue
            for line, what in private_uses(path.read_text(encoding="utf-8"), private):
                offenders.append(f"{path.relative_to(REPO)}:{line}: {what}")
    assert offenders == [], "\n".join(offenders)
