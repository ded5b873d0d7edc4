"""The scripts in scripts/ are not run by the suite (benchmarks take minutes), so a
restructuring can break them unnoticed: bench_cycle.py once imported a module that
had moved. Every ``availability`` import they make, at top level or inside a
function, must resolve, and every script must at least parse its arguments."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parent.parent / "scripts").glob("*.py"))


def _availability_imports(path: Path) -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "availability":
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names if alias.name.split(".")[0] == "availability"]
    return found


def test_there_are_scripts_to_check() -> None:
    assert len(SCRIPTS) >= 5, SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_availability_import_of_a_script_resolves(script: Path) -> None:
    imports = _availability_imports(script)
    assert imports, f"{script.name} imports nothing from availability?"
    for module_name, name in imports:
        module = importlib.import_module(module_name)
        if name is not None and name != "*":
            assert hasattr(module, name) or importlib.util.find_spec(f"{module_name}.{name}"), (
                f"{script.name}: from {module_name} import {name}: no such name"
            )


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_script_answers_help(script: Path) -> None:
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "usage" in done.stdout.lower(), done.stdout
