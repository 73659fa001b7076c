"""The shape of the code (issue "one definition per kind"): modules small enough to read, no import
cycle between them, and the seams kept: core never imports tui, the read side (core/read, cache) never
imports torch at module level. Read from the source's module-level imports (ast), not by importing."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"core/api": "neuron_tui", "core": "neuron_tui.core", "cache": "neuron_tui.cache", "tui": "neuron_tui.tui"}
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    out = {}
    for folder, package in sorted(PACKAGES.items(), key=lambda item: -len(item[0])):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out.setdefault(".".join([package, *parts]), path)
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The modules of the package that `name` imports at module level (function-level imports run later
    and cannot form a cycle at import time)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        for stmt in node.body if isinstance(node, (ast.If, ast.Try)) else [node]:
            if isinstance(stmt, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - stmt.level + 1] if stmt.level else []
                module = ".".join(base + ([stmt.module] if stmt.module else []))
                for alias in stmt.names:
                    found.add(f"{module}.{alias.name}" if f"{module}.{alias.name}" in MODULES else module)
            elif isinstance(stmt, ast.Import):
                found.update(alias.name for alias in stmt.names)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_the_layout_is_read():
    assert len(MODULES) > 80 and "neuron_tui.core.read.kinds" in MODULES and "neuron_tui.tui.app" in MODULES
    assert "neuron_tui.core.read.kinds" in GRAPH["neuron_tui.core.read.analysis"]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_longer_than_500_lines(name):
    assert len(MODULES[name].read_text(encoding="utf-8").splitlines()) <= MAX_LINES


def test_no_import_cycle():
    internal = {name: {d for d in deps if d in MODULES and d != name} for name, deps in GRAPH.items()}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for dep in sorted(internal[name]):
            assert state.get(dep) != 1, " -> ".join(path[path.index(dep):] + [dep])
            if dep not in state:
                visit(dep)
        path.pop()
        state[name] = 2

    for name in sorted(internal):
        if name not in state:
            visit(name)


def test_core_never_imports_tui_and_the_read_side_never_imports_torch():
    for name, deps in GRAPH.items():
        if name.startswith("neuron_tui.core") or name.startswith("neuron_tui.cache"):
            assert not any(d.startswith("neuron_tui.tui") for d in deps), name
        if name.startswith(("neuron_tui.core.read", "neuron_tui.cache")):
            assert not any(d.split(".")[0] == "torch" for d in deps), name
