"""subscribe(): availability changes as they happen, against real Redis and a real flusher."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from factory import scraped_market as mk

from availability import ops
from availability.cache import MarketCache
from availability.flusher import Flusher
from availability.model import MarketKey
from availability.subscribe import SUBSCRIBER_LAGGING, AvailabilityChange, Subscription, subscribe

UTC = timezone.utc
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
KICKOFF = T0 + timedelta(hours=3)
SHARDS = 2
GROUP = "alerting"


@pytest.fixture
async def cache(redis_client, key_prefix):
    cache = MarketCache(redis_client, prefix=key_prefix, shards=SHARDS)
    await cache.mark_ready()
    return cache


async def take(sub: Subscription, n: int) -> list[AvailabilityChange]:
    """The next ``n`` changes (a generous guard, not a timing assertion)."""
    return [await asyncio.wait_for(sub.__anext__(), 30) for _ in range(n)]


async def group_pending(cache: MarketCache, group: str = GROUP) -> int:
    return sum([(await cache.client.xpending(cache.keys.changes(s), group))["pending"]
                for s in cache.keys.all_shards()])


async def stream_lengths(cache: MarketCache) -> int:
    return sum([await cache.client.xlen(cache.keys.changes(s)) for s in cache.keys.all_shards()])


async def transitions(cache: MarketCache, event_id: int, start: datetime) -> None:
    """Three records: 18@2.5 and 77 go missing (2 changes), odds move (none), 18@2.5 returns (1)."""
    await cache.apply_scrape(event_id, "sportybet", [mk("1"), mk("18", 2.5), mk("77")], start, kickoff=KICKOFF)
    await cache.apply_scrape(event_id, "sportybet", [mk("1")], start + timedelta(minutes=5))
    await cache.apply_scrape(event_id, "sportybet", [mk("1", odds=1.9)], start + timedelta(minutes=10))
    await cache.apply_scrape(event_id, "sportybet", [mk("1", odds=1.9), mk("18", 2.5)], start + timedelta(minutes=15))


async def test_changes_arrive_with_their_market_kickoff_and_time(cache):
    async with subscribe(cache, group=GROUP, block_ms=100) as changes:
        await transitions(cache, 10, T0)  # after the group exists: start="$" sees them
        got = await take(changes, 3)
        for change in got:
            await changes.ack(change)
    assert [(c.event_id, c.bookmaker, c.key, c.market_name, c.transition, c.at, c.kickoff) for c in got] == [
        (10, "sportybet", MarketKey("18", 2.5), "Market 18", "became_unavailable", T0 + timedelta(minutes=5), KICKOFF),
        (10, "sportybet", MarketKey("77", None), "Market 77", "became_unavailable", T0 + timedelta(minutes=5), KICKOFF),
        (10, "sportybet", MarketKey("18", 2.5), "Market 18", "became_available", T0 + timedelta(minutes=15), KICKOFF),
    ]
    assert got[0].became_unavailable and not got[2].became_unavailable and got[0].field == "18@2.5"
    assert got[0].as_dict()["market"] == "18@2.5" and got[0].stream_id == got[1].stream_id
    assert await group_pending(cache) == 0


async def test_unacknowledged_changes_come_back_to_a_restarted_consumer(cache):
    first = Subscription(cache, GROUP, consumer="svc-1", block_ms=100)
    await first.register()
    await transitions(cache, 10, T0)
    got = await take(first, 3)
    await first.ack(got[2])  # the first record (two changes) stays unacknowledged
    assert await group_pending(cache) == 1
    restarted = Subscription(cache, GROUP, consumer="svc-1", block_ms=100)
    again = await take(restarted, 2)
    assert again == got[:2]
    await restarted.ack(again[0])
    assert await group_pending(cache) == 1  # half a record is not acknowledged
    await restarted.ack(again[1])
    await restarted.ack(again[1])  # twice: harmless
    assert await group_pending(cache) == 0


async def test_a_dead_consumers_changes_are_claimed_by_another(cache):
    dead = Subscription(cache, GROUP, consumer="dead", block_ms=100)
    await dead.register()
    await transitions(cache, 11, T0)
    got = await take(dead, 3)
    other = Subscription(cache, GROUP, consumer="alive", block_ms=100, claim_idle_ms=0)
    claimed = await take(other, 3)
    assert claimed == got
    for c in claimed:
        await other.ack(c)
    assert await group_pending(cache) == 0


async def test_auto_ack_acknowledges_when_the_next_change_is_asked_for(cache):
    async with subscribe(cache, group=GROUP, block_ms=100, auto_ack=True) as changes:
        await transitions(cache, 12, T0)
        await take(changes, 2)  # the first record's two changes; all four records were read at once
        # pending: the first record (its second change is held while the loop body runs) and the
        # last one (queued); the odds-only record, with nothing to deliver, was acknowledged as read
        assert await group_pending(cache) == 2
        await take(changes, 1)
        assert await group_pending(cache) == 1  # the first record acknowledged, the last one held
    assert await group_pending(cache) == 0  # leaving the block normally acknowledges the last


async def test_flusher_trimming_waits_for_the_subscriber_within_its_max_lag(cache, database_url):
    async with subscribe(cache, group=GROUP, block_ms=100, max_lag=1000) as changes:
        await transitions(cache, 10, T0)
        async with Flusher(cache, database_url, block_ms=50) as flusher:
            await flusher.run_once()  # flushes and trims
            assert await stream_lengths(cache) == 4  # the subscriber has read none of them
            got = await take(changes, 3)
            for c in got:
                await changes.ack(c)
            await flusher.trim()
            assert await stream_lengths(cache) == 0
    assert SUBSCRIBER_LAGGING.labels(GROUP, str(10 % SHARDS))._value.get() == 0


async def test_a_subscriber_beyond_its_max_lag_is_reported_and_trimmed_past(cache, database_url):
    slow = Subscription(cache, GROUP, consumer="slow", block_ms=100, max_lag=3)
    await slow.register()
    await transitions(cache, 10, T0)
    held = await take(slow, 3)  # read, never acknowledged: 2 records pending
    await transitions(cache, 10, T0 + timedelta(hours=1))  # 4 more records, not delivered: backlog 6 > 3
    report = (await ops.shard_stats(cache, memory_samples=0))["subscribers"]
    assert report[GROUP]["lagging_shards"] == [10 % SHARDS] and report[GROUP]["backlog"] == 6
    async with Flusher(cache, database_url, block_ms=50) as flusher:
        await flusher.run_once()
    assert await stream_lengths(cache) == 0  # the flushers did not wait for it
    assert SUBSCRIBER_LAGGING.labels(GROUP, str(10 % SHARDS))._value.get() == 1
    # what it then misses: its pending records come back empty, acknowledged and counted
    restarted = Subscription(cache, GROUP, consumer="slow", block_ms=100)
    await transitions(cache, 10, T0 + timedelta(hours=2))
    after = await take(restarted, 3)
    assert restarted.missed == 2
    # the hour-1 records were trimmed before delivery: it continues with what is still there
    assert [(c.field, c.transition, c.at) for c in after] == [
        ("77@_", "became_available", T0 + timedelta(hours=2)),
        ("18@2.5", "became_unavailable", T0 + timedelta(hours=2, minutes=5)),
        ("77@_", "became_unavailable", T0 + timedelta(hours=2, minutes=5)),
    ]
    assert held[0].at == T0 + timedelta(minutes=5)


async def test_a_slow_subscriber_is_not_counted_as_flusher_lag(cache, database_url):
    """`stats` lag/pending and the flusher's gauges are the flushers' group only: a
    subscriber that read nothing (lag) or acknowledged nothing (pending) has its own
    line, and does not make a drained flusher look behind."""
    slow = Subscription(cache, GROUP, consumer="slow", block_ms=100, max_lag=1000)
    await slow.register()
    await transitions(cache, 10, T0)
    await take(slow, 2)  # read, never acknowledged
    shard = 10 % SHARDS
    before = (await ops.shard_stats(cache, memory_samples=0))["per_shard"][shard]
    assert (before["lag"], before["pending"]) == (4, 0)  # no flusher yet: every record is lag
    async with Flusher(cache, database_url, block_ms=50) as flusher:
        await flusher.run_once()
        stats = await ops.shard_stats(cache, memory_samples=0)
        row = stats["per_shard"][shard]
        assert (row["lag"], row["pending"]) == (0, 0), row
        assert stats["totals"]["lag"] == 0 and stats["totals"]["pending"] == 0
        assert set(row["groups"]) == {"flushers", GROUP}
        assert row["stream_length"] > 0 and stats["subscribers"][GROUP]["backlog"] > 0  # what it holds back
        await flusher.refresh_gauges()
    from availability import metrics
    assert metrics.LAG_RECORDS.labels(str(shard))._value.get() == 0
    assert metrics.PENDING_RECORDS.labels(str(shard))._value.get() == 0


async def test_unregister_removes_the_group_and_its_hold(cache, database_url):
    sub = Subscription(cache, GROUP, block_ms=100)
    await sub.register()
    await transitions(cache, 10, T0)
    await sub.unregister()
    assert await cache.client.hgetall(f"{cache.keys.prefix}:subscribers") == {}
    async with Flusher(cache, database_url, block_ms=50) as flusher:
        await flusher.run_once()
    assert await stream_lengths(cache) == 0


def test_bad_options_are_refused(cache):
    for kwargs, match in [({"group": "flushers"}, "group: "), ({"group": "a b"}, "group: "),
                          ({"group": GROUP, "start": "now"}, "start: "), ({"group": GROUP, "max_lag": 0}, "max_lag: ")]:
        with pytest.raises(ValueError, match=match):
            Subscription(cache, **kwargs)
