"""ruff is configured in pyproject.toml; the code base stays clean of its findings."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is in the test extra")
def test_ruff_is_clean():
    r = subprocess.run(
        ["ruff", "check", "condlab", "tests", "scripts"], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


def _imports() -> dict[str, set[str]]:
    """Which condlab modules each condlab module imports (at the top or inside a function)."""
    import ast

    files = {".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): f
             for f in (ROOT / "condlab").rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for m, f in files.items():
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            graph[m] |= {n for n in names if n in files and n != m}
    return graph


def test_no_import_circles():
    """Data flows one way: no condlab module reaches itself through its imports."""
    graph = _imports()

    def reach(start: str) -> set[str]:
        seen, todo = set(), list(graph[start])
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo.extend(graph[m])
        return seen

    circles = sorted(m for m in graph if m in reach(m))
    assert not circles, f"modules in an import circle: {circles}"


def test_no_issue_numbers_in_code():
    """Code and docstrings name the concept, not the ticket that asked for it."""
    import re

    pattern = re.compile(r"\b(issue|ticket|bug)\s*#?\d+|\B#\d{1,4}\b", re.IGNORECASE)
    hits = [f"{f.relative_to(ROOT)}:{i}" for f in sorted((ROOT / "condlab").rglob("*.py"))
            for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1)
            if pattern.search(line)]
    assert not hits, hits
