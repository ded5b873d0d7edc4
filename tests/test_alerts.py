"""Alerts (events with unavailable markets) from Redis and from PostgreSQL, against real servers.

The truth each answer is checked against is a full scan: every cached
snapshot read back with ``get_snapshots`` and looked at in plain Python.
"""

from __future__ import annotations

import json
import random
import subprocess
from datetime import datetime, timedelta, timezone

import pytest
from factory import availability, scraped_market as mk

from availability import retention
from availability.alerts import EventAlert, count_events_with_unavailable, redis_alerts
from availability.cache import MarketCache
from availability.flusher import Flusher
from availability.reader import AvailabilityReader
from availability.warm import warm

UTC = timezone.utc
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SHARDS = 4
BOOKMAKERS = ("betpawa", "sportybet", "bet9ja")


MARKETS = [mk("1"), mk("18", 2.5), mk("18", 3.5), mk("14", 0.0), mk("14", None), mk("77")]


@pytest.fixture
async def cache(redis_client, key_prefix):
    cache = MarketCache(redis_client, prefix=key_prefix, shards=SHARDS)
    await cache.mark_ready()
    return cache


async def feed(cache: MarketCache, seed: int = 7, events: int = 40, cycles: int = 4) -> dict[int, datetime | None]:
    """Scrapes of ``events`` events at three bookmakers over ``cycles`` cycles: markets
    leave and return, some events leave a listing, kickoffs in the past, the future
    or not known."""
    rng = random.Random(seed)
    kickoffs: dict[int, datetime | None] = {}
    for i in range(events):
        event_id = 5000 + i if i % 7 else -(5000 + i)  # competitor-only events have negative ids
        kickoffs[event_id] = None if i % 5 == 0 else NOW + timedelta(hours=rng.randint(-72, 72))
    for cycle in range(cycles):
        at = NOW - timedelta(days=4) + timedelta(minutes=5 * cycle)
        for event_id, kickoff in kickoffs.items():
            for bm in BOOKMAKERS:
                if rng.random() < 0.15:
                    continue  # not scraped this cycle
                if cycle and rng.random() < 0.05:
                    await cache.mark_event_removed(event_id, bm, at)
                    continue
                offered = [m for m in MARKETS if cycle == 0 or rng.random() < 0.8]
                await cache.apply_scrape(event_id, bm, offered or MARKETS[:1], at, kickoff=kickoff)
    return kickoffs


async def full_scan(cache: MarketCache, bookmaker: str | None, upcoming_only: bool,
                    kickoffs: dict[int, datetime | None]) -> list[EventAlert]:
    """The answer without any index: every snapshot, every market."""
    found: dict[int, set[str]] = {}
    snapshots = await cache.get_snapshots(list(kickoffs))
    for (event_id, bm), snap in snapshots.items():
        if bookmaker not in (None, bm) or not snap.unavailable_markets:
            continue
        kickoff = kickoffs[event_id]
        if upcoming_only and kickoff is not None and kickoff <= NOW:
            continue
        found.setdefault(event_id, set()).add(bm)
    far = datetime.max.replace(tzinfo=UTC)
    alerts = [EventAlert(e, tuple(sorted(b)), kickoffs[e]) for e, b in found.items()]
    return sorted(alerts, key=lambda a: (a.kickoff or far, a.event_id))


QUERIES = [(bm, upcoming) for bm in (None, *BOOKMAKERS, "other") for upcoming in (True, False)]


async def test_redis_and_postgres_answer_the_same_as_a_full_scan(cache, database_url):
    kickoffs = await feed(cache)
    async with Flusher(cache, database_url, block_ms=50) as flusher:
        await flusher.run_once()
    async with AvailabilityReader(cache, database_url) as reader:
        seen_some = 0
        for bookmaker, upcoming in QUERIES:
            truth = await full_scan(cache, bookmaker, upcoming, kickoffs)
            from_redis = await reader.events_with_unavailable(bookmaker, upcoming, now=NOW)
            from_pg = await reader.events_with_unavailable(bookmaker, upcoming, source="postgres", now=NOW)
            assert from_redis == truth, (bookmaker, upcoming)
            assert from_pg == truth, (bookmaker, upcoming)
            count = await reader.count_events_with_unavailable(bookmaker, upcoming, source="postgres", now=NOW)
            assert count == len(truth) == await count_events_with_unavailable(cache, bookmaker, upcoming, now=NOW)
            seen_some += bool(truth)
        assert seen_some >= 8  # the feed is not trivially empty
        everything = await reader.events_with_unavailable(upcoming_only=False, now=NOW)
        upcoming = await reader.events_with_unavailable(now=NOW)
        assert len(upcoming) < len(everything)
        assert any(a.kickoff is None for a in upcoming) and any(a.event_id < 0 for a in everything)


async def test_a_market_that_returns_leaves_the_index(cache, redis_client):
    kickoff = NOW + timedelta(hours=2)
    await cache.apply_scrape(11, "betpawa", [mk("1"), mk("18", 2.5)], NOW - timedelta(minutes=10), kickoff=kickoff)
    assert await redis_alerts(cache, now=NOW) == []
    await cache.apply_scrape(11, "betpawa", [mk("1")], NOW - timedelta(minutes=5))  # no kickoff: the stored one
    assert await redis_alerts(cache, now=NOW) == [EventAlert(11, ("betpawa",), kickoff)]
    assert await redis_client.zscore(cache.keys.alerts(11 % SHARDS), "11:betpawa") == float(
        int((kickoff - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()) * 1_000_000)
    # once the kickoff passed, it is no longer upcoming
    assert await redis_alerts(cache, now=kickoff) == []
    assert await redis_alerts(cache, upcoming_only=False, now=kickoff) == [EventAlert(11, ("betpawa",), kickoff)]
    await cache.apply_scrape(11, "betpawa", [mk("1"), mk("18", 2.5)], NOW)
    assert await redis_alerts(cache, upcoming_only=False, now=NOW) == []
    assert not await redis_client.exists(cache.keys.alerts(11 % SHARDS))


async def test_expired_keys_leave_the_index_when_read(cache, redis_client):
    await cache.apply_scrape(12, "sportybet", [mk("1"), mk("77")], NOW - timedelta(minutes=10))
    await cache.apply_scrape(12, "sportybet", [mk("1")], NOW - timedelta(minutes=5))
    assert len(await redis_alerts(cache, upcoming_only=False, now=NOW)) == 1
    await redis_client.delete(*cache.keys.snapshot(12, "sportybet").as_list()[:3])  # as an expiry would
    assert await redis_alerts(cache, upcoming_only=False, now=NOW) == []
    assert not await redis_client.exists(cache.keys.alerts(12 % SHARDS))


async def test_warm_rebuilds_the_index_and_prune_empties_it(cache, redis_client, key_prefix, database_url):
    kickoffs = await feed(cache, seed=3, events=20, cycles=3)
    async with Flusher(cache, database_url, block_ms=50) as flusher:
        await flusher.run_once()
    before = await redis_alerts(cache, upcoming_only=False, now=NOW)
    assert before
    # Redis loses everything: warm-up rebuilds the alerts index from PostgreSQL
    names = [k async for k in redis_client.scan_iter(match=f"{{{key_prefix}:*")]
    await redis_client.delete(*names)
    await warm(cache, database_url)
    assert await redis_alerts(cache, upcoming_only=False, now=NOW) == before
    # a prune of everything past (kickoff before NOW) empties the index of those events
    await retention.prune(database_url, "30s", now=NOW + timedelta(seconds=30), cache=cache)
    after = await redis_alerts(cache, upcoming_only=False, now=NOW)
    assert after == [a for a in before if a.kickoff is None or a.kickoff >= NOW]
    assert {e for e, k in kickoffs.items() if k is not None and k < NOW}
    async with AvailabilityReader(cache, database_url) as reader:
        assert await reader.events_with_unavailable(upcoming_only=False, source="postgres", now=NOW) == after


async def test_alerts_command(cache, database_url, redis_url, key_prefix):
    kickoff = datetime.now(UTC) + timedelta(hours=3)
    for bm in ("betpawa", "bet9ja"):
        await cache.apply_scrape(21, bm, [mk("1"), mk("77")], NOW, kickoff=kickoff)
        await cache.apply_scrape(21, bm, [mk("1")], NOW + timedelta(minutes=5))
    await cache.apply_scrape(22, "sportybet", [mk("1"), mk("77")], NOW, kickoff=NOW)
    await cache.apply_scrape(22, "sportybet", [mk("1")], NOW + timedelta(minutes=5))
    async with Flusher(cache, database_url, block_ms=50) as flusher:
        await flusher.run_once()
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return availability("--prefix", key_prefix, "--shards", str(SHARDS), "alerts", *args,
                            REDIS_URL=redis_url, DATABASE_URL=database_url)

    for source in ("redis", "postgres"):
        done = run("--json", "--source", source)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["count"] == 1 and report["events"][0]["bookmakers"] == ["bet9ja", "betpawa"]
        assert json.loads(run("--json", "--all", "--source", source).stdout)["count"] == 2
        assert json.loads(run("--json", "--bookmaker", "sportybet", "--source", source).stdout)["count"] == 0
    text = run()
    assert text.returncode == 0 and "1 upcoming events with unavailable markets (from redis)" in text.stdout
    events = [line.split()[0] for line in text.stdout.splitlines()[2:] if line.strip()]
    assert events == ["21"], text.stdout  # (not a substring test: a kickoff at xx:22 contains "22")
