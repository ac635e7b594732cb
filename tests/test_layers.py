"""The layer contract and the lint rules, run by the README's test command (and so by .ci/run).

``lint-imports`` checks pyproject's [tool.importlinter] contracts (layers, the export leaf, no imports
of the top-level package, no cycles between siblings); ``ruff check src tests`` checks [tool.ruff].
Both tools come with the test extra; where they are not installed these tests skip.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    """The tool installed beside this Python (the venv's bin/), else on PATH; skip when it is neither."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    return found


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_import_contracts_hold():
    # When import-linter checks every import in src/e5kit, lazy ones inside functions included
    result = _run(_tool("lint-imports"), "--no-cache", "--no-logo")
    # Then every contract in pyproject.toml is kept
    assert result.returncode == 0, f"lint-imports failed:\n{result.stdout}\n{result.stderr}"


def test_import_graph_has_no_cycles():
    # Given the whole module-level import graph of e5kit (grimp, import-linter's graph builder, reads
    # imports inside functions and under TYPE_CHECKING too); acyclic_siblings misses a cycle through a
    # package's own __init__ (the top-level lazy API <-> a stage), so every module is checked here
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("e5kit", cache_dir=None)
    # When its strongly connected groups are found
    cycles = [group for group in _strongly_connected(graph) if len(group) > 1]
    # Then there are none: no module reaches itself through its imports
    report = []
    for group in cycles:
        report.append(" <-> ".join(sorted(group)))
        for importer in sorted(group):
            for imported in sorted(graph.find_modules_directly_imported_by(importer) & group):
                lines = sorted(d["line_number"] for d in graph.get_import_details(importer=importer, imported=imported))
                report.append(f"    {importer} -> {imported} (line {', '.join(map(str, lines))})")
    assert not cycles, "import cycles:\n" + "\n".join(report)


def test_lint_rules_hold():
    # When ruff checks the sources and the tests
    result = _run(_tool("ruff"), "check", "--no-cache", "--output-format", "concise", "src", "tests")
    # Then it finds nothing (`ruff check --fix src tests` repairs most findings)
    assert result.returncode == 0, f"ruff check failed:\n{result.stdout}\n{result.stderr}"


def _strongly_connected(graph) -> list[set[str]]:
    """Tarjan's algorithm, iterative (the graph is small, but recursion depth should not depend on it)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[set[str]] = []
    for start in sorted(graph.modules):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                groups.append(group)
    return groups
