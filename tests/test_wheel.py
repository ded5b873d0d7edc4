"""``pip install availability`` then ``availability migrate``: the revisions ship in the wheel.

The wheel is built from this checkout, installed (without dependencies) in a
fresh virtual environment that borrows the test interpreter's installed
dependencies, and ``availability migrate`` runs from a directory outside the
checkout, with no ``AVAILABILITY_MIGRATIONS``, against an empty database.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from availability.db import migrate

REPO_ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, **kw)
    assert result.returncode == 0, f"{args[:4]} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.slow
def test_availability_migrate_from_an_installed_wheel(empty_database_url: str, tmp_path: Path) -> None:
    # built from a copy: setuptools leaves build/ behind, and would ship stale files from it
    source = tmp_path / "source"
    shutil.copytree(REPO_ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis", ".demo"))
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(source)])
    (wheel,) = wheels.glob("availability-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "availability/migrations/env.py" in names
    assert "availability/migrations/script.py.mako" in names
    assert {n for n in names if n.startswith("availability/migrations/versions/")} == {
        f"availability/migrations/versions/{p.name}" for p in (REPO_ROOT / "migrations" / "versions").glob("*.py")
    }

    env_dir = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)])
    python = env_dir / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    # the dependencies: the test interpreter's (a path in a .pth file; its own .pth files,
    # such as this checkout's editable install, are not processed from there)
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)])

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", migrate.MIGRATIONS_ENV, "DATABASE_URL")}
    env["DATABASE_URL"] = empty_database_url
    where = _run([str(python), "-c", "from availability.db import migrate; print(migrate.migrations_dir())"],
                 cwd=elsewhere, env=env).stdout.strip()
    assert Path(where) == site / "availability" / "migrations"

    out = _run([str(env_dir / "bin" / "availability"), "migrate"], cwd=elsewhere, env=env)
    assert "to head" in out.stdout
    assert migrate.current(empty_database_url) == migrate.head()
    migrate.check(empty_database_url)  # the schema the wheel created is the models' schema
