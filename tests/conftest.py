"""The real-server test harness: Redis and PostgreSQL, never mocks.

By default the suite starts its own throwaway servers (once per session, on
free ports; see :mod:`availability.harness`). Set ``REDIS_URL`` and/or
``DATABASE_URL`` to use running servers instead; ``DATABASE_URL`` must let us
``CREATE DATABASE``. Tests on a shared server stay isolated:

* Redis -- each test gets its own key prefix (``key_prefix``) and only keys of
  that prefix are deleted afterwards; nothing is ever flushed.
* PostgreSQL -- each test gets its own database, created from a template that
  was migrated once per session, and dropped afterwards. Names carry a random
  suffix, so parallel runs do not clash.

Fixtures:

==========================  ========  =====================================================
``redis_url``               session   ``REDIS_URL``, or an embedded Redis started once
``pg_admin_url``            session   ``DATABASE_URL``, or an embedded PostgreSQL's
                                      ``postgres`` database (superuser, trust auth)
``pg_template``             session   name of a database migrated to head (do not connect)
``database_url``            function  URL of a fresh database with the schema at head
``empty_database_url``      function  URL of a fresh database with no schema
``key_prefix``              function  unique key prefix, e.g. ``t1a2b3c4d``
``redis_client``            function  ``redis.asyncio.Redis`` on ``redis_url``
``cache``                   function  a warm ``MarketCache`` under ``key_prefix`` (module's ``SHARDS``)
``fresh_redis``             function  a dedicated :class:`RedisServer` (restart / stop it)
``fresh_postgres``          function  a dedicated :class:`PostgresServer` (stop / start it),
                                      unmigrated: ``migrate.upgrade(fresh_postgres.url)``
``redis_cluster``           session   a 3-master :class:`RedisClusterServer` (skipped without redis-cli)
==========================  ========  =====================================================
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
from factory import warm_cache

from availability.cache import MarketCache

from availability.errors import ServerStartError
from availability.keys import DEFAULT_SHARDS
from availability.harness import (
    PostgresServer,
    RedisClusterServer,
    RedisServer,
    create_database,
    drop_database,
    find_redis_cli,
    find_redis_server,
)


def _unique(prefix: str, length: int = 12) -> str:
    return f"{prefix}{uuid.uuid4().hex[:length]}"


# ---------------------------------------------------------------- Redis


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``REDIS_URL`` if set, else the URL of a Redis started for this session."""
    from_env = os.environ.get("REDIS_URL")
    if from_env:
        yield from_env
        return
    with RedisServer() as server:
        yield server.url


@pytest.fixture
def key_prefix() -> str:
    """A key prefix no other test (or test run) uses: ``t`` + 8 hex digits."""
    return _unique("t", 8)


async def _delete_prefixed_keys(url: str, prefix: str) -> None:
    """Delete the keys of one deployment prefix: ``{<prefix>:*`` and ``<prefix>:*``."""
    client = aioredis.Redis.from_url(url)
    try:
        for pattern in (f"{{{prefix}:*", f"{prefix}:*"):
            batch: list[bytes] = []
            async for key in client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    await client.unlink(*batch)
                    batch.clear()
            if batch:
                await client.unlink(*batch)
    finally:
        await client.aclose()


@pytest.fixture
async def redis_client(redis_url: str, key_prefix: str) -> AsyncIterator[aioredis.Redis]:
    """``redis.asyncio.Redis.from_url(redis_url)`` (bytes replies), closed after the test.

    Afterwards the keys of ``key_prefix`` -- ``{<prefix>:<shard>}...`` and
    ``<prefix>:config`` -- are deleted (SCAN + UNLINK), and nothing else.
    """
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()
        await _delete_prefixed_keys(redis_url, key_prefix)


@pytest.fixture
async def cache(request: pytest.FixtureRequest, redis_client: aioredis.Redis, key_prefix: str) -> MarketCache:
    """A warm :class:`MarketCache` under ``key_prefix`` (see :func:`factory.warm_cache`),
    with the test module's ``SHARDS`` (16 when it sets none); its keys go with ``redis_client``'s."""
    return await warm_cache(redis_client, key_prefix, getattr(request.module, "SHARDS", DEFAULT_SHARDS))


@pytest.fixture
def fresh_redis() -> Iterator[RedisServer]:
    """A Redis server of this test's own, for tests that restart or stop it.

    ``fresh_redis.url``; ``fresh_redis.restart(empty=True)`` loses all data;
    ``fresh_redis.stop()`` / ``.start()`` for an outage on the same port.
    """
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServer]:
    """A 3-master Redis Cluster for the session; the test is skipped if ``redis-cli`` is missing."""
    try:
        find_redis_cli(find_redis_server())
    except ServerStartError as exc:
        pytest.skip(str(exc))
    with RedisClusterServer() as cluster:
        yield cluster


# ---------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """``DATABASE_URL`` if set (we must be allowed to CREATE DATABASE there), else the
    ``postgres`` database of a PostgreSQL started for this session."""
    from_env = os.environ.get("DATABASE_URL")
    if from_env:
        yield from_env
        return
    with PostgresServer() as server:
        yield server.url


@pytest.fixture(scope="session")
def pg_template(pg_admin_url: str) -> Iterator[str]:
    """The name of a database migrated to head, the template of ``database_url``.

    Never connect to it: PostgreSQL cannot copy a database that has sessions.
    """
    from availability.db.migrate import upgrade

    name = _unique("av_tpl_")
    url = create_database(pg_admin_url, name)
    try:
        upgrade(url, "head")
        yield name
    finally:
        drop_database(pg_admin_url, name)


@pytest.fixture
def database_url(pg_admin_url: str, pg_template: str) -> Iterator[str]:
    """The URL of a fresh database of this test's own, migrated to head; dropped afterwards."""
    name = _unique("av_test_")
    url = create_database(pg_admin_url, name, template=pg_template)
    try:
        yield url
    finally:
        drop_database(pg_admin_url, name)


@pytest.fixture
def empty_database_url(pg_admin_url: str) -> Iterator[str]:
    """The URL of a fresh, empty database (copied from ``template0``); dropped afterwards."""
    name = _unique("av_empty_")
    url = create_database(pg_admin_url, name, template="template0")
    try:
        yield url
    finally:
        drop_database(pg_admin_url, name)


@pytest.fixture
def fresh_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test's own, for tests that stop it.

    Unmigrated: call ``availability.db.migrate.upgrade(fresh_postgres.url)``
    first if the test needs the schema. ``.stop()`` / ``.start()`` (same port,
    same data) simulate an outage; ``.kill()`` a crash.
    """
    with PostgresServer() as server:
        yield server
