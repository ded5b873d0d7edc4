"""Regressions of what a fault-and-bad-input soak found: nothing may wedge,
crash or split the cache and PostgreSQL. Each test fails on the code before
its fix (named in the test's docstring) and runs on real Redis and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import psycopg
import pytest
import redis.asyncio as aioredis

from factory import at, cached_market

from availability import metrics
from availability.cache import MarketCache
from availability.db import migrate
from availability.flusher import GROUP, Flusher, is_transient_pg
from availability.db.engine import is_schema_error
from availability.model import CachedMarket
from availability.ops import inspect_event
from availability.verify import verify
from availability.warm import warm
from streams import pending

SHARDS = 4


def market(market_id: str, line: float | None = None, odds: float = 1.85) -> CachedMarket:
    return cached_market(market_id, line, outcomes=[("Yes", odds, True), ("No", 1.9, True)], groups=["main"])


def rows(database_url: str, sql: str, *params) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(sql, params).fetchall()


# ---------------------------------------------------------------- 1. poison rows


def test_outage_and_bad_data_are_told_apart_by_sqlstate_not_exception_type():
    """psycopg raises ProgramLimitExceeded (a row too large to index) as an
    OperationalError: the old flusher waited it out for ever."""
    from psycopg import errors

    assert isinstance(errors.ProgramLimitExceeded(), psycopg.OperationalError)
    assert not is_transient_pg(errors.ProgramLimitExceeded())
    assert not is_transient_pg(errors.CharacterNotInRepertoire())
    assert not is_transient_pg(errors.NumericValueOutOfRange())
    for transient in (errors.AdminShutdown(), errors.CannotConnectNow(), errors.ConnectionFailure(),
                      errors.TooManyConnections(), errors.DeadlockDetected(), errors.SerializationFailure(),
                      psycopg.OperationalError("connection refused"), psycopg.InterfaceError("closed"),
                      ConnectionRefusedError()):
        assert is_transient_pg(transient), transient
    assert is_schema_error(errors.UndefinedTable()) and not is_transient_pg(errors.UndefinedTable())


async def test_poison_record_is_bisected_out_while_the_rest_of_its_batch_commits(cache, database_url):
    """Defect 1: a record PostgreSQL refuses with an OperationalError-class SQLSTATE
    (a 4,000-character market id: ProgramLimitExceeded, too large to index)
    wedged every flusher; now it alone goes to the dead-letter stream.

    Validation now refuses such ids before they reach Redis, so PostgreSQL is
    made to refuse one market the same way (SQLSTATE 54000) by a trigger."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("""
            CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.betpawa_market_name = 'Poison' THEN
                    RAISE EXCEPTION 'index row size exceeds btree maximum' USING ERRCODE = '54000';
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER refuse_poison BEFORE INSERT OR UPDATE ON market_odds
                FOR EACH ROW EXECUTE FUNCTION refuse_poison();
        """)
    poison = CachedMarket("9", "Poison", None, None, None, None, [{"name": "Yes", "odds": 2.0, "is_active": True}], None)
    await cache.apply_scrape(1, "betpawa", [market("1"), market("2")], at(0))
    await cache.apply_scrape(2, "betpawa", [poison], at(0))
    await cache.apply_scrape(3, "betpawa", [market("1")], at(0))

    flusher = Flusher(cache, database_url, batch_size=50, block_ms=50)
    try:
        stats = await asyncio.wait_for(flusher.run_once(), 30)
    finally:
        await flusher.close()
    assert stats.dead_letters == 1 and stats.records == 2
    assert sorted(r[0] for r in rows(database_url, "SELECT event_id FROM market_odds")) == [1, 1, 3]
    dead = await cache.client.xrange(cache.keys.dead_letters(cache.keys.shard_of(2)))
    assert len(dead) == 1 and b"ProgramLimitExceeded" in dead[0][1][b"error"]
    assert await pending(cache) == 0


async def test_a_waiting_flusher_keeps_its_batch_claimed_on_a_timer_of_its_own(
    redis_client, key_prefix, fresh_postgres
):
    """Defect 1: the old flusher's backoff outgrew claim_idle_ms, so a second
    flusher claimed the batch it was still retrying (and wedged on it too)."""
    migrate.upgrade(fresh_postgres.url)
    cache = MarketCache(redis_client, prefix=key_prefix, shards=SHARDS)
    await cache.mark_ready()
    await cache.apply_scrape(1, "betpawa", [market("1")], at(0))
    waiting = Flusher(cache, fresh_postgres.url, block_ms=50, claim_idle_ms=300, max_backoff_s=5.0,
                      consumer="waiting")
    other = Flusher(cache, fresh_postgres.url, block_ms=50, claim_idle_ms=300, consumer="other")
    stop = asyncio.Event()
    await waiting.ensure_groups()
    await waiting._refresh_generation()
    entries = await waiting._read(">", None)
    assert len(entries) == 1
    fresh_postgres.stop()
    task = asyncio.create_task(waiting._flush(entries))
    try:
        for _ in range(8):  # 2.4 s: eight times the idle time, while the waiting one backs off
            await asyncio.sleep(0.3)
            claimed = await cache.client.xautoclaim(cache.keys.changes(1), GROUP, "other", 300)
            assert claimed[1] == [], "another flusher took over a batch that is merely waiting"
        fresh_postgres.start()
        await asyncio.wait_for(task, 30)
    finally:
        stop.set()
        if not task.done():
            task.cancel()
        await waiting.close()
        await other.close()
    assert await pending(cache) == 0
    assert rows(fresh_postgres.url, "SELECT betpawa_market_id FROM market_odds") == [("1",)]


# ---------------------------------------------------------------- 2. trim


class _AcksBeforeXpending:
    """The real client, with another consumer's XACK landing between XINFO GROUPS
    and XPENDING -- the interleaving that crashed ``trim``."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client

    def __getattr__(self, name):
        return getattr(self._client, name)

    async def xpending(self, stream, group):
        for entry in await self._client.xpending_range(stream, group, "-", "+", 1000):
            await self._client.xack(stream, group, entry["message_id"])
        return await self._client.xpending(stream, group)


async def test_trim_survives_pending_acknowledged_between_its_reads(cache, database_url):
    """Defect 2: XPENDING's min is None once another consumer acknowledged
    everything; the old trim raised AttributeError and the flusher exited 1."""
    await cache.apply_scrape(1, "betpawa", [market("1")], at(0))
    stream = cache.keys.changes(1)
    flusher = Flusher(cache, database_url, block_ms=50)
    await flusher.ensure_groups()
    await cache.client.xreadgroup(GROUP, "someone-else", {stream: ">"})
    flusher.client = _AcksBeforeXpending(cache.client)
    try:
        await flusher.trim()
    finally:
        await flusher.close()
    assert await cache.client.xlen(stream) == 0


async def test_no_maintenance_failure_ends_the_flush_loop(cache, database_url):
    """Defect 2: any exception of trim, gauges or claiming ended ``availability flush``."""

    class Broken(_AcksBeforeXpending):
        async def xpending(self, stream, group):
            raise RuntimeError("maintenance blew up")

        async def xinfo_groups(self, stream):
            return [{"name": GROUP.encode(), "pending": 1, "last-delivered-id": b"0-0", "lag": 0}]

    flusher = Flusher(cache, database_url, block_ms=50, trim_interval_s=0.05)
    flusher.client = Broken(cache.client)
    stop = asyncio.Event()
    failures = metrics.MAINTENANCE_FAILURES.labels("trim")._value.get()
    task = asyncio.create_task(flusher.run(stop))
    try:
        await cache.apply_scrape(1, "betpawa", [market("1")], at(0))
        for _ in range(100):
            await asyncio.sleep(0.05)
            if rows(database_url, "SELECT count(*) FROM market_odds") == [(1,)] and flusher.maintenance_failures >= 2:
                break
        assert not task.done(), task.exception() if task.done() else None
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await flusher.close()
    assert flusher.maintenance_failures >= 2
    assert metrics.MAINTENANCE_FAILURES.labels("trim")._value.get() > failures
    assert rows(database_url, "SELECT count(*) FROM market_odds") == [(1,)]


# ---------------------------------------------------------------- 3. warm racing a flusher


async def test_warm_fences_out_a_batch_read_before_redis_lost_its_data(fresh_redis, database_url):
    """Defect 3: a flusher read "B became unavailable", Redis restarted empty,
    warm loaded "B available", then the flusher committed: split for good."""
    client = aioredis.Redis.from_url(fresh_redis.url)
    cache = MarketCache(client, prefix="fence", shards=SHARDS)
    flusher = Flusher(cache, database_url, block_ms=50)
    try:
        await cache.mark_ready()
        await cache.apply_scrape(1, "betpawa", [market("A"), market("B")], at(0))
        await flusher.run_once()
        gone = await cache.apply_scrape(1, "betpawa", [market("A")], at(10))
        assert [k.betpawa_market_id for k in gone.became_unavailable] == ["B"]

        entries = await flusher._read(">", None)  # the flusher holds the record...
        assert len(entries) == 1
        fresh_redis.restart(empty=True)  # ...Redis loses everything...
        await client.aclose()
        client = aioredis.Redis.from_url(fresh_redis.url)
        cache = MarketCache(client, prefix="fence", shards=SHARDS)
        flusher.client = client
        flusher._groups_ready = False
        await warm(cache, database_url)  # ...warm-up loads "B available"...
        await flusher._flush(entries)  # ...and only then the held batch reaches its commit

        snap = await cache.get_snapshot(1, "betpawa")
        assert snap.market("B").is_available
        assert rows(database_url, "SELECT unavailable_at FROM market_odds WHERE betpawa_market_id = 'B'") == [(None,)]
        assert await verify(cache, database_url) == []
        # the next scrape re-derives the change, and both sides agree on it
        again = await cache.apply_scrape(1, "betpawa", [market("A")], at(15))
        assert [k.betpawa_market_id for k in again.became_unavailable] == ["B"]
        await flusher.run_once()
        assert await verify(cache, database_url) == []
    finally:
        await flusher.close()
        await client.aclose()


# ---------------------------------------------------------------- 8. payloads that are not markets


async def test_readers_report_an_undecodable_entry_by_key_and_go_on(cache, database_url):
    """Defect 8: one stored entry that is not a market made verify and inspect exit 1."""
    await cache.apply_scrape(1, "betpawa", [market("1"), market("2")], at(0))
    await Flusher(cache, database_url).run_once()
    await cache.client.hset(cache.keys.markets(1, "betpawa"), "3@_", b"garbage")

    bad: list = []
    snap = (await cache.get_snapshots([1], undecodable=bad))[(1, "betpawa")]
    assert [m.betpawa_market_id for m in snap.markets] == ["1", "2"]
    assert [b[2] for b in bad] == ["3@_"]
    report = await inspect_event(cache, 1)
    assert [u["key"] for u in report["snapshots"][0]["undecodable"]] == ["3@_"]
    assert [(m.kind, m.market) for m in await verify(cache, database_url)] == [("undecodable_in_redis", "3@_")]


# ---------------------------------------------------------------- 10, 11. flush --once


def _cli(*args: str, redis_url: str, database_url: str, prefix: str, timeout: float = 60):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("AVAILABILITY_")}
    env.update(REDIS_URL=redis_url, DATABASE_URL=database_url, AVAILABILITY_PREFIX=prefix,
               AVAILABILITY_SHARDS=str(SHARDS))
    return subprocess.run([sys.executable, "-m", "availability", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.mark.parametrize("command", [["flush", "--once"], ["verify"], ["warm"]])
async def test_an_unmigrated_database_is_not_an_outage(cache, redis_url, key_prefix, empty_database_url, command):
    """Defect 10: ``flush --once`` on a database that was never migrated retried for ever."""
    await cache.apply_scrape(1, "betpawa", [market("1")], at(0))
    done = _cli(*command, redis_url=redis_url, database_url=empty_database_url, prefix=key_prefix)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "availability migrate" in errors[0], done.stderr
    assert "Traceback" not in done.stderr


async def test_flush_once_trims_and_leaves_no_consumer_behind(cache, redis_url, key_prefix, database_url):
    """Defect 11: a cron-style ``flush --once`` left every record and its consumer behind."""
    for minute in range(3):
        await cache.apply_scrape(1, "betpawa", [market("1", odds=1.5 + minute)], at(minute))
    for _ in range(2):
        done = _cli("flush", "--once", redis_url=redis_url, database_url=database_url, prefix=key_prefix)
        assert done.returncode == 0, done.stderr
    stream = cache.keys.changes(1)
    assert await cache.client.xlen(stream) == 0
    assert await cache.client.xinfo_consumers(stream, GROUP) == []
    assert rows(database_url, "SELECT count(*) FROM market_availability_history") == [(0,)]
    assert rows(database_url, "SELECT outcomes->0->>'odds' FROM market_odds") == [("3.5",)]


# ---------------------------------------------------------------- 13. two at once


async def _newest_first(cache: MarketCache) -> None:
    """Deliver every record again, newest first: two flushers committing out of order."""
    entries = []
    for shard in cache.keys.all_shards():
        stream = cache.keys.changes(shard)
        entries += [(stream, i, f) for i, f in await cache.client.xrange(stream)]
    for stream, entry_id, _ in entries:
        await cache.client.xdel(stream, entry_id)
    for stream, _, fields in reversed(entries):
        await cache.client.xadd(stream, fields)


async def test_market_times_are_exact_whatever_the_commit_order_defect_9(cache, database_url):
    """Defect 9: with records committed out of order, a market row's captured_at came
    from whichever record created it (too new), last_confirmed_at moved both ways,
    and a confirmation whose row did not exist yet was lost. After everything is
    written, each market's times must be exactly what the scrapes say, and verify
    must compare them."""
    await cache.apply_scrape(9, "betpawa", [market("A"), market("B"), market("C")], at(0))
    await cache.apply_scrape(9, "betpawa", [market("A")], at(5), complete=False)  # A alone, unchanged
    await cache.apply_scrape(9, "betpawa", [market("B", odds=2.0), market("C")], at(10))  # A gone, B changed
    await cache.apply_scrape(9, "betpawa", [market("B", odds=2.0), market("C")], at(15))  # all confirmed
    await _newest_first(cache)

    flusher = Flusher(cache, database_url, batch_size=1)  # one record per transaction, newest first
    try:
        await flusher.run_once()
    finally:
        await flusher.close()

    from availability.storage import load_snapshots  # what every reader of PostgreSQL gets

    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        snaps = [s async for s in load_snapshots(conn, [9])]
    times = {r["betpawa_market_id"]: (r["unavailable_at"], r["captured_at"], r["last_confirmed_at"])
             for r in snaps[0].rows}
    assert times == {
        "A": (at(10), at(0), at(5)),  # last listed by the partial scrape, then gone
        "B": (None, at(10), at(15)),  # odds changed at 10, confirmed at 15
        "C": (None, at(0), at(15)),  # never changed, confirmed at 15
    }
    assert await verify(cache, database_url) == []
    with psycopg.connect(database_url, autocommit=True) as conn:  # verify compares the times too
        conn.execute("UPDATE market_odds SET captured_at = %s WHERE event_id = 9 AND betpawa_market_id = 'B'",
                     (at(15),))
    assert {(m.kind, m.market) for m in await verify(cache, database_url)} == {
        ("captured_at", "B@_"), ("captured_at", None)}  # and no market says when the snapshot's odds changed


def test_migrate_is_safe_from_several_processes_at_once(empty_database_url):
    """Defect 13: concurrent migrations raced on alembic_version (UniqueViolation)."""
    code = "import sys; from availability.db import migrate; migrate.upgrade(sys.argv[1])"
    procs = [subprocess.Popen([sys.executable, "-c", code, empty_database_url], stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    results = [(p.wait(120), p.stderr.read()) for p in procs]
    assert all(rc == 0 for rc, _ in results), results
    assert migrate.current(empty_database_url) == migrate.head()
    assert rows(empty_database_url, "SELECT count(*) FROM alembic_version") == [(1,)]


async def test_two_demos_cannot_claim_one_prefix_or_database(redis_url, redis_client, key_prefix, database_url):
    """Defect 13: two demos started at once on one prefix and database both ran."""
    from availability.demo.pipeline import DemoOptions, _claim_database, _refuse_used_prefix
    from availability.errors import ConfigurationError

    options = DemoOptions(prefix=key_prefix)
    results = await asyncio.gather(*(_refuse_used_prefix(redis_url, options) for _ in range(4)),
                                   return_exceptions=True)
    assert sum(r is None for r in results) == 1
    assert all(isinstance(r, ConfigurationError) for r in results if r is not None)

    first = await _claim_database(database_url, [1, 2])
    try:
        with pytest.raises(ConfigurationError, match="in use by another demo"):
            await _claim_database(database_url, [1, 2])
    finally:
        await first.close()
    again = await _claim_database(database_url, [1, 2])  # released with its connection
    await again.close()


# ---------------------------------------------------------------- a stop is bounded


async def test_a_flusher_stops_even_while_redis_does_not_answer(fresh_redis, database_url):
    """A stop while Redis does not answer (SIGSTOP) right after a batch committed:
    the flusher gives up on the XACK at once (a stop no longer retries it) and its
    loop is cancelled ``stop_grace_s`` after the stop at the latest, so a supervisor
    never has to SIGKILL it. Nothing is lost: an unacknowledged record is taken
    over by the next flusher and written again, harmlessly."""
    import os
    import signal

    from availability.db.engine import libpq_url
    from availability.storage.batch import _LOCK_CLASS, _lock_id

    client = aioredis.Redis.from_url(fresh_redis.url, socket_timeout=2)
    cache = MarketCache(client, prefix="graceful", shards=SHARDS)
    await cache.mark_ready()
    await cache.apply_scrape(41, "betpawa", [market("1")], at(0))
    # hold the batch in PostgreSQL (its snapshot lock) until Redis has stopped answering
    holder = await psycopg.AsyncConnection.connect(libpq_url(database_url), autocommit=True)
    lock = (_LOCK_CLASS, _lock_id(41, "betpawa"))
    await holder.execute("SELECT pg_advisory_lock(%s, %s)", lock)
    flusher = Flusher(cache, database_url, block_ms=50, stop_grace_s=1.0)
    stop = asyncio.Event()
    running = asyncio.ensure_future(flusher.run(stop))
    try:
        for _ in range(200):  # the flusher read the record and waits for the lock
            waiting = await holder.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            if (await waiting.fetchone())[0]:
                break
            await asyncio.sleep(0.05)
        os.kill(fresh_redis.pid, signal.SIGSTOP)
        stop.set()
        await holder.execute("SELECT pg_advisory_unlock(%s, %s)", lock)  # commit; the XACK cannot reach Redis
        await asyncio.wait_for(running, 6)
    finally:
        os.kill(fresh_redis.pid, signal.SIGCONT)
        if not running.done():
            running.cancel()
        await holder.close()
        await flusher.close()
    with psycopg.connect(libpq_url(database_url)) as conn:
        assert conn.execute("SELECT count(*) FROM market_odds WHERE event_id = 41").fetchone() == (1,)
    # the XACK sent before the stop may still reach Redis once it runs again; if not,
    # the next flusher takes the record over and writes it again, harmlessly
    await Flusher(cache, database_url, claim_idle_ms=0).run_once()
    assert await pending(cache) == 0
    with psycopg.connect(libpq_url(database_url)) as conn:
        assert conn.execute("SELECT count(*) FROM market_odds WHERE event_id = 41").fetchone() == (1,)
    await client.aclose()
