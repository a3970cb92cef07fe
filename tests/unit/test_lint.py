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


def test_installs_are_pinned_and_this_environment_follows_the_pins() -> None:
    """constraints.txt pins every package the suite is known green on; README and .ci/run install with it. A venv
    that drifted from it (an install without -c constraints.txt) is named here, package by package."""
    from importlib.metadata import PackageNotFoundError, version

    pins = dict(line.split("==", 1) for line in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    core = ["torch", "torchvision", "ray", "numpy", "pandas", "pyarrow", "pydantic", "pyroute2", "psutil", "web3",
            "py-evm", "vyper", "eth-tester", "typer", "rich", "matplotlib", "pytest", "mypy", "ruff"]
    assert not [c for c in core if c not in pins], "core packages without a pin"
    drifted = []
    for name, want in pins.items():
        try:
            have = version(name)
        except PackageNotFoundError:
            continue
        if have.split("+")[0] != want.split("+")[0]:
            drifted.append(f"{name} {have} (pinned {want})")
    assert not drifted, f"this environment drifted from constraints.txt: {drifted}"
    for f in ("README.md", ".ci/run"):
        assert "-c constraints.txt" in (ROOT / f).read_text(), f
