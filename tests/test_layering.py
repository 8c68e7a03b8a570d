"""The import rules of docs/design.md, read from the source: no cycles, HTTP without boto, sinks without aiohttp.web.

Only imports that run when a module is loaded count: those at module level, outside
``if TYPE_CHECKING:``. A function-level import is how a module reaches an optional extra
(PyAV) lazily, and type-only imports never run.
"""

from __future__ import annotations

import ast
from collections.abc import Collection
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "streamproxy"
# The HTTP side: what handles requests and builds the application.
HTTP_MODULES = ("app", "handlers", "ingest", "formdata", "auth", "connections", "lifecycle", "manifest", "openapi")
BOTO = ("boto3", "botocore", "aiobotocore")


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _runtime_imports(name: str, path: Path, modules: Collection[str] = ()) -> set[str]:
    """Absolute names of what ``name`` imports when it is loaded (relative imports resolved).

    ``from . import transport`` depends on the submodule ``transport`` when it is one of
    ``modules``, not on the package whose ``__init__`` is still running.
    """
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    imported: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = {f"{target}.{alias.name}" for alias in node.names}
            submodules = names & set(modules)
            imported.update(submodules if submodules == names else {target, *names})
    return imported


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {
        name: {dep for dep in _runtime_imports(name, path, modules) if dep in modules and dep != name}
        for name, path in modules.items()
    }


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """Return one import cycle, or None (depth-first search with colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (found := visit(dep)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


def test_no_import_cycle_inside_streamproxy() -> None:
    graph = _graph()
    assert len(graph) > 40  # the walk found the package
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("module", HTTP_MODULES)
def test_http_never_imports_boto(module: str) -> None:
    path = _modules()[f"streamproxy.{module}"]
    imported = _runtime_imports(f"streamproxy.{module}", path)
    assert not {name for name in imported if name.split(".")[0] in BOTO}


def test_sinks_never_import_aiohttp_web() -> None:
    offenders = {
        name: sorted(dep for dep in _runtime_imports(name, path) if dep.startswith(("aiohttp.web", "aiohttp.web_")))
        for name, path in _modules().items()
        if name.startswith("streamproxy.sinks")
    }
    assert len(offenders) >= 10
    assert {name: deps for name, deps in offenders.items() if deps} == {}
