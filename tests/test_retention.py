"""Kickoff plumbing and retention (prune, warm) against real Redis and PostgreSQL.

Scrapes go through ``MarketCache`` (the real Lua script) and rows reach
PostgreSQL through a real ``Flusher``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from factory import availability, scraped_market as mk

from availability import retention
from availability.cache import MarketCache, Scrape
from availability.errors import ConfigurationError, InvalidScrape
from availability.flusher import Flusher
from availability.records import decode_record
from availability.warm import warm
from streams import pending

UTC = timezone.utc
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SHARDS = 4
BM = "betpawa"
OLD, RECENT, UNKNOWN, OLD2 = 101, 102, 103, 105  # kickoff 20 days ago, 2 days ago, none, 30 days ago


@pytest.fixture
async def cache(redis_client, key_prefix):
    cache = MarketCache(redis_client, prefix=key_prefix, shards=SHARDS)
    await cache.mark_ready()
    return cache


def rows_of(url: str, event_id: int) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {
            table: conn.execute(f"SELECT count(*) FROM {table} WHERE event_id = %s", (event_id,)).fetchone()[0]
            for table in ("market_odds", "competitor_market_odds", "market_availability_history",
                          "availability_snapshots")
        }


async def scrape_twice(cache: MarketCache, event_id: int, kickoff: datetime | None, start: datetime) -> None:
    """Two scrapes at two bookmakers, the second one stamping a market unavailable."""
    for bm in (BM, "sportybet"):
        await cache.apply_scrape(event_id, bm, [mk("1"), mk("18", 2.5)], start, kickoff=kickoff)
        await cache.apply_scrape(event_id, bm, [mk("1")], start + timedelta(minutes=5), kickoff=kickoff)


async def populate(cache: MarketCache, database_url: str) -> None:
    start = NOW - timedelta(days=40)
    await scrape_twice(cache, OLD, NOW - timedelta(days=20), start)
    await scrape_twice(cache, OLD2, NOW - timedelta(days=30), start)
    await scrape_twice(cache, RECENT, NOW - timedelta(days=2), start)
    await scrape_twice(cache, UNKNOWN, None, start)
    async with Flusher(cache, database_url, block_ms=50) as flusher:
        await flusher.run_once()


# ---------------------------------------------------------------- durations


@pytest.mark.parametrize("text, expected", [
    ("14d", timedelta(days=14)), ("36h", timedelta(hours=36)), ("90m", timedelta(minutes=90)),
    ("30s", timedelta(seconds=30)), (" 2d ", timedelta(days=2)), (timedelta(hours=1), timedelta(hours=1)),
])
def test_parse_duration(text, expected):
    assert retention.parse_duration(text) == expected


@pytest.mark.parametrize("text", ["14", "d", "1.5d", "-1d", "0d", "2w", "", None, 14, "14 days"])
def test_parse_duration_refuses_and_names_the_value(text):
    with pytest.raises(ConfigurationError, match=r"retention: expected a (positive )?duration"):
        retention.parse_duration(text)


# ---------------------------------------------------------------- kickoff plumbing


async def test_kickoff_reaches_meta_record_and_snapshot_row(cache, redis_client, database_url):
    kickoff = datetime(2026, 12, 1, 18, 30, 0, 123456, tzinfo=UTC)
    await cache.apply_scrape(7, BM, [mk("1")], NOW, kickoff=kickoff)
    meta = await redis_client.hgetall(cache.keys.meta(7, BM))
    assert retention.kickoff_from_meta(meta) == kickoff
    # a later scrape without a kickoff keeps the stored one, in meta and in its record
    outcome = await cache.apply_scrape(7, BM, [mk("1", odds=1.9)], NOW + timedelta(minutes=5))
    assert retention.kickoff_from_meta(await redis_client.hgetall(cache.keys.meta(7, BM))) == kickoff
    entries = await redis_client.xrange(cache.keys.changes(cache.keys.shard_of(7)))
    records = [decode_record(i, f) for i, f in entries]
    assert [r.kickoff for r in records] == [kickoff, kickoff]
    assert records[-1].stream_id == outcome.stream_id
    async with Flusher(cache, database_url, block_ms=50) as flusher:
        await flusher.run_once()
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT kickoff FROM availability_snapshots WHERE event_id = 7").fetchall() == [(kickoff,)]
    # a postponement: the newest scrape's kickoff wins
    later = kickoff + timedelta(days=1)
    await cache.apply_scrape(7, BM, [mk("1", odds=1.95)], NOW + timedelta(minutes=10), kickoff=later)
    async with Flusher(cache, database_url, block_ms=50) as flusher:
        await flusher.run_once()
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT kickoff FROM availability_snapshots WHERE event_id = 7").fetchall() == [(later,)]


async def test_records_without_kickoff_still_decode(cache, redis_client):
    await cache.apply_scrape(8, BM, [mk("1")], NOW)
    [(sid, fields)] = await redis_client.xrange(cache.keys.changes(cache.keys.shard_of(8)))
    assert fields[b"kickoff"] == b""
    older = {k: v for k, v in fields.items() if k != b"kickoff"}  # as a previous version wrote it
    assert decode_record(sid, older).kickoff is None
    assert decode_record(sid, older).changes == decode_record(sid, fields).changes


async def test_bad_kickoff_writes_nothing(cache, redis_client):
    for bad, match in [(datetime(2026, 12, 1), "kickoff: .*naive"), ("tomorrow", "kickoff: expected"),
                       (datetime(1960, 1, 1, tzinfo=UTC), "kickoff: expected a time after 1970")]:
        with pytest.raises(InvalidScrape, match=match):
            await cache.apply_scrape(9, BM, [mk("1")], NOW, kickoff=bad)
    assert not await redis_client.exists(cache.keys.meta(9, BM))
    # the script checks it too, before its first write
    keys = cache.keys.snapshot(9, BM).as_list()
    prepared = cache._prepare(Scrape(9, BM, [mk("1")], NOW))
    args = prepared.args[:-1] + ["soon"]
    with pytest.raises(Exception, match="kickoff: expected integer microseconds"):
        await redis_client.eval(cache.script.source, len(keys), *keys, *args)
    assert not await redis_client.exists(cache.keys.meta(9, BM))


# ---------------------------------------------------------------- prune


async def test_prune_removes_only_events_past_retention(cache, redis_client, database_url):
    await populate(cache, database_url)
    assert rows_of(database_url, OLD)["market_availability_history"] == 2
    stats = await retention.prune(database_url, "14d", batch_size=1, now=NOW, cache=cache)
    assert stats.events == 2 and stats.batches >= 2
    assert stats.rows == {"market_odds": 4, "competitor_market_odds": 4, "market_availability_history": 4,
                          "availability_snapshots": 4}
    for gone in (OLD, OLD2):
        assert set(rows_of(database_url, gone).values()) == {0}
        assert await cache.bookmakers_of(gone) == []
        assert not await redis_client.exists(cache.keys.meta(gone, BM), cache.keys.markets(gone, "sportybet"))
    for kept in (RECENT, UNKNOWN):  # within retention, and never given a kickoff
        assert rows_of(database_url, kept) == {"market_odds": 2, "competitor_market_odds": 2,
                                               "market_availability_history": 2, "availability_snapshots": 2}
        assert await cache.bookmakers_of(kept) == [BM, "sportybet"]
    assert stats.redis_events == 2 and stats.redis_keys == 2 * 2 * 3
    with psycopg.connect(database_url) as conn:
        assert sorted(conn.execute("SELECT event_id FROM availability_pruned_events").fetchall()) == [(OLD,), (OLD2,)]
    # a second run finds nothing more
    again = await retention.prune(database_url, "14d", now=NOW, cache=cache)
    assert (again.events, again.redis_events) == (0, 0)
    # a shorter retention reaches the recent event, never the one without a kickoff
    shorter = await retention.prune(database_url, "1d", now=NOW, cache=cache)
    assert shorter.events == 1 and set(rows_of(database_url, RECENT).values()) == {0}
    assert rows_of(database_url, UNKNOWN)["market_odds"] == 2


async def test_a_late_record_for_a_pruned_event_does_not_resurrect_it(cache, database_url):
    await populate(cache, database_url)
    await retention.prune(database_url, "14d", now=NOW, cache=cache)
    # the scraper is late: one more scrape of the pruned event, and one of a kept event
    late = NOW - timedelta(days=1)
    await cache.apply_scrape(OLD, BM, [mk("1"), mk("77")], late, kickoff=NOW - timedelta(days=20))
    await cache.apply_scrape(RECENT, BM, [mk("1"), mk("77")], late)
    async with Flusher(cache, database_url, block_ms=50) as flusher:
        await flusher.run_once()
    assert set(rows_of(database_url, OLD).values()) == {0}
    assert rows_of(database_url, RECENT)["market_odds"] == 3
    assert await pending(cache) == 0  # acknowledged: nothing is left to write for a pruned event


async def test_a_flusher_waits_for_a_running_prune_and_then_leaves_the_event_out(cache, database_url):
    """A prune transaction that has deleted the event but not committed yet: a
    flusher writing a record of that event must not commit rows the prune
    cannot see (they would be half an event, for good)."""
    await populate(cache, database_url)
    await cache.apply_scrape(OLD, BM, [mk("1"), mk("77")], NOW - timedelta(days=1))
    async with await psycopg.AsyncConnection.connect(database_url) as prune_conn:
        # what _prune_batch does, held open
        await prune_conn.execute(retention._LOCK_EXCLUSIVE_SQL,
                                 (retention.EVENT_LOCK_CLASS, retention._lock_ids([OLD])))
        await prune_conn.execute(retention._TOMBSTONE_SQL, ([OLD], [NOW - timedelta(days=20)]))
        for _, sql in retention._DELETES:
            await prune_conn.execute(sql, ([OLD],))
        flusher = Flusher(cache, database_url, block_ms=50)
        flushing = asyncio.create_task(flusher.run_once())
        await asyncio.sleep(1.0)  # let the flusher reach the lock
        await prune_conn.commit()
        await flushing
        await flusher.close()
    assert set(rows_of(database_url, OLD).values()) == {0}
    assert await pending(cache) == 0


# ---------------------------------------------------------------- warm


async def test_warm_loads_only_events_within_retention_unless_all(redis_client, key_prefix, cache, database_url):
    await populate(cache, database_url)
    cold = MarketCache(redis_client, prefix=key_prefix + "w", shards=SHARDS)
    try:
        stats = await warm(cold, database_url, retention="14d", now=NOW)
        assert stats.snapshots == 4  # RECENT and UNKNOWN at two bookmakers
        for shard in cold.keys.all_shards():
            assert {e for e, _ in await cold.list_snapshots(shard)} <= {RECENT, UNKNOWN}
        meta = await redis_client.hgetall(cold.keys.meta(RECENT, BM))
        assert retention.kickoff_from_meta(meta) == NOW - timedelta(days=2)
        assert await cold.get_snapshot(RECENT, BM) == await cache.get_snapshot(RECENT, BM)
        everything = await warm(cold, database_url)  # --all
        assert everything.snapshots == 4 and everything.skipped == 4
        assert await cold.bookmakers_of(OLD) == [BM, "sportybet"]
    finally:
        names = [k async for k in redis_client.scan_iter(match=f"{{{key_prefix}w:*")]
        names += [k async for k in redis_client.scan_iter(match=f"{key_prefix}w:*")]
        if names:
            await redis_client.delete(*names)


# ---------------------------------------------------------------- the command line


async def test_prune_command(cache, database_url, redis_url, key_prefix):
    now = datetime.now(UTC)
    await scrape_twice(cache, OLD, now - timedelta(days=20), now - timedelta(days=21))
    await scrape_twice(cache, RECENT, now - timedelta(days=2), now - timedelta(days=3))
    async with Flusher(cache, database_url, block_ms=50) as flusher:
        await flusher.run_once()
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return availability("--prefix", key_prefix, "--shards", str(SHARDS), *args,
                            REDIS_URL=redis_url, DATABASE_URL=database_url)

    bad = await asyncio.to_thread(run, "prune", "--older-than", "two weeks")
    assert bad.returncode == 2 and "--older-than: expected a duration like 14d" in bad.stderr, bad.stderr
    done = await asyncio.to_thread(run, "prune", "--older-than", "14d", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)["pruned"]
    again = await asyncio.to_thread(run, "prune", "--older-than", "14d")  # text unless --json; nothing left
    assert again.returncode == 0 and again.stdout.startswith("pruned: ") and "events 0" in again.stdout, again.stdout
    assert (report["events"], report["redis_events"], report["rows"]["market_odds"]) == (1, 1, 2)
    assert set(rows_of(database_url, OLD).values()) == {0} and rows_of(database_url, RECENT)["market_odds"] == 2
    assert await cache.bookmakers_of(OLD) == [] and await cache.bookmakers_of(RECENT) == [BM, "sportybet"]
