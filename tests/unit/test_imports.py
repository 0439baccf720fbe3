"""Layering: the library (`brain`) never imports the engine layer (`jobs`), and no job module imports itself back."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside functions (absolute names)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def test_brain_does_not_import_jobs():
    offenders = {module_name(path): sorted(m for m in imported_modules(path) if m == "jobs" or m.startswith("jobs."))
                 for path in sorted((ROOT / "brain").rglob("*.py"))}
    assert {name: found for name, found in offenders.items() if found} == {}


def test_brain_does_not_import_the_engines():
    engines = ("ray", "pyspark")
    offenders = {module_name(path): sorted(m for m in imported_modules(path) if m.split(".")[0] in engines)
                 for path in sorted((ROOT / "brain").rglob("*.py"))}
    assert {name: found for name, found in offenders.items() if found} == {}


def test_job_modules_import_each_other_without_cycles():
    paths = {module_name(path): path for path in (ROOT / "jobs").glob("*.py")}
    graph = {name: {m for m in imported_modules(path) if m in paths and m != name} for name, path in paths.items()}

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return trail + [start]
                if nxt not in trail:
                    stack.append((nxt, trail + [nxt]))
        return None

    cycles = [cycle for name in sorted(graph) if (cycle := cycle_from(name))]
    assert cycles == []
