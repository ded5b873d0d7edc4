"""Embedded servers (availability.harness), the conftest harness, and URL redaction (availability.logs)."""

from __future__ import annotations

import io
import json
import logging
import os
import random
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg
import pytest
import redis
import redis.asyncio as aioredis
import structlog
from conftest import _delete_prefixed_keys
from redis.backoff import NoBackoff
from redis.retry import Retry

from availability.harness import cluster as cluster_module
from availability.errors import ServerStartError
from availability.logs import configure_logging, redact_processor, redact_text, redact_url
from availability.harness import (
    PostgresServer,
    RedisClusterServer,
    RedisServer,
    create_database,
    drop_database,
    find_postgres_bin,
    find_redis_server,
    free_port,
    servers,
    url_with_database,
)

# ---------------------------------------------------------------- helpers


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains ``text`` (e.g. a data directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and _alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _redis(url: str, **options: object) -> redis.Redis:
    """A sync client that does not retry (a retry only waits on a server that is down)."""
    return redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **options)


def _ping(url: str) -> bool:
    with _redis(url) as client:
        return bool(client.ping())


def _pg_fails(url: str) -> bool:
    try:
        psycopg.connect(url, connect_timeout=2).close()
    except psycopg.OperationalError:
        return True
    return False


# ---------------------------------------------------------------- binaries and ports


def test_binaries_are_found() -> None:
    assert os.access(find_redis_server(), os.X_OK)
    bin_dir = find_postgres_bin()
    assert (bin_dir / "initdb").exists() and (bin_dir / "postgres").exists()


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 0 < port < 65536
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_a_failed_start_raises_a_clear_error_and_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(ServerStartError, match="could not run"):
        RedisServer(executable=str(tmp_path / "no-such-redis-server"), workdir=tmp_path / "redis").start()
    assert list((tmp_path / "redis").iterdir()) == []
    with pytest.raises(ServerStartError):
        PostgresServer(bin_dir=tmp_path / "no-such-bin", workdir=tmp_path / "pg").start()
    assert list((tmp_path / "pg").iterdir()) == []


# ---------------------------------------------------------------- Redis


def test_redis_server_answers_restarts_empty_and_stops() -> None:
    with RedisServer() as server:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        pid, port, data_dir = server.pid, server.port, server.dir
        assert pid is not None and data_dir is not None and data_dir.is_dir()
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        assert client.get("k") == b"v"

        server.restart(empty=True)
        assert server.port == port and server.pid != pid
        assert not _alive(pid)
        assert client.get("k") is None  # the client reconnects to an empty server
        assert client.dbsize() == 0
        client.close()
        last_pid = server.pid
    assert last_pid is not None and not _alive(last_pid)
    assert not server.running
    assert not data_dir.exists()


def test_redis_restart_can_keep_the_data() -> None:
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        client.set("k", "kept")
        server.restart(empty=False)
        assert client.get("k") == b"kept"
        client.close()


def test_redis_stop_then_start_is_an_outage_on_the_same_port() -> None:
    with RedisServer() as server:
        port = server.port
        server.stop()
        assert not server.running
        with pytest.raises(redis.ConnectionError):
            _ping(server.url)
        server.start()
        assert server.port == port
        assert _ping(server.url)


def test_redis_extra_args_enable_persistence_across_a_crash() -> None:
    with RedisServer(extra_args=("--appendonly", "yes", "--appendfsync", "always")) as server:
        client = redis.Redis.from_url(server.url)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        client.set("k", "durable")
        server.kill()
        server.start()
        assert client.get("k") == b"durable"
        client.close()


def test_redis_with_a_password() -> None:
    with RedisServer(password="s3cr3t") as server:
        assert server.url == f"redis://:s3cr3t@127.0.0.1:{server.port}/0"
        assert _ping(server.url)
        with pytest.raises(redis.AuthenticationError):
            _ping(f"redis://127.0.0.1:{server.port}/0")
        assert "s3cr3t" not in redact_url(server.url)


def test_redis_server_on_a_taken_port_fails_with_the_log() -> None:
    with RedisServer() as first, pytest.raises(ServerStartError, match="exited"):
        RedisServer(port=first.port).start()


# ---------------------------------------------------------------- PostgreSQL


def test_postgres_server_answers_stops_and_starts_with_its_data() -> None:
    with PostgresServer() as server:
        assert server.url == f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
        pid, port, data_dir = server.pid, server.port, server.data_dir
        assert pid is not None and data_dir is not None
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (x int)")
            conn.execute("INSERT INTO t VALUES (42)")

        server.stop()
        assert not _alive(pid)
        assert _processes_mentioning(str(data_dir)) == []
        assert _pg_fails(server.url)

        server.start()
        assert server.port == port
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT x FROM t").fetchone() == (42,)
        last_pid = server.pid
    assert last_pid is not None and not _alive(last_pid)
    assert _processes_mentioning(str(data_dir)) == []
    assert not data_dir.exists()


def test_postgres_restart_ends_sessions_and_keeps_the_port() -> None:
    with PostgresServer() as server:
        conn = psycopg.connect(server.url, autocommit=True)
        port = server.port
        server.restart()
        assert server.port == port
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
        conn.close()
        with psycopg.connect(server.url) as fresh:
            assert fresh.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.skipif(os.geteuid() != 0, reason="only meaningful when the tests run as root")
def test_postgres_runs_as_an_unprivileged_user_when_we_are_root() -> None:
    with PostgresServer() as server:
        assert server.pid is not None and server.data_dir is not None
        status = Path(f"/proc/{server.pid}/status").read_text()
        real, effective = (
            int(v) for v in next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:3]
        )
        assert real != 0 and effective != 0
        assert server.data_dir.stat().st_uid == effective
        assert str(server.data_dir).startswith("/tmp/")


def test_create_and_drop_database_quote_names(pg_admin_url: str) -> None:
    name = f'av "odd" name {os.getpid()}'
    url = create_database(pg_admin_url, name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == (name,)
            conn.execute("CREATE TABLE marker (x int)")
        copy = f"{name} copy"
        copy_url = create_database(pg_admin_url, copy, template=name)
        try:
            with psycopg.connect(copy_url) as conn:
                assert conn.execute("SELECT count(*) FROM marker").fetchone() == (0,)
        finally:
            drop_database(pg_admin_url, copy)
        held = psycopg.connect(url)  # DROP ... WITH (FORCE) ends open sessions
    finally:
        drop_database(pg_admin_url, name)
    held.close()
    drop_database(pg_admin_url, name)  # IF EXISTS: a second drop is fine
    with pytest.raises(ValueError, match="63 bytes"):
        create_database(pg_admin_url, "x" * 64)


def test_url_with_database_keeps_everything_else() -> None:
    assert (
        url_with_database("postgresql://u:p@h:5433/postgres?sslmode=require", "my db")
        == "postgresql://u:p@h:5433/my%20db?sslmode=require"
    )


# ---------------------------------------------------------------- servers()


def test_servers_uses_urls_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://:pw@redis.example:6379/0")
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:pw@db.example/app")
    with servers() as running:
        assert running.redis_url == "redis://:pw@redis.example:6379/0"
        assert running.database_url == "postgresql://app:pw@db.example/app"
        assert running.started == []
        assert running.redis is None and running.postgres is None
        assert "pw" not in repr(running)
    with servers("redis://given:1/0", "postgresql://given/db") as running:  # arguments win
        assert (running.redis_url, running.database_url) == ("redis://given:1/0", "postgresql://given/db")


def test_servers_starts_what_is_missing_and_stops_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("DATABASE_URL", "")  # empty means unset
    with servers() as running:
        assert running.started == ["redis", "postgres"]
        assert running.redis is not None and running.postgres is not None
        assert running.redis_url is not None and _ping(running.redis_url)
        assert running.database_url is not None
        with psycopg.connect(running.database_url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        pids = [running.redis.pid, running.postgres.pid]
    assert not running.redis.running and not running.postgres.running
    assert not any(_alive(pid) for pid in pids if pid)


def test_servers_ignores_the_environment_when_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://elsewhere:6379/0")
    with servers(use_env=False, need_postgres=False) as running:
        assert running.started == ["redis"]
        assert running.redis_url != "redis://elsewhere:6379/0"
        assert running.database_url is None


def test_servers_stops_everything_on_keyboard_interrupt() -> None:
    with pytest.raises(KeyboardInterrupt), servers(use_env=False, need_postgres=False) as running:
        assert running.redis is not None
        pid = running.redis.pid
        raise KeyboardInterrupt
    assert pid is not None and not _alive(pid)


@pytest.mark.slow
def test_servers_are_stopped_when_the_python_process_is_killed(tmp_path: Path) -> None:
    """No atexit after SIGKILL: the watchdog stops the servers and removes their files."""
    script = textwrap.dedent(
        """
        import json, os, signal
        from availability.harness import PostgresServer, RedisServer
        r = RedisServer().start()
        p = PostgresServer().start()
        print(json.dumps([r.pid, p.pid, str(r.dir), str(p.data_dir)]), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == -9, result.stderr
    redis_pid, pg_pid, redis_dir, pg_dir = json.loads(result.stdout.strip().splitlines()[-1])
    assert _wait_until(lambda: not _alive(redis_pid) and not _alive(pg_pid), timeout=20)
    assert _wait_until(lambda: not Path(redis_dir).exists() and not Path(pg_dir).exists(), timeout=10)
    assert _processes_mentioning(pg_dir) == []


# ---------------------------------------------------------------- Redis Cluster


@pytest.mark.slow
async def test_redis_cluster_serves_keys_across_its_masters() -> None:
    with RedisClusterServer(masters=3) as cluster:
        assert len(cluster.startup_nodes) == 3
        assert cluster.url == cluster.urls[0]
        client = aioredis.RedisCluster.from_url(cluster.url)
        try:
            for i in range(30):
                await client.set(f"k{i}", i)
            assert await client.get("k17") == b"17"
            owners = {client.get_node_from_key(f"k{i}").port for i in range(30)}
            assert len(owners) > 1  # keys really are spread over several masters
            info = await client.cluster_info()
            assert info["cluster_state"] == "ok"
        finally:
            await client.aclose()
        nodes = list(cluster.nodes)
    assert not any(node.running for node in nodes)


def _assert_no_port_shared(ports: list[int], taken: set[int] = frozenset()) -> None:
    """No node's client or bus port (port + 10000) equals another node's, nor one of ``taken``."""
    every = [*ports, *(port + 10000 for port in ports)]
    assert len(set(every)) == len(every), f"ports {ports} collide with their bus ports"
    assert not set(every) & taken, f"ports {ports} reuse one of {sorted(taken)}"


def test_cluster_ports_never_collide_over_many_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    """A node's bus port (port + 10000) must never be another node's port.

    The kernel's picks are replaced by draws from a few ports 10000 apart, so
    that collisions, rare with real picks, come up in almost every draw; the
    bus ports are still checked for real.
    """
    rng = random.Random(13)
    base = 20000 + rng.randrange(5000)
    candidates = [base + layer * 10000 + i for layer in range(3) for i in range(8)]  # bus ports up to base+30007
    monkeypatch.setattr(cluster_module, "free_port", lambda: rng.choice(candidates))
    for draw in range(300):
        count = 3 + draw % 3
        _assert_no_port_shared(cluster_module._cluster_ports(count))
        running = rng.choice(candidates)
        taken = {running, running + 10000}
        _assert_no_port_shared(cluster_module._cluster_ports(2, taken), taken)


def _port_with_free_bus_port() -> int:
    while True:
        port = free_port()
        if port + 10000 <= 65535 and cluster_module._port_is_free(port + 10000):
            return port


@pytest.mark.slow
@pytest.mark.parametrize("lost", ["port", "bus port"])
def test_a_cluster_node_that_loses_its_port_to_another_process_starts_on_fresh_ports(
    monkeypatch: pytest.MonkeyPatch, lost: str
) -> None:
    """The port (or bus port) picked for the first node is taken before it binds: it is started again elsewhere."""
    port = _port_with_free_bus_port()
    real_free_port, real_port_is_free = cluster_module.free_port, cluster_module._port_is_free
    draws = iter([port])
    monkeypatch.setattr(cluster_module, "free_port", lambda: next(draws, None) or real_free_port())
    # the bus port was free when it was checked, and is taken by the time the node binds it
    monkeypatch.setattr(cluster_module, "_port_is_free", lambda p: p == port + 10000 or real_port_is_free(p))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port if lost == "port" else port + 10000))
        holder.listen()
        with RedisClusterServer(masters=3) as cluster:
            ports = [node.port for node in cluster.nodes]
            assert len(ports) == 3 and port not in ports
            _assert_no_port_shared(ports)
            client = redis.RedisCluster(host="127.0.0.1", port=ports[0], retry=Retry(NoBackoff(), 0))
            try:
                client.set("k", "v")
                assert client.get("k") == b"v"
            finally:
                client.close()


# ---------------------------------------------------------------- conftest harness


async def test_prefix_cleanup_deletes_only_that_prefix(redis_url: str, key_prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    other = f"{key_prefix}x"
    try:
        mine = [f"{{{key_prefix}:{shard}}}:ev:{shard}:betpawa:markets" for shard in range(5)] + [f"{key_prefix}:config"]
        theirs = [f"{{{other}:0}}:ev:1:betpawa:markets", f"{other}:config"]
        for key in mine + theirs:
            await client.set(key, 1)
        await _delete_prefixed_keys(redis_url, key_prefix)
        assert await client.exists(*mine) == 0
        assert await client.exists(*theirs) == len(theirs)
    finally:
        await _delete_prefixed_keys(redis_url, other)
        await client.aclose()


def test_database_url_is_a_fresh_migrated_database(database_url: str, pg_template: str) -> None:
    with psycopg.connect(database_url) as conn:
        name = conn.execute("SELECT current_database()").fetchone()
        assert name is not None and name[0] != pg_template
        assert conn.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)


def test_empty_database_url_has_no_tables(empty_database_url: str) -> None:
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)


def test_fresh_servers_are_dedicated(fresh_redis: RedisServer, fresh_postgres: PostgresServer, redis_url: str) -> None:
    assert fresh_redis.url != redis_url
    fresh_redis.restart(empty=True)
    with _redis(fresh_redis.url) as client:
        assert client.dbsize() == 0
    fresh_postgres.stop()
    assert _pg_fails(fresh_postgres.url)
    fresh_postgres.start()
    assert not _pg_fails(fresh_postgres.url)


# ---------------------------------------------------------------- redaction


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0"),
        ("rediss://app-user:hunter2@cache.internal:6380/1", "rediss://app-user:***@cache.internal:6380/1"),
        ("postgresql://svc:hunter2@db:5432/availability", "postgresql://svc:***@db:5432/availability"),
        ("postgresql+psycopg://svc:hunter2@db/availability", "postgresql+psycopg://svc:***@db/availability"),
        ("postgresql://svc:hun@ter2@db/availability", "postgresql://svc:***@db/availability"),
        ("postgresql://svc:hun%40ter2@db/availability", "postgresql://svc:***@db/availability"),
        ("redis://cache:6379/0?password=hunter2&db=1", "redis://cache:6379/0?password=***&db=1"),
        ("svc:hunter2@db:5432", "svc:***@db:5432"),
        ("postgresql://postgres@127.0.0.1:5432/postgres", "postgresql://postgres@127.0.0.1:5432/postgres"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("not a url", "not a url"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert "hunter2" not in redact_url(url) and "ter2" not in redact_url(url)


def test_redact_text_masks_every_url_in_free_text() -> None:
    text = (
        "primary rediss://acl-user:hunter2@a:6380/0, replica redis://:hunter3@b/0; "
        "db postgresql://u:hunter4@c/d and dsn host=c password='hunter 5' user=u"
    )
    redacted = redact_text(text)
    for secret in ("hunter2", "hunter3", "hunter4", "hunter 5"):
        assert secret not in redacted
    assert "rediss://acl-user:***@a:6380/0" in redacted
    assert redact_text(redacted) == redacted


def test_redact_processor_covers_nested_values() -> None:
    event = {
        "event": "server.started",
        "url": "redis://u:hunter2@h/0",
        "urls": ["postgresql://u:hunter3@h/db"],
        "nested": {"dsn": ("rediss://x:hunter4@h",)},
        "count": 3,
    }
    out = redact_processor(None, "info", event)
    assert "hunter" not in repr(out)
    assert out["count"] == 3 and out["url"] == "redis://u:***@h/0"


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("as_json", [True, False])
def test_configured_logging_never_prints_a_password(restore_logging: None, as_json: bool) -> None:
    stream = io.StringIO()
    configure_logging("INFO", json=as_json, stream=stream)
    log = structlog.get_logger("test")
    log.info("server.reused", url="rediss://app:hunter2@cache:6380/0", shards=16)
    log.debug("debug.hidden", url="redis://:hunter3@h/0")
    try:
        raise ConnectionError("cannot reach postgresql://svc:hunter4@db/app")
    except ConnectionError:
        log.exception("flush.failed", records=3)
    logging.getLogger("alembic").warning("connecting to %s", "postgresql://svc:hunter5@db/app")
    output = stream.getvalue()
    assert "hunter" not in output
    assert "debug.hidden" not in output
    assert "server.reused" in output and "flush.failed" in output and "connecting to" in output
    if as_json:
        first = json.loads(output.splitlines()[0])
        assert first["event"] == "server.reused" and first["shards"] == 16 and first["level"] == "info"
        assert first["url"] == "rediss://app:***@cache:6380/0"


def test_configure_logging_rejects_unknown_levels(restore_logging: None) -> None:
    with pytest.raises(ValueError, match="log level"):
        configure_logging("LOUD")
