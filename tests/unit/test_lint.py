"""ruff and mypy (strict) on our packages, and the import contract of the layout."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ruff() -> None:
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "testbed", "actors", "workloads", "tests"],
                       cwd=ROOT, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_strict() -> None:
    r = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_core_does_not_import_actors_or_workloads() -> None:
    """testbed (except testbed.cli) finds actors and workloads only through its registries."""
    bad = []
    for f in (ROOT / "testbed").rglob("*.py"):
        if "cli" in f.relative_to(ROOT / "testbed").parts:
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{f.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in ("actors", "workloads")]
    assert not bad, bad
