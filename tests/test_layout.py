"""The package's shape: no import cycle, and only the entry points import the audit orchestrator.

Imports are read with ``ast``, so nothing is executed. Every import counts, at module level or inside a
function (a lazy import is still a dependency), except those under ``if TYPE_CHECKING:``, which never
run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import unlearn_audit

ROOT = Path(unlearn_audit.__file__).parent


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                lines.update(range(inner.lineno, (inner.end_lineno or inner.lineno) + 1))
    return lines


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of this package it imports (``from pkg import sub`` names the submodule)."""
    paths = {_module(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in paths}
    for name, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_checking_lines(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base for a in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in paths and t != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_finder_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_reads_relative_imports():
    graph = import_graph()
    assert "unlearn_audit.pipeline.types" in graph["unlearn_audit.pipeline.workload"]
    assert "unlearn_audit.probes.registry" in graph["unlearn_audit.policy"]


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_only_the_entry_points_import_the_audit_orchestrator():
    importers = {m for m, deps in import_graph().items() if "unlearn_audit.audit" in deps}
    assert importers <= {"unlearn_audit.cli.audit_cmd", "unlearn_audit.cli.model_cmds", "unlearn_audit.benchmark.scenario"}


@pytest.mark.parametrize("leaf", ["unlearn_audit.pipeline.types", "unlearn_audit.stats", "unlearn_audit.probes.base"])
def test_leaf_modules_import_no_pipeline_stage(leaf):
    stages = {m for m in import_graph() if m.startswith("unlearn_audit.pipeline.") and m != "unlearn_audit.pipeline.types"}
    assert not import_graph()[leaf] & (stages | {"unlearn_audit.audit"})
