"""The flusher under crashes and outages: a killed flusher process, PostgreSQL
down while scrapes keep coming, Redis restarted empty. Nothing may be lost,
nothing written twice, and ``verify`` must come out clean."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from psycopg.rows import dict_row

from factory import at, cached_market

from availability.cache import MarketCache
from availability.db.migrate import upgrade
from availability.errors import CacheNotReady
from availability.flusher import Flusher
from availability.model import CachedMarket
from availability.verify import verify
from streams import pending
from availability.warm import warm

pytestmark = pytest.mark.slow

SHARDS = 4
BOOKMAKERS = ("betpawa", "sportybet")


def market(market_id: str, line: float | None = None, odds: float = 1.85) -> CachedMarket:
    return cached_market(market_id, line, outcomes=[("Over", odds, True), ("Under", 1.95, odds < 3)],
                         handicap_type=None if line is None else "total", handicap_home=line, groups=["main"])


def offer(event_id: int, cycle: int, size: int = 12) -> list[CachedMarket]:
    """A few markets leave and return every cycle, and some odds move."""
    out = []
    for i in range(size):
        if (event_id * 3 + i + cycle) % 7 == 0:
            continue
        line = None if i % 4 == 0 else (i % 4 - 1) * 0.5  # None, 0.0, 0.5, 1.0
        out.append(market(str(i // 4), line, odds=1.5 + ((event_id + i * cycle) % 5) / 10))
    return out


class Scraper:
    """Applies scrapes and counts the transitions PostgreSQL must end up holding."""

    def __init__(self, cache: MarketCache) -> None:
        self.cache = cache
        self.transitions = 0
        self.records = 0

    async def cycle(self, cycle: int, events: range, size: int = 12) -> None:
        for event_id in events:
            for bookmaker in BOOKMAKERS:
                outcome = await self.cache.apply_scrape(event_id, bookmaker, offer(event_id, cycle, size), at(5 * cycle))
                assert outcome.applied, outcome
                self.transitions += len(outcome.became_unavailable) + len(outcome.became_available)
                self.records += 1


def history_count(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT count(*) FROM market_availability_history").fetchone()[0]


def duplicate_history(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM market_availability_history GROUP BY event_id, bookmaker,"
            " betpawa_market_id, line, transition, at HAVING count(*) > 1) d"
        ).fetchone()[0]


async def backlog(cache: MarketCache) -> int:
    """Records not yet written: undelivered (group lag) plus delivered but unacknowledged."""
    total = 0
    for shard in cache.keys.all_shards():
        try:
            groups = await cache.client.xinfo_groups(cache.keys.changes(shard))
        except Exception:
            groups = []
        if not groups:
            total += await cache.client.xlen(cache.keys.changes(shard))
        for group in groups:
            total += int(group["lag"] or 0) + int(group["pending"])
    return total


async def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {predicate.__name__}")


async def dead_letters(cache: MarketCache) -> int:
    return sum([await cache.client.xlen(cache.keys.dead_letters(s)) for s in cache.keys.all_shards()])


def flusher_process(redis_url: str, database_url: str, prefix: str, log: Path, *args: str) -> subprocess.Popen:
    """``availability flush`` as a real process of its own."""
    command = [sys.executable, "-m", "availability.cli", "--redis-url", redis_url, "--database-url", database_url,
               "--prefix", prefix, "--shards", str(SHARDS), "--json-logs", "flush", "--block-ms", "100", *args]
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log.open("ab"), env=env)


# ---------------------------------------------------------------- a flusher killed with SIGKILL


async def test_flusher_killed_mid_batch_then_restarted_loses_and_duplicates_nothing(
    redis_client, redis_url, database_url, key_prefix, tmp_path
):
    cache = MarketCache(redis_client, prefix=key_prefix, shards=SHARDS)
    await cache.mark_ready()
    scraper = Scraper(cache)
    for cycle in range(6):
        await scraper.cycle(cycle, range(1, 61), size=40)
    log = tmp_path / "flusher.log"

    first = flusher_process(redis_url, database_url, key_prefix, log, "--batch-size", "5")
    try:
        async def mid_batch() -> bool:  # some batches committed, some records held unacknowledged
            if first.poll() is not None:
                raise AssertionError(f"flusher exited early:\n{log.read_text()[-3000:]}")
            with psycopg.connect(database_url) as conn:
                written = conn.execute("SELECT count(*) FROM availability_snapshots").fetchone()[0]
            return written > 0 and await pending(cache) > 0

        await wait_for(mid_batch, timeout=60, interval=0.01)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    left = await backlog(cache)
    assert left > 0, "the flusher finished before it could be killed"
    held = await pending(cache)

    second = flusher_process(redis_url, database_url, key_prefix, log, "--batch-size", "50", "--claim-idle-ms", "300")
    try:
        async def drained() -> bool:
            assert second.poll() is None, log.read_text()[-3000:]
            return await backlog(cache) == 0

        await wait_for(drained, timeout=60)
        second.send_signal(signal.SIGTERM)
        assert second.wait(20) == 0, log.read_text()[-3000:]
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()

    assert held > 0 and "flusher.claimed" in log.read_text()  # the dead consumer's records were taken over
    assert history_count(database_url) == scraper.transitions
    assert duplicate_history(database_url) == 0
    assert await dead_letters(cache) == 0
    assert await verify(cache, database_url) == []


# ---------------------------------------------------------------- PostgreSQL down


async def test_postgres_outage_never_drops_a_batch_failure_6(redis_client, key_prefix, fresh_postgres):
    """Failure 6: the old write queue retried three times, then silently dropped the batch."""
    database_url = fresh_postgres.url
    upgrade(database_url, "head")
    cache = MarketCache(redis_client, prefix=key_prefix, shards=SHARDS)
    await cache.mark_ready()
    scraper = Scraper(cache)
    flusher = Flusher(cache, database_url, batch_size=20, block_ms=50, max_backoff_s=0.3)
    stop = asyncio.Event()
    run = asyncio.create_task(flusher.run(stop))
    try:
        await scraper.cycle(0, range(1, 21))
        await wait_for(lambda: _zero(backlog(cache)))

        fresh_postgres.stop()
        for cycle in range(1, 5):  # scrapes keep coming while PostgreSQL is down
            await scraper.cycle(cycle, range(1, 21))
            await asyncio.sleep(0.3)
        assert await backlog(cache) > 0
        assert flusher.stats.retries > 3  # far past where the old queue gave up
        assert await dead_letters(cache) == 0

        fresh_postgres.start()
        await wait_for(lambda: _zero(backlog(cache)), timeout=60)
    finally:
        stop.set()
        stats = await run
        await flusher.close()

    assert stats.records == scraper.records and stats.dead_letters == 0
    assert history_count(database_url) == scraper.transitions
    assert await verify(cache, database_url) == []


async def _zero(count) -> bool:
    return await count == 0


# ---------------------------------------------------------------- Redis restarted empty


async def test_redis_restarted_empty_is_warmed_from_postgres_and_keeps_its_guarantees(fresh_redis, database_url):
    # reconnect once a restart broke the pooled connections, as a deployment's client should
    client = aioredis.Redis.from_url(fresh_redis.url, retry=Retry(ExponentialBackoff(), 3),
                                     retry_on_error=[RedisConnectionError])
    cache = MarketCache(client, prefix="av", shards=SHARDS)
    await cache.mark_ready()
    scraper = Scraper(cache)
    flusher = Flusher(cache, database_url, block_ms=50)
    try:
        await scraper.cycle(0, range(1, 11))
        await scraper.cycle(1, range(1, 11))
        await flusher.run_once()
        before = await cache.get_snapshots(range(1, 11))

        fresh_redis.restart(empty=True)  # Redis lost everything: cache, streams, consumer group

        with pytest.raises(CacheNotReady):
            await cache.apply_scrape(1, "betpawa", offer(1, 2), at(10))
        assert sorted(await cache.cold_shards()) == list(range(SHARDS))
        stats = await warm(cache, database_url)
        assert stats.snapshots == 20 and await cache.cold_shards() == []
        assert await cache.get_snapshots(range(1, 11)) == before
        assert await verify(cache, database_url) == []

        # a scrape older than the last one PostgreSQL knows is still refused
        stale = await cache.apply_scrape(1, "betpawa", [market("0")], at(4))
        assert stale.stale
        # a market that vanished while Redis was down is stamped by the next scrape
        listed = offer(2, 1)
        vanished = listed[0]
        outcome = await cache.apply_scrape(2, "betpawa", listed[1:], at(10))
        assert vanished.key in outcome.became_unavailable

        stats = await flusher.run_once()  # the old group is gone: recreated on NOGROUP
        assert stats.records == 1
        with psycopg.connect(database_url, row_factory=dict_row) as conn:
            row = conn.execute(
                "SELECT unavailable_at FROM market_odds WHERE event_id = 2 AND betpawa_market_id = %s"
                " AND line IS NOT DISTINCT FROM %s", (vanished.betpawa_market_id, vanished.line)).fetchone()
            transition = conn.execute(
                "SELECT transition FROM market_availability_history WHERE event_id = 2 AND at = %s", (at(10),)
            ).fetchall()
        assert row["unavailable_at"] == at(10)
        assert {"transition": "became_unavailable"} in transition
        assert await verify(cache, database_url) == []
    finally:
        await flusher.close()
        await client.aclose()


# ---------------------------------------------------------------- history


async def test_transitions_are_recorded_in_history_failure_9(redis_client, database_url, key_prefix):
    """Failure 9: after the move to current-state tables, transitions were recorded nowhere."""
    cache = MarketCache(redis_client, prefix=key_prefix, shards=SHARDS)
    await cache.mark_ready()
    flusher = Flusher(cache, database_url, block_ms=50, claim_idle_ms=0)
    both = [market("18", None), market("18", 0.0)]  # no line and a line of zero are different markets
    expected = []
    try:
        for bookmaker in BOOKMAKERS:
            await cache.apply_scrape(30, bookmaker, both, at(0))
            await cache.apply_scrape(30, bookmaker, both[:1], at(5))  # 18@0.0 leaves
            await cache.apply_scrape(30, bookmaker, both, at(10))  # and returns
            await cache.apply_scrape(30, bookmaker, both[1:], at(15))  # 18@None leaves
            expected += [(bookmaker, 0.0, "became_unavailable", at(5)), (bookmaker, 0.0, "became_available", at(10)),
                         (bookmaker, None, "became_unavailable", at(15))]
        await flusher.run_once()
        # every record delivered a second time (a crash between commit and XACK)
        for shard in cache.keys.all_shards():
            stream = cache.keys.changes(shard)
            for _, fields in await cache.client.xrange(stream):
                await cache.client.xadd(stream, fields)
        await flusher.run_once()
    finally:
        await flusher.close()
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT bookmaker, line, transition, at FROM market_availability_history"
                            " WHERE event_id = 30 AND betpawa_market_id = '18'").fetchall()
    assert sorted(rows, key=str) == sorted(expected, key=str)
