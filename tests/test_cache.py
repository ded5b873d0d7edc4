"""MarketCache against a real Redis: availability rules, atomicity, records, bad input."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import shutil
import subprocess
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import msgpack
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from availability import keys as keys_module
from availability.cache import MarketCache, Scrape
from availability.coordinator import EventCoordinator, ScrapeResult
from availability.errors import CacheNotReady, ConfigurationError, InvalidScrape, ServerStartError
from availability.keys import SCHEMA_VERSION, KeySchema
from availability.model import (
    MarketKey,
    coerce_market,
    encode_market,
    format_ts,
    key_to_field,
    market_key,
    to_micros,
)
from availability.records import decode_record
from availability.servers import find_redis_cli
from reference import ReferenceCache, outcome_of

UTC = timezone.utc
T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SHARDS = 4
EVENT = 1234
BM = "betpawa"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def mk(market_id: str = "18", line: Any = 2.5, odds: float = 1.85, *, name: str = "Over/Under", **extra: Any) -> dict:
    """A scraped market (a plain dict, as scrapers produce)."""
    return {
        "betpawa_market_id": market_id,
        "betpawa_market_name": name,
        "line": line,
        "outcomes": [
            {"name": "Over", "odds": odds, "is_active": True},
            {"name": "Under", "odds": round(3.8 - odds, 2), "is_active": True},
        ],
        **extra,
    }


ONE_X_TWO = {
    "betpawa_market_id": "1",
    "betpawa_market_name": "1X2",
    "line": None,
    "outcomes": [{"name": "1", "odds": 2.1}, {"name": "X", "odds": 3.2}, {"name": "2", "odds": 3.6}],
}


@pytest.fixture
async def cache(redis_client, key_prefix) -> MarketCache:
    cache = MarketCache(redis_client, prefix=key_prefix, shards=SHARDS)
    await cache.mark_ready()
    return cache


async def dump(client: aioredis.Redis, prefix: str) -> dict[bytes, Any]:
    """Every key of a deployment with its type, contents and TTL (streams: entries and length)."""
    out: dict[bytes, Any] = {}
    for pattern in (f"{{{prefix}:*", f"{prefix}:*"):
        async for key in client.scan_iter(match=pattern, count=1000):
            kind = (await client.type(key)).decode()
            if kind == "hash":
                value: Any = await client.hgetall(key)
            elif kind == "zset":
                value = await client.zrange(key, 0, -1, withscores=True)
            elif kind == "stream":
                value = (await client.xlen(key), await client.xrange(key))
            elif kind == "string":
                value = await client.get(key)
            else:
                value = kind
            out[key] = (kind, value, await client.pttl(key) > 0)
    return out


async def records(cache: MarketCache, event_id: int = EVENT) -> list:
    entries = await cache.client.xrange(cache.keys.changes(cache.keys.shard_of(event_id)))
    return [decode_record(sid, fields) for sid, fields in entries]


async def stamps(cache: MarketCache, event_id: int = EVENT, bookmaker: str = BM) -> dict[str, str]:
    raw = await cache.client.hgetall(cache.keys.unavailable(event_id, bookmaker))
    return {k.decode(): v.decode() for k, v in raw.items()}


# ---------------------------------------------------------------- counts and transitions


async def test_first_scrape_stores_every_market_as_new(cache):
    outcome = await cache.apply_scrape(EVENT, BM, [ONE_X_TWO, mk("18", 2.5), mk("18", 3.5)], at(0))
    assert outcome.applied and outcome.status == "applied"
    assert (outcome.new, outcome.changed, outcome.unchanged) == (3, 0, 0)
    assert outcome.became_unavailable == outcome.became_available == ()
    assert outcome.stream_id is not None
    assert outcome.last_scraped_at == at(0)
    snap = await cache.get_snapshot(EVENT, BM)
    assert [m.key for m in snap.markets] == [MarketKey("1", None), MarketKey("18", 2.5), MarketKey("18", 3.5)]
    assert snap.captured_at == snap.last_confirmed_at == snap.last_scraped_at == at(0)
    assert snap.market("1") == coerce_market(ONE_X_TWO)


async def test_new_changed_and_unchanged_are_counted(cache):
    await cache.apply_scrape(EVENT, BM, [ONE_X_TWO, mk("18", 2.5), mk("18", 3.5)], at(0))
    outcome = await cache.apply_scrape(EVENT, BM, [ONE_X_TWO, mk("18", 2.5, 1.90), mk("18", 3.5), mk("18", 4.5)], at(5))
    assert (outcome.new, outcome.changed, outcome.unchanged) == (1, 1, 2)
    assert outcome.changed_anything
    snap = await cache.get_snapshot(EVENT, BM)
    assert snap.market("18", 2.5).outcomes[0]["odds"] == 1.90
    assert snap.captured_at == at(5)

    same = await cache.apply_scrape(EVENT, BM, [ONE_X_TWO, mk("18", 2.5, 1.90), mk("18", 3.5), mk("18", 4.5)], at(10))
    assert (same.new, same.changed, same.unchanged) == (0, 0, 4)
    assert not same.changed_anything
    snap = await cache.get_snapshot(EVENT, BM)
    # odds last changed at 5; the scrape at 10 confirmed them
    assert (snap.captured_at, snap.last_confirmed_at, snap.last_scraped_at) == (at(5), at(10), at(10))


async def test_equal_markets_in_another_spelling_are_unchanged(cache):
    await cache.apply_scrape(EVENT, BM, [mk("18", 2.5, 2.0)], at(0))
    respelled = mk("18", "2.50", 2)
    respelled["outcomes"] = [{"name": "Over", "odds": 2, "is_active": True}, {"name": "Under", "odds": 1.8}]
    outcome = await cache.apply_scrape(EVENT, BM, [respelled], at(1))
    assert (outcome.new, outcome.changed, outcome.unchanged) == (0, 0, 1)


async def test_missing_market_is_stamped_once(cache):
    await cache.apply_scrape(EVENT, BM, [ONE_X_TWO, mk("18", 2.5)], at(0))
    first = await cache.apply_scrape(EVENT, BM, [ONE_X_TWO], at(5))
    assert first.became_unavailable == (MarketKey("18", 2.5),)
    again = await cache.apply_scrape(EVENT, BM, [ONE_X_TWO], at(10))
    assert again.applied and again.became_unavailable == ()
    snap = await cache.get_snapshot(EVENT, BM)
    assert snap.market("18", 2.5).unavailable_at == at(5)  # the first stamp is kept
    assert snap.market("18", 2.5).outcomes == coerce_market(mk("18", 2.5)).outcomes  # last known odds
    assert [m.key for m in snap.available_markets] == [MarketKey("1", None)]
    assert await stamps(cache) == {"18@2.5": format_ts(at(5))}


async def test_returning_market_is_cleared(cache):
    await cache.apply_scrape(EVENT, BM, [ONE_X_TWO, mk("18", 2.5)], at(0))
    await cache.apply_scrape(EVENT, BM, [ONE_X_TWO], at(5))
    back = await cache.apply_scrape(EVENT, BM, [ONE_X_TWO, mk("18", 2.5, 2.2)], at(10))
    assert back.became_available == (MarketKey("18", 2.5),)
    assert back.became_unavailable == ()
    assert (back.new, back.changed, back.unchanged) == (0, 1, 1)
    snap = await cache.get_snapshot(EVENT, BM)
    assert all(m.is_available for m in snap.markets)
    assert await stamps(cache) == {}
    assert await cache.client.hget(cache.keys.meta(EVENT, BM), "unavailable") == b"0"


async def test_stale_and_duplicate_scrapes_change_nothing(cache, redis_client, key_prefix):
    s1 = Scrape(EVENT, BM, [ONE_X_TWO, mk("18", 2.5)], at(0))
    s2 = Scrape(EVENT, BM, [ONE_X_TWO], at(5))
    s3 = Scrape(EVENT, BM, [mk("18", 2.5, 3.0)], at(3))
    s2_other = Scrape(EVENT, BM, [ONE_X_TWO, mk("18", 2.5)], at(5))  # another scrape at the same time
    assert (await cache.apply_scrape(**vars(s1))).applied
    first = await cache.apply_scrape(**vars(s2))
    assert first.applied and first.became_unavailable == (MarketKey("18", 2.5),)
    before = await dump(redis_client, key_prefix)
    changes = cache.keys.changes(cache.keys.shard_of(EVENT))
    assert before[changes.encode()][1][0] == 2

    for late in (s1, s3, s2_other):  # a replay, an older scrape from a slow worker, a clash
        outcome = await cache.apply_scrape(**vars(late))
        assert outcome.stale and outcome.status == "stale"
        assert outcome.last_scraped_at == at(5)
        assert outcome.became_unavailable == outcome.became_available == ()
        assert (outcome.new, outcome.changed, outcome.unchanged, outcome.stream_id) == (0, 0, 0, None)
    for outcome in await cache.apply_batch([s1, s3, s2_other]):
        assert outcome.stale
    # the exact re-delivery of the last applied scrape learns what it did
    for again in [await cache.apply_scrape(**vars(s2)), *(await cache.apply_batch([s2, s2]))]:
        assert again.duplicate and again.ok and not again.applied and not again.stale
        assert again.became_unavailable == first.became_unavailable
        assert (again.new, again.changed, again.unchanged, again.stream_id) == (
            first.new, first.changed, first.unchanged, first.stream_id)
    assert await dump(redis_client, key_prefix) == before


async def test_partial_scrape_never_stamps_but_clears_and_stores(cache):
    await cache.apply_scrape(EVENT, BM, [ONE_X_TWO, mk("18", 2.5), mk("18", 3.5)], at(0))
    await cache.apply_scrape(EVENT, BM, [ONE_X_TWO, mk("18", 2.5)], at(5))  # stamps 18@3.5
    partial = await cache.apply_scrape(EVENT, BM, [mk("18", 3.5, 2.0), mk("18", 4.5)], at(10), complete=False)
    assert partial.became_unavailable == ()
    assert partial.became_available == (MarketKey("18", 3.5),)
    assert (partial.new, partial.changed, partial.unchanged) == (1, 1, 0)
    snap = await cache.get_snapshot(EVENT, BM)
    assert all(m.is_available for m in snap.markets)
    assert len(snap.markets) == 4
    assert (await records(cache))[-1].completeness == "partial"


async def test_empty_scrape_never_stamps_unless_confirmed(cache, redis_client, key_prefix):
    await cache.apply_scrape(EVENT, BM, [ONE_X_TWO, mk("18", 2.5)], at(0))
    before = await dump(redis_client, key_prefix)
    empty = await cache.apply_scrape(EVENT, BM, [], at(5))
    assert empty.status == "ignored_empty" and empty.ok and not empty.applied
    not_complete = await cache.apply_scrape(EVENT, BM, [], at(5), complete=False, confirmed_empty=True)
    assert not_complete.status == "ignored_empty"
    assert [o.status for o in await cache.apply_batch([Scrape(EVENT, BM, (), at(6))])] == ["ignored_empty"]
    assert await dump(redis_client, key_prefix) == before

    confirmed = await cache.apply_scrape(EVENT, BM, [], at(7), confirmed_empty=True)
    assert confirmed.became_unavailable == (MarketKey("1", None), MarketKey("18", 2.5))
    snap = await cache.get_snapshot(EVENT, BM)
    assert all(m.unavailable_at == at(7) for m in snap.markets)
    assert snap.last_confirmed_at == at(0)  # nothing was seen
    assert (await records(cache))[-1].completeness == "empty"


async def test_mark_event_removed_stamps_available_markets(cache, redis_client, key_prefix):
    await cache.apply_scrape(EVENT, BM, [ONE_X_TWO, mk("18", 2.5), mk("18", 3.5)], at(0))
    await cache.apply_scrape(EVENT, BM, [ONE_X_TWO, mk("18", 2.5)], at(5))
    removed = await cache.mark_event_removed(EVENT, BM, at(10))
    assert removed.became_unavailable == (MarketKey("1", None), MarketKey("18", 2.5))
    assert await stamps(cache) == {"1@_": format_ts(at(10)), "18@2.5": format_ts(at(10)), "18@3.5": format_ts(at(5))}
    meta = cache.keys.meta(EVENT, BM)
    assert await redis_client.hget(meta, "removed_at") == format_ts(at(10)).encode()
    record = (await records(cache))[-1]
    assert (record.kind, record.completeness, record.present) == ("removed", "empty", ())

    assert (await cache.mark_event_removed(EVENT, BM, at(10))).duplicate  # its own re-delivery
    still_gone = await cache.mark_event_removed(EVENT, BM, at(15))
    assert still_gone.applied and still_gone.became_unavailable == ()
    assert await redis_client.hget(meta, "removed_at") == format_ts(at(10)).encode()  # the first one is kept

    listed_again = await cache.apply_scrape(EVENT, BM, [ONE_X_TWO], at(20))
    assert listed_again.became_available == (MarketKey("1", None),)
    assert await redis_client.hget(meta, "removed_at") is None


async def test_removal_with_nothing_cached_advances_the_clock_and_follows_staleness(cache, redis_client):
    outcome = await cache.mark_event_removed(EVENT, BM, at(5))
    assert outcome.applied and outcome.became_unavailable == () and outcome.stream_id is not None
    meta = cache.keys.meta(EVENT, BM)
    assert await redis_client.hget(meta, "removed_at") == format_ts(at(5)).encode()
    record = (await records(cache))[-1]
    assert (record.kind, record.scraped_at, record.changes) == ("removed", at(5), ())
    snap = await cache.get_snapshot(EVENT, BM)
    assert snap.markets == () and snap.last_scraped_at == at(5)

    # its re-delivery is a duplicate, an older scrape or removal delivered later is stale
    assert (await cache.mark_event_removed(EVENT, BM, at(5))).duplicate
    assert (await cache.mark_event_removed(EVENT, BM, at(4))).stale
    assert (await cache.apply_scrape(EVENT, BM, [ONE_X_TWO], at(3))).stale
    assert len(await records(cache)) == 1
    assert (await cache.apply_scrape(EVENT, BM, [ONE_X_TWO], at(6))).applied


# ---------------------------------------------------------------- batches and reads


async def test_apply_batch_reports_one_invalid_scrape_without_blocking_the_others(cache):
    batch = [
        Scrape(1, BM, [ONE_X_TWO], at(0)),
        Scrape(2, BM, [mk("18", 2.5, odds=0)], at(0)),  # invalid odds
        Scrape(3, "sportybet", [mk("18", 2.5)], at(0)),
        Scrape(4, BM, [mk("18", 10**400)], at(0)),  # a line no float can hold
        Scrape(5, BM, [], at(0)),
        Scrape(1, BM, [ONE_X_TWO], at(0)),  # duplicate of the first, in the same round trip
    ]
    outcomes = await cache.apply_batch(batch, removed=[Scrape(3, "sportybet", [], at(1))])
    assert [o.status for o in outcomes] == ["applied", "invalid", "applied", "invalid", "ignored_empty",
                                            "duplicate", "applied"]
    assert isinstance(outcomes[1].error, InvalidScrape)
    assert "odds" in str(outcomes[1].error) and "got 0" in str(outcomes[1].error)
    assert isinstance(outcomes[3].error, InvalidScrape)
    assert outcomes[6].became_unavailable == (MarketKey("18", 2.5),)
    assert [o.event_id for o in outcomes] == [1, 2, 3, 4, 5, 1, 3]
    snaps = await cache.get_snapshots([1, 2, 3, 4, 5])
    assert sorted(snaps) == [(1, BM), (3, "sportybet")]
    with pytest.raises(InvalidScrape, match="odds"):
        await cache.apply_scrape(**vars(batch[1]))


async def test_apply_batch_outcomes_match_apply_scrape(cache, key_prefix, redis_client):
    scrapes = [
        Scrape(EVENT, BM, [ONE_X_TWO, mk("18", 2.5)], at(0)),
        Scrape(EVENT, BM, [ONE_X_TWO, mk("18", 2.5, 2.0)], at(5)),
        Scrape(EVENT, BM, [ONE_X_TWO], at(10)),
    ]
    by_batch = await cache.apply_batch(scrapes)
    other = MarketCache(redis_client, prefix=key_prefix, shards=SHARDS)
    by_one = []
    for s in scrapes:
        by_one.append(await other.apply_scrape(s.event_id + 1, s.bookmaker, s.markets, s.scraped_at))
    assert [outcome_of(o) for o in by_batch] == [outcome_of(o) for o in by_one]


async def test_get_snapshots_of_many_events_and_bookmakers(cache):
    assert await cache.get_snapshot(EVENT, BM) is None
    assert await cache.get_snapshots([]) == {}
    await cache.apply_batch([
        Scrape(EVENT, BM, [ONE_X_TWO], at(0)),
        Scrape(EVENT, "sportybet", [mk("18", 2.5)], at(0)),
        Scrape(EVENT, "bet9ja", [mk("18", 0)], at(0)),
        Scrape(EVENT + 1, "bet9ja", [mk("18", None)], at(0)),
    ])
    every = await cache.get_snapshots([EVENT, EVENT + 1, EVENT + 2])
    assert sorted(every) == [(EVENT, "bet9ja"), (EVENT, BM), (EVENT, "sportybet"), (EVENT + 1, "bet9ja")]
    assert every[(EVENT, "sportybet")] == await cache.get_snapshot(EVENT, "sportybet")
    some = await cache.get_snapshots([EVENT, EVENT + 1], ["bet9ja", "unknown"])
    assert sorted(some) == [(EVENT, "bet9ja"), (EVENT + 1, "bet9ja")]
    assert some[(EVENT, "bet9ja")].markets[0].key == MarketKey("18", 0.0)
    assert await cache.bookmakers_of(EVENT) == ["bet9ja", BM, "sportybet"]
    assert await cache.bookmakers_of(EVENT + 2) == []
    shard = cache.keys.shard_of(EVENT)
    assert (EVENT, BM) in await cache.list_snapshots(shard)
    with pytest.raises(InvalidScrape, match="event_id"):
        await cache.get_snapshots([0])
    with pytest.raises(InvalidScrape, match="bookmaker"):
        await cache.get_snapshot(EVENT, "Bet Pawa")


async def test_bookmakers_of_does_not_match_longer_event_ids(cache):
    # 12 and 1234 share a prefix in the lexical index; the separator keeps them apart
    await cache.apply_batch([Scrape(12, BM, [ONE_X_TWO], at(0)), Scrape(12 + SHARDS * 10, "bet9ja", [ONE_X_TWO], at(0))])
    assert await cache.bookmakers_of(12) == [BM]
    assert await cache.bookmakers_of(1) == []


# ---------------------------------------------------------------- cold shards, scripts, expiry


async def test_cold_shard_refuses_and_writes_nothing(redis_client, key_prefix):
    cache = MarketCache(redis_client, prefix=key_prefix, shards=SHARDS)
    assert await cache.cold_shards() == list(range(SHARDS))
    with pytest.raises(CacheNotReady, match="cold"):
        await cache.apply_scrape(EVENT, BM, [ONE_X_TWO], at(0))
    with pytest.raises(CacheNotReady):
        await cache.mark_event_removed(EVENT, BM, at(0))
    [outcome] = await cache.apply_batch([Scrape(EVENT, BM, [ONE_X_TWO], at(0))])
    assert outcome.status == "cold" and isinstance(outcome.error, CacheNotReady) and not outcome.ok
    # only the deployment's config was recorded; no shard key exists
    assert list(await dump(redis_client, key_prefix)) == [cache.keys.config().encode()]

    warm_shards = [s for s in range(SHARDS) if s != cache.keys.shard_of(EVENT)]
    await cache.mark_ready(warm_shards, at=at(0))
    assert await cache.cold_shards() == [cache.keys.shard_of(EVENT)]
    outcomes = await cache.apply_batch([Scrape(EVENT, BM, [ONE_X_TWO], at(0)), Scrape(EVENT + 1, BM, [ONE_X_TWO], at(0))])
    assert [o.status for o in outcomes] == ["cold", "applied"]
    assert await cache.get_snapshot(EVENT, BM) is None

    await cache.mark_ready()
    assert await cache.cold_shards() == []
    assert (await cache.apply_scrape(EVENT, BM, [ONE_X_TWO], at(0))).applied


async def test_shard_count_is_fixed_per_deployment(cache, redis_client, key_prefix):
    other = MarketCache(redis_client, prefix=key_prefix, shards=SHARDS + 1)
    with pytest.raises(ConfigurationError, match="shards"):
        await other.apply_scrape(EVENT, BM, [ONE_X_TWO], at(0))


async def test_read_only_tools_never_create_a_deployment_under_a_mistyped_prefix(redis_client, key_prefix):
    typo = MarketCache(redis_client, prefix=key_prefix + "x")
    with pytest.raises(ConfigurationError, match=f"prefix '{key_prefix}x': no deployment here"):
        await typo.ensure_config(create=False)
    assert not await redis_client.exists(typo.keys.config())
    real = MarketCache(redis_client, prefix=key_prefix)
    await real.ensure_config()
    await MarketCache(redis_client, prefix=key_prefix).ensure_config(create=False)  # exists: fine


async def test_a_deployment_of_another_schema_is_refused(redis_client, key_prefix):
    # recorded by a version that stored schema-1 payloads (msgpack maps with field names)
    await redis_client.hset(f"{key_prefix}:config", mapping={"shards": str(SHARDS), "schema": "1"})
    before = await dump(redis_client, key_prefix)
    for create in (True, False):
        cache = MarketCache(redis_client, prefix=key_prefix, shards=SHARDS)
        with pytest.raises(ConfigurationError, match=r"format '1'.*warm a fresh prefix"):
            await cache.ensure_config(create=create)
    cache = MarketCache(redis_client, prefix=key_prefix, shards=SHARDS)
    with pytest.raises(ConfigurationError, match="schema"):
        await cache.apply_scrape(EVENT, BM, [ONE_X_TWO], at(0))
    assert await dump(redis_client, key_prefix) == before
    # a fresh deployment records the current schema
    fresh = MarketCache(redis_client, prefix=key_prefix + "n", shards=SHARDS)
    try:
        await fresh.ensure_config()
        assert await redis_client.hget(fresh.keys.config(), "schema") == SCHEMA_VERSION.encode() == b"2"
    finally:  # the harness cleans this test's own prefix only
        await redis_client.delete(fresh.keys.config())


async def test_scripts_survive_script_flush(cache, redis_client):
    assert (await cache.apply_scrape(EVENT, BM, [ONE_X_TWO, mk()], at(0))).applied
    await redis_client.script_flush()
    assert (await cache.apply_scrape(EVENT, BM, [ONE_X_TWO], at(5))).became_unavailable == (MarketKey("18", 2.5),)
    await redis_client.script_flush()
    outcomes = await cache.apply_batch([Scrape(EVENT, BM, [ONE_X_TWO, mk()], at(10)), Scrape(EVENT + 1, BM, [mk()], at(10))])
    assert [o.status for o in outcomes] == ["applied", "applied"]
    assert outcomes[0].became_available == (MarketKey("18", 2.5),)
    await redis_client.script_flush()
    [removed] = await cache.apply_batch([], removed=[Scrape(EVENT + 1, BM, [], at(15))])
    assert removed.became_unavailable == (MarketKey("18", 2.5),)


async def test_keys_expire_when_expires_at_is_given(cache, redis_client):
    now = datetime.now(UTC)
    await cache.apply_scrape(EVENT, BM, [ONE_X_TWO, mk()], now, expires_at=now + timedelta(hours=1))
    await cache.apply_scrape(EVENT, BM, [ONE_X_TWO], now + timedelta(seconds=1), expires_at=now + timedelta(hours=1))
    for key in (cache.keys.markets(EVENT, BM), cache.keys.unavailable(EVENT, BM), cache.keys.meta(EVENT, BM)):
        ttl = await redis_client.pttl(key)
        assert 3_500_000 < ttl <= 3_600_000, key
    await cache.apply_scrape(EVENT + 1, BM, [ONE_X_TWO], now)
    assert await redis_client.pttl(cache.keys.markets(EVENT + 1, BM)) == -1  # no expiry asked

    soon = datetime.now(UTC) + timedelta(milliseconds=300)
    await cache.apply_scrape(EVENT + 2, BM, [ONE_X_TWO, mk()], now, expires_at=soon)
    await cache.apply_scrape(EVENT + 2, BM, [ONE_X_TWO], now + timedelta(seconds=1), expires_at=soon)
    await asyncio.sleep(0.6)
    assert await cache.get_snapshot(EVENT + 2, BM) is None
    for key in (cache.keys.markets(EVENT + 2, BM), cache.keys.unavailable(EVENT + 2, BM), cache.keys.meta(EVENT + 2, BM)):
        assert not await redis_client.exists(key)
    # the change stream keeps the records: expiry never loses a change
    assert len([r for r in await records(cache, EVENT + 2) if r.event_id == EVENT + 2]) == 2


async def test_a_hash_created_by_a_later_scrape_keeps_the_snapshot_expiry(cache, redis_client):
    now = datetime.now(UTC)
    expires = now + timedelta(hours=1)
    await cache.apply_scrape(EVENT, BM, [ONE_X_TWO, mk()], now, expires_at=expires)
    assert not await redis_client.exists(cache.keys.unavailable(EVENT, BM))
    # the first stamp creates the unavailable hash, from a scrape that names no expiry
    await cache.apply_scrape(EVENT, BM, [ONE_X_TWO], now + timedelta(seconds=1))
    assert await stamps(cache)
    for key in (cache.keys.markets(EVENT, BM), cache.keys.unavailable(EVENT, BM), cache.keys.meta(EVENT, BM)):
        assert 3_500_000 < await redis_client.pttl(key) <= 3_600_000, key


async def test_expired_snapshots_leave_the_shard_index(cache, redis_client):
    now = datetime.now(UTC)
    await cache.apply_scrape(EVENT, BM, [ONE_X_TWO], now, expires_at=now + timedelta(milliseconds=200))
    await cache.apply_scrape(EVENT + cache.keys.shards, BM, [ONE_X_TWO], now)  # same shard, no expiry
    shard = cache.keys.shard_of(EVENT)
    assert sorted(await cache.list_snapshots(shard)) == [(EVENT, BM), (EVENT + cache.keys.shards, BM)]
    await asyncio.sleep(0.4)
    assert await cache.list_snapshots(shard) == [(EVENT + cache.keys.shards, BM)]
    assert await redis_client.zcard(cache.keys.snapshots(shard)) == 1


# ---------------------------------------------------------------- change records


async def test_one_change_record_per_applied_scrape_and_none_for_refused_ones(cache):
    outcomes = [
        await cache.apply_scrape(EVENT, BM, [ONE_X_TWO, mk("18", 2.5), mk("18", 0.0)], at(0)),  # new
        await cache.apply_scrape(EVENT, BM, [ONE_X_TWO, mk("18", 2.5), mk("18", 0.0)], at(1)),  # confirmed only
        await cache.apply_scrape(EVENT, BM, [ONE_X_TWO, mk("18", 2.5, 2.0)], at(2)),  # changed + stamp
        await cache.apply_scrape(EVENT, BM, [ONE_X_TWO], at(1.5)),  # stale: no record
        await cache.apply_scrape(EVENT, BM, [], at(3)),  # ignored: no record
        await cache.apply_scrape(EVENT, BM, [mk("18", 0.0)], at(4), complete=False),  # returns, partial
        await cache.mark_event_removed(EVENT, BM, at(5)),  # stamps all
        await cache.mark_event_removed(EVENT, BM, at(6)),  # nothing left to stamp: a record all the same,
        # so PostgreSQL's last applied scrape time keeps up with Redis's
    ]
    assert [o.status for o in outcomes] == ["applied"] * 3 + ["stale", "ignored_empty"] + ["applied"] * 3
    recs = await records(cache)
    with_record = [o for o in outcomes if o.stream_id]
    assert [r.stream_id for r in recs] == [o.stream_id for o in with_record]
    assert [r.scraped_at for r in recs] == [at(0), at(1), at(2), at(4), at(5), at(6)]
    assert [(r.kind, r.completeness) for r in recs] == [
        ("scrape", "complete"), ("scrape", "complete"), ("scrape", "complete"), ("scrape", "partial"),
        ("removed", "empty"), ("removed", "empty"),
    ]
    assert all((r.event_id, r.bookmaker) == (EVENT, BM) for r in recs)

    first, confirm, change, partial, removed, removed_again = recs
    assert removed_again.changes == () and removed_again.present == ()
    assert first.present == (MarketKey("1", None), MarketKey("18", 2.5), MarketKey("18", 0.0))
    assert [(c.key, c.is_new, c.odds_changed) for c in first.changes] == [
        (MarketKey("1", None), True, True), (MarketKey("18", 2.5), True, True), (MarketKey("18", 0.0), True, True)]
    assert first.changes[0].market == coerce_market(ONE_X_TWO)
    assert confirm.changes == () and len(confirm.present) == 3
    by_key = {c.key: c for c in change.changes}
    assert set(by_key) == {MarketKey("18", 2.5), MarketKey("18", 0.0)}
    assert by_key[MarketKey("18", 2.5)].odds_changed and not by_key[MarketKey("18", 2.5)].is_new
    gone = by_key[MarketKey("18", 0.0)]
    assert gone.became_unavailable and not gone.odds_changed
    assert gone.market == dataclasses.replace(coerce_market(mk("18", 0.0)), unavailable_at=at(2))
    assert change.transitions == [(MarketKey("18", 0.0), "became_unavailable")]
    assert partial.transitions == [(MarketKey("18", 0.0), "became_available")]
    assert [c.odds_changed for c in partial.changes] == [False]
    assert Counter(removed.transitions) == Counter([(MarketKey("1", None), "became_unavailable"),
                                                    (MarketKey("18", 0.0), "became_unavailable"),
                                                    (MarketKey("18", 2.5), "became_unavailable")])


def redis_cli() -> str:
    try:
        return find_redis_cli(shutil.which("redis-server"))
    except ServerStartError as exc:
        pytest.skip(str(exc))


async def test_unavailable_stamps_are_readable_with_redis_cli(cache, redis_url):
    cli = redis_cli()
    await cache.apply_scrape(EVENT, BM, [ONE_X_TWO, mk("18", 2.5), mk("18", 0.0)], at(0))
    await cache.apply_scrape(EVENT, BM, [ONE_X_TWO], at(5) + timedelta(microseconds=7))
    key = cache.keys.unavailable(EVENT, BM)
    out = subprocess.run([cli, "-u", redis_url, "--no-raw", "HGETALL", key],
                         capture_output=True, text=True, check=True, timeout=10).stdout
    lines = sorted(line.split(") ", 1)[1].strip('"') for line in out.strip().splitlines())
    assert lines == ["18@0.0", "18@2.5", "2026-11-28T12:05:00.000007Z", "2026-11-28T12:05:00.000007Z"]
    raw = subprocess.run([cli, "-u", redis_url, "HGET", key, "18@0.0"],
                         capture_output=True, text=True, check=True, timeout=10).stdout
    assert raw.strip() == "2026-11-28T12:05:00.000007Z"


def documented_keys() -> list[tuple[str, str]]:
    """``(key, type)`` of each line in the key schema's docstring."""
    out = []
    for line in keys_module.__doc__.splitlines():
        m = re.match(r"^\s+(\{av:\S+|av:\S+)\s+(hash|zset|stream|string)\b", line)
        if m:
            out.append((m.group(1), m.group(2)))
    return out


async def test_key_names_match_the_documented_schema(redis_client, key_prefix):
    documented = documented_keys()
    assert len(documented) == 8
    cache = MarketCache(redis_client, prefix=key_prefix, shards=16)  # the docstring's deployment
    await cache.mark_ready()
    await cache.apply_scrape(1234, "betpawa", [ONE_X_TWO, mk("18", 2.5)], at(0))
    await cache.apply_scrape(1234, "betpawa", [ONE_X_TWO], at(5))

    def ours(name: str) -> str:
        return name.replace("{av:", "{" + key_prefix + ":").replace("av:config", f"{key_prefix}:config")

    expected_types = {ours(k): t for k, t in documented}
    present = await dump(redis_client, key_prefix)
    ready = {cache.keys.ready(s) for s in range(16)}
    for name, (kind, _, _) in present.items():
        name = name.decode()
        if name in ready:
            assert kind == "string"
            continue
        assert name in expected_types, f"{name} is not in the documented schema"
        assert kind == expected_types[name], name
    # every documented key but the flusher's dead-letter stream now exists
    assert {ours(k) for k, _ in documented} - {k.decode() for k in present} == {ours("{av:2}:dead")}
    # and the market field encodings are the documented ones
    assert set(await redis_client.hkeys(cache.keys.markets(1234, "betpawa"))) == {b"1@_", b"18@2.5"}
    assert await redis_client.zrange(cache.keys.snapshots(2), 0, -1) == [b"1234:betpawa"]
    assert await redis_client.hget(cache.keys.config(), "shards") == b"16"


def test_key_schema_matches_the_docstring_example():
    schema = KeySchema("av", 16)
    snap = schema.snapshot(1234, "betpawa")
    documented = [k for k, _ in documented_keys()]
    assert snap.markets in documented and snap.unavailable in documented and snap.meta in documented
    assert {schema.snapshots(2), schema.changes(2), schema.dead_letters(2), schema.ready(2), schema.config()} <= set(documented)
    assert schema.scan_pattern() == "{av:*"
    assert key_to_field(market_key("18", 2.5)) == "18@2.5"
    assert key_to_field(market_key("1", None)) == "1@_"
    assert key_to_field(market_key("18", 0)) == "18@0.0"


# ---------------------------------------------------------------- bad input writes nothing

VALID = [ONE_X_TWO, mk("18", 2.5)]


def with_market(**changes: Any) -> dict:
    return {"markets": [ONE_X_TWO, {**mk("18", 2.5), **changes}]}


def with_outcome(**changes: Any) -> dict:
    market = mk("18", 2.5)
    market["outcomes"] = [{**market["outcomes"][0], **changes}, market["outcomes"][1]]
    return {"markets": [ONE_X_TWO, market]}


BAD_INPUT = [
    # (id, changes to a valid scrape, field named in the error, value named in the error)
    ("event_id_zero", {"event_id": 0}, "event_id", 0),
    ("event_id_too_small", {"event_id": -(2**53)}, "event_id", -(2**53)),
    ("event_id_text", {"event_id": "1234"}, "event_id", "1234"),
    ("event_id_bool", {"event_id": True}, "event_id", True),
    ("event_id_float", {"event_id": 1234.0}, "event_id", 1234.0),
    ("event_id_too_big", {"event_id": 2**53}, "event_id", 2**53),
    ("bookmaker_upper", {"bookmaker": "BetPawa"}, "bookmaker", "BetPawa"),
    ("bookmaker_space", {"bookmaker": "bet pawa"}, "bookmaker", "bet pawa"),
    ("bookmaker_empty", {"bookmaker": ""}, "bookmaker", ""),
    ("bookmaker_none", {"bookmaker": None}, "bookmaker", None),
    ("bookmaker_hash_tag", {"bookmaker": "x}{y"}, "bookmaker", "x}{y"),
    ("bookmaker_newline", {"bookmaker": "betpawa\n"}, "bookmaker", "betpawa\n"),
    ("bookmaker_too_long", {"bookmaker": "b" * 41}, "bookmaker", "b" * 41),
    ("scraped_at_naive", {"scraped_at": datetime(2026, 11, 28, 12, 0)}, "scraped_at", datetime(2026, 11, 28, 12, 0)),
    ("scraped_at_text", {"scraped_at": "2026-11-28T12:00:00Z"}, "scraped_at", "2026-11-28T12:00:00Z"),
    ("expires_at_naive", {"expires_at": datetime(2026, 11, 29)}, "expires_at", datetime(2026, 11, 29)),
    ("complete_not_bool", {"complete": 1}, "complete", 1),
    ("confirmed_empty_not_bool", {"confirmed_empty": "yes", "markets": []}, "confirmed_empty", "yes"),
    ("markets_none", {"markets": None}, "markets", None),
    ("markets_mapping", {"markets": {"18@2.5": mk()}}, "markets", {"18@2.5": mk()}),
    ("markets_text", {"markets": "18"}, "markets", "18"),
    ("market_not_mapping", {"markets": [ONE_X_TWO, 42]}, "betpawa_market_id", None),
    ("market_id_empty", with_market(betpawa_market_id=""), "betpawa_market_id", ""),
    ("market_id_missing", with_market(betpawa_market_id=None), "betpawa_market_id", None),
    ("market_id_spaces", with_market(betpawa_market_id=" 18"), "betpawa_market_id", " 18"),
    ("market_id_float", with_market(betpawa_market_id=18.0), "betpawa_market_id", 18.0),
    ("market_id_nul", with_market(betpawa_market_id="18\x00"), "betpawa_market_id", "18\x00"),
    ("market_id_surrogate", with_market(betpawa_market_id="18\ud800"), "betpawa_market_id", "18\ud800"),
    ("market_id_too_long", with_market(betpawa_market_id="1" * 201), "betpawa_market_id", "1" * 201),
    ("line_text", with_market(line="over"), "line", "over"),
    ("line_nan", with_market(line=float("nan")), "line", float("nan")),
    ("line_inf", with_market(line=float("inf")), "line", float("inf")),
    ("line_bool", with_market(line=True), "line", True),
    ("line_empty", with_market(line=""), "line", ""),
    ("name_number", with_market(betpawa_market_name=18), "betpawa_market_name", 18),
    ("name_surrogate", with_market(betpawa_market_name="Over\udc80Under"), "betpawa_market_name", "Over\udc80Under"),
    ("name_newline", with_market(betpawa_market_name="Over/\nUnder"), "betpawa_market_name", "Over/\nUnder"),
    ("name_too_long", with_market(betpawa_market_name="n" * 501), "betpawa_market_name", "n" * 501),
    ("outcomes_text", with_market(outcomes="Over 1.85"), "outcomes", "Over 1.85"),
    ("outcomes_mapping", with_market(outcomes={"name": "Over", "odds": 1.85}), "outcomes", {"name": "Over", "odds": 1.85}),
    ("outcomes_none", with_market(outcomes=None), "outcomes", None),
    ("outcome_not_mapping", with_market(outcomes=[1.85]), "outcomes[0]", 1.85),
    ("outcome_name_empty", with_outcome(name=""), "name", ""),
    ("outcome_name_missing", with_outcome(name=None), "name", None),
    ("outcome_name_number", with_outcome(name=1), "name", 1),
    ("outcome_name_surrogate", with_outcome(name="\ud800"), "name", "\ud800"),
    ("outcome_name_nul", with_outcome(name="Over\x00"), "name", "Over\x00"),
    ("odds_zero", with_outcome(odds=0), "odds", 0),
    ("odds_negative", with_outcome(odds=-1.5), "odds", -1.5),
    ("odds_nan", with_outcome(odds=float("nan")), "odds", float("nan")),
    ("odds_inf", with_outcome(odds=float("inf")), "odds", float("inf")),
    ("odds_bool", with_outcome(odds=True), "odds", True),
    ("odds_text", with_outcome(odds="1.8.5"), "odds", "1.8.5"),
    ("odds_text_zero", with_outcome(odds="0.00"), "odds", "0.00"),
    ("odds_missing", with_outcome(odds=None), "odds", None),
    ("odds_huge_int", with_outcome(odds=10**400), "odds", 10**400),
    ("is_active_int", with_outcome(is_active=2), "is_active", 2),
    ("is_active_text", with_outcome(is_active="true"), "is_active", "true"),
    ("is_active_none", with_outcome(is_active=None), "is_active", None),
    ("market_groups_text", with_market(market_groups="main"), "market_groups", "main"),
    ("market_groups_numbers", with_market(market_groups=["main", 7]), "market_groups", 7),
    ("market_groups_control", with_market(market_groups=["main", "goals\x1b"]), "market_groups[1]", "goals\x1b"),
    ("handicap_type_tab", with_market(handicap_type="asian\t"), "handicap_type", "asian\t"),
    ("handicap_home_text", with_market(handicap_home="0.5"), "handicap_home", "0.5"),
    ("handicap_type_number", with_market(handicap_type=1), "handicap_type", 1),
    ("confirmed_empty_with_markets", {"confirmed_empty": True}, "confirmed_empty", True),
]


@pytest.mark.parametrize(("changes", "field", "value"), [b[1:] for b in BAD_INPUT], ids=[b[0] for b in BAD_INPUT])
async def test_bad_input_is_rejected_naming_field_and_value_and_writes_nothing(
    redis_client, key_prefix, changes, field, value
):
    bad = dataclasses.replace(Scrape(EVENT, BM, VALID, at(10)), **changes)
    cache = MarketCache(redis_client, prefix=key_prefix, shards=SHARDS)

    def check(error: BaseException) -> None:
        message = str(error)
        assert isinstance(error, InvalidScrape)
        assert f"{field}:" in message, message
        assert repr(value)[:80] in message, message  # long values are cut to 80 characters

    # on an untouched deployment: not a single key appears
    with pytest.raises(InvalidScrape) as info:
        await cache.apply_scrape(**vars(bad))
    check(info.value)
    assert await dump(redis_client, key_prefix) == {}

    # after a valid state exists: nothing changes, the stream included
    await cache.mark_ready()
    await cache.apply_scrape(EVENT, BM, [ONE_X_TWO, mk("18", 2.5), mk("18", 3.5)], at(0))
    before = await dump(redis_client, key_prefix)
    with pytest.raises(InvalidScrape) as info:
        await cache.apply_scrape(**vars(bad))
    check(info.value)
    [outcome] = await cache.apply_batch([bad])
    assert outcome.status == "invalid" and not outcome.ok
    check(outcome.error)
    assert await dump(redis_client, key_prefix) == before


async def test_bad_input_to_mark_event_removed(cache, redis_client, key_prefix):
    before = await dump(redis_client, key_prefix)
    with pytest.raises(InvalidScrape, match=r"^at: .*naive"):
        await cache.mark_event_removed(EVENT, BM, datetime(2026, 11, 28))
    with pytest.raises(InvalidScrape, match=r"bookmaker: .*'Bet9ja'"):
        await cache.mark_event_removed(EVENT, "Bet9ja", at(0))
    assert await dump(redis_client, key_prefix) == before


# ---------------------------------------------------------------- the script's own validation


def script_args(event_id: int, markets: list[dict], when: datetime, completeness: str = "complete",
                mode: str = "scrape") -> list[Any]:
    """ARGV as apply_scrape.lua's header documents it."""
    coerced = [coerce_market(m) for m in markets]
    fields = [key_to_field(m.key) for m in coerced]
    args: list[Any] = [mode, str(event_id), BM, str(to_micros(when)), format_ts(when), completeness, "0",
                       msgpack.packb(fields, use_bin_type=True), "digest-of-the-call", str(len(coerced))]
    for f, m in zip(fields, coerced):
        args += [f, encode_market(m)]
    return args


def bad_argv(good: list[Any]) -> dict[str, list[Any]]:
    other_market = encode_market(coerce_market(mk("77")))
    return {
        "missing_payload": good[:-1],
        "extra_argument": good + ["extra"],
        "too_few_arguments": good[:5],
        "bad_completeness": good[:5] + ["full"] + good[6:],
        "bad_mode": ["upsert"] + good[1:],
        "duplicate_field": good[:9] + ["2"] + good[10:12] + good[10:12],
        "scraped_us_decimal": good[:3] + ["1795867200000000.5"] + good[4:],
        "scraped_us_negative": good[:3] + ["-1"] + good[4:],
        "scraped_us_text": good[:3] + ["soon"] + good[4:],
        "scraped_us_empty": good[:3] + [""] + good[4:],
        "scraped_iso_short": good[:4] + ["2026-11-28"] + good[5:],
        "event_id_text": good[:1] + ["abc"] + good[2:],
        "bookmaker_empty": good[:2] + [""] + good[3:],
        "expire_negative": good[:6] + ["-1"] + good[7:],
        "digest_empty": good[:8] + [""] + good[9:],
        "n_not_integer": good[:9] + ["two"] + good[10:],
        "n_mismatch": good[:9] + ["3"] + good[10:],
        "field_without_at": good[:10] + ["18"] + good[11:],
        "empty_payload": good[:11] + [b""] + good[12:],
        "payload_not_msgpack_of_a_market": good[:11] + [b"garbage"] + good[12:],
        "payload_truncated": good[:11] + [good[11][:-3]] + good[12:],
        "payload_with_trailing_bytes": good[:11] + [good[11] + b"\x01"] + good[12:],
        "payload_of_another_market": good[:11] + [other_market] + good[12:],
        "payload_msgpack_map": good[:11] + [msgpack.packb({"betpawa_market_id": "1"})] + good[12:],
        "complete_without_markets": good[:9] + ["0"],
        "empty_with_markets": good[:5] + ["empty"] + good[6:],
        "removed_with_markets": ["removed"] + good[1:5] + ["empty"] + good[6:],
        "removed_partial": ["removed"] + good[1:5] + ["partial"] + good[6:9] + ["0"],
    }


async def test_script_rejects_bad_argv_and_writes_nothing(cache, redis_client, key_prefix):
    await cache.apply_scrape(EVENT, BM, [ONE_X_TWO, mk("18", 2.5), mk("18", 3.5)], at(0))
    await cache.apply_scrape(EVENT, BM, [ONE_X_TWO, mk("18", 2.5)], at(5))
    sha = await redis_client.script_load(cache.script.source)
    keys = cache.keys.snapshot(EVENT, BM).as_list()
    good = script_args(EVENT, [ONE_X_TWO, mk("18", 3.5, 2.4)], at(10))
    before = await dump(redis_client, key_prefix)
    cases = bad_argv(good)
    for name, argv in cases.items():
        with pytest.raises(ResponseError, match="availability: ") as info:
            await redis_client.evalsha(sha, len(keys), *keys, *argv)
        assert await dump(redis_client, key_prefix) == before, f"{name} wrote something: {info.value}"
    with pytest.raises(ResponseError, match="expected 6 keys"):
        await redis_client.evalsha(sha, 5, *keys[:5], *good)
    assert await dump(redis_client, key_prefix) == before

    # the good call from which every bad one was derived does apply
    reply = await redis_client.evalsha(sha, len(keys), *keys, *good)
    assert reply[0] == b"applied" and reply[5] == [b"18@3.5"]
    assert len(cases) >= 20


# ---------------------------------------------------------------- the old system's failures


async def test_empty_successful_scrape_never_stamps_failure_1(cache, redis_client, key_prefix):
    await cache.apply_scrape(EVENT, BM, [ONE_X_TWO, mk("18", 2.5), mk("18", 3.5)], at(0))
    before = await dump(redis_client, key_prefix)
    assert (await cache.apply_scrape(EVENT, BM, [], at(5))).status == "ignored_empty"
    summary = await EventCoordinator(cache).store_batch_results([
        ScrapeResult(EVENT, BM, [], at(6)),  # "successful" but empty
        ScrapeResult(EVENT, BM, None, at(7), error="timeout"),  # failed fetch
        {"event_id": EVENT, "bookmaker": BM, "markets": [], "scraped_at": at(8), "complete": False},
    ])
    assert (summary.ignored_empty, summary.failed_fetches, summary.became_unavailable) == (2, 1, 0)
    assert await dump(redis_client, key_prefix) == before
    snap = await cache.get_snapshot(EVENT, BM)
    assert len(snap.available_markets) == 3 and snap.last_scraped_at == at(0)
    # the clock did not move: a later real scrape still applies and detects from the same state
    outcome = await cache.apply_scrape(EVENT, BM, [ONE_X_TWO], at(1))
    assert outcome.became_unavailable == (MarketKey("18", 2.5), MarketKey("18", 3.5))


async def test_updates_carry_line_so_only_that_line_is_stamped_failure_2(cache):
    lines = [mk("18", x) for x in (0.5, 1.5, 2.5, 3.5)]
    await cache.apply_scrape(EVENT, BM, [ONE_X_TWO, *lines, mk("18", None, name="Total goals")], at(0))
    outcome = await cache.apply_scrape(EVENT, BM, [ONE_X_TWO, *[m for m in lines if m["line"] != 2.5],
                                                   mk("18", None, name="Total goals")], at(5))
    assert outcome.became_unavailable == (MarketKey("18", 2.5),)
    snap = await cache.get_snapshot(EVENT, BM)
    assert [m.key for m in snap.unavailable_markets] == [MarketKey("18", 2.5)]
    assert [m.key for m in snap.available_markets] == [
        MarketKey("1", None), MarketKey("18", None), MarketKey("18", 0.5), MarketKey("18", 1.5), MarketKey("18", 3.5)]
    assert await stamps(cache) == {"18@2.5": format_ts(at(5))}
    [record] = [r for r in await records(cache) if r.scraped_at == at(5)]
    assert record.transitions == [(MarketKey("18", 2.5), "became_unavailable")]
    assert record.changes[0].market.line == 2.5


async def test_none_and_zero_lines_are_different_markets_failure_3(cache):
    no_line, zero = mk("18", None, 1.5), mk("18", 0.0, 2.5)
    first = await cache.apply_scrape(EVENT, BM, [no_line, zero, mk("18", -0.0, 2.5)], at(0))
    assert first.new == 2
    snap = await cache.get_snapshot(EVENT, BM)
    assert snap.market("18", None).outcomes[0]["odds"] == 1.5
    assert snap.market("18", 0).outcomes[0]["odds"] == 2.5
    assert set(await cache.client.hkeys(cache.keys.markets(EVENT, BM))) == {b"18@_", b"18@0.0"}

    only_zero = await cache.apply_scrape(EVENT, BM, [zero], at(5))
    assert only_zero.became_unavailable == (MarketKey("18", None),)
    only_none = await cache.apply_scrape(EVENT, BM, [no_line], at(10))
    assert only_none.became_available == (MarketKey("18", None),)
    assert only_none.became_unavailable == (MarketKey("18", 0.0),)
    snap = await cache.get_snapshot(EVENT, BM)
    assert snap.market("18", None).is_available and snap.market("18", 0.0).unavailable_at == at(10)


async def test_split_outcome_rows_are_merged_failure_4(cache):
    def row(*outcomes, groups=None):
        return {"betpawa_market_id": "1", "betpawa_market_name": "1X2", "line": None,
                "outcomes": [{"name": n, "odds": o} for n, o in outcomes], "market_groups": groups}

    rows = [row(("1", 2.1), groups=["main"]), row(("X", 3.2)), row(("2", 3.6), groups=["popular"])]
    first = await cache.apply_scrape(EVENT, BM, rows, at(0))
    assert (first.new, first.changed, first.unchanged) == (1, 0, 0)
    market = (await cache.get_snapshot(EVENT, BM)).market("1")
    assert [(o["name"], o["odds"]) for o in market.outcomes] == [("1", 2.1), ("X", 3.2), ("2", 3.6)]
    assert market.market_groups == ["main", "popular"]
    again = await cache.apply_scrape(EVENT, BM, list(rows), at(5))
    assert (again.new, again.changed, again.unchanged) == (0, 0, 1)
    moved = await cache.apply_scrape(EVENT, BM, [rows[0], row(("X", 3.4)), rows[2]], at(10))
    assert moved.changed == 1
    market = (await cache.get_snapshot(EVENT, BM)).market("1")
    assert [(o["name"], o["odds"]) for o in market.outcomes] == [("1", 2.1), ("X", 3.4), ("2", 3.6)]


async def test_concurrent_writers_cannot_clobber_failure_5(redis_client, redis_url, key_prefix, cache):
    # Two writers with their own connections: one stamping (a complete scrape
    # without 18@2.5), one updating odds from an older scrape. Whatever the
    # arrival order, the newer scrape decides, and the older one is refused.
    direct = MarketCache(aioredis.Redis.from_url(redis_url), prefix=key_prefix, shards=SHARDS)
    queued = MarketCache(aioredis.Redis.from_url(redis_url), prefix=key_prefix, shards=SHARDS)
    try:
        events = list(range(1, 41))
        await cache.apply_batch([Scrape(e, BM, [ONE_X_TWO, mk("18", 2.5)], at(0)) for e in events])
        stamp = {e: Scrape(e, BM, [ONE_X_TWO], at(10)) for e in events}
        update = {e: Scrape(e, BM, [ONE_X_TWO, mk("18", 2.5, 2.6)], at(5)) for e in events}
        tasks = []
        for e in events:
            first, second = (stamp[e], update[e]) if e % 2 else (update[e], stamp[e])
            tasks.append(direct.apply_scrape(**vars(first)))
            tasks.append(queued.apply_batch([second]))
        await asyncio.gather(*tasks)
        for e in events:
            snap = await cache.get_snapshot(e, BM)
            stamped = snap.market("18", 2.5)
            assert stamped.unavailable_at == at(10), e
            assert snap.last_scraped_at == at(10)
            # the update was applied first (then stamped) or refused as stale; never after the stamp
            assert stamped.outcomes[0]["odds"] in (1.85, 2.6)
            recs = [r for r in await records(cache, e) if r.event_id == e]
            assert [r.scraped_at for r in recs] == sorted(r.scraped_at for r in recs)
    finally:
        await direct.client.aclose()
        await queued.client.aclose()


async def test_returning_markets_are_cleared_failure_7(cache):
    await cache.apply_scrape(EVENT, BM, [ONE_X_TWO, mk("18", 2.5), mk("18", 3.5)], at(0))
    await cache.apply_scrape(EVENT, BM, [ONE_X_TWO], at(5))
    await cache.mark_event_removed(EVENT, BM, at(10))
    back = await cache.apply_scrape(EVENT, BM, [ONE_X_TWO, mk("18", 2.5)], at(15))
    assert back.became_available == (MarketKey("1", None), MarketKey("18", 2.5))
    snap = await cache.get_snapshot(EVENT, BM)
    assert [m.key for m in snap.available_markets] == [MarketKey("1", None), MarketKey("18", 2.5)]
    assert snap.market("18", 3.5).unavailable_at == at(5)
    assert await stamps(cache) == {"18@3.5": format_ts(at(5))}
    record = (await records(cache))[-1]
    assert Counter(record.transitions) == Counter([(MarketKey("1", None), "became_available"),
                                                   (MarketKey("18", 2.5), "became_available")])


async def test_event_removed_from_listing_is_stamped_but_failed_discovery_stamps_nothing_failure_8(
    cache, redis_client, key_prefix
):
    coordinator = EventCoordinator(cache)
    events = [101, 102, 103, 104]
    await cache.apply_batch([Scrape(e, "sportybet", [ONE_X_TWO, mk()], at(0)) for e in events]
                            + [Scrape(102, BM, [ONE_X_TWO], at(0))])
    before = await dump(redis_client, key_prefix)

    # discovery failed, or came back empty (which looks the same): nothing is stamped
    assert await coordinator.reconcile_listing("sportybet", [101, 103], at(5), listing_ok=False) == []
    assert await coordinator.reconcile_listing("sportybet", [], at(5)) == []
    assert await dump(redis_client, key_prefix) == before

    outcomes = await coordinator.reconcile_listing("sportybet", [101, 103, 999], at(5))
    assert sorted(o.event_id for o in outcomes) == [102, 104]
    assert all(o.became_unavailable == (MarketKey("1", None), MarketKey("18", 2.5)) for o in outcomes)
    for e in (102, 104):
        assert all(m.unavailable_at == at(5) for m in (await cache.get_snapshot(e, "sportybet")).markets)
    for e in (101, 103):
        assert all(m.is_available for m in (await cache.get_snapshot(e, "sportybet")).markets)
    # other bookmakers' snapshots of a removed event are untouched
    assert (await cache.get_snapshot(102, BM)).market("1").is_available
    # the same removal again stamps nothing new
    again = await coordinator.reconcile_listing("sportybet", [101, 103], at(10))
    assert all(o.applied and o.became_unavailable == () for o in again)

    # the same through the cache directly
    removed = await cache.mark_event_removed(101, "sportybet", at(15))
    assert removed.became_unavailable == (MarketKey("1", None), MarketKey("18", 2.5))


async def test_transitions_are_in_the_change_stream_failure_9(cache):
    sequence = [
        Scrape(EVENT, BM, [ONE_X_TWO, mk("18", 2.5), mk("18", 0.0)], at(0)),
        Scrape(EVENT, BM, [ONE_X_TWO, mk("18", 0.0)], at(5)),
        Scrape(EVENT, BM, [ONE_X_TWO, mk("18", 2.5)], at(10)),
        Scrape(EVENT, BM, [mk("18", 0.0)], at(12), complete=False),
        Scrape(EVENT, BM, [], at(15), confirmed_empty=True),
    ]
    reported = []
    for s in sequence:
        o = await cache.apply_scrape(**vars(s))
        reported += [(k, "became_unavailable", o.scraped_at) for k in o.became_unavailable]
        reported += [(k, "became_available", o.scraped_at) for k in o.became_available]
    o = await cache.mark_event_removed(EVENT, BM, at(20))
    assert o.became_unavailable == ()
    in_stream = [(k, kind, r.scraped_at) for r in await records(cache) for k, kind in r.transitions]
    assert Counter(in_stream) == Counter(reported)
    assert len(in_stream) == 7
    stamped = {(k, t) for k, kind, t in in_stream if kind == "became_unavailable"}
    assert (MarketKey("18", 2.5), at(5)) in stamped and (MarketKey("18", 0.0), at(10)) in stamped


async def test_manual_and_scheduled_scrape_at_once_failure_10(redis_client, redis_url, key_prefix, cache):
    # A manual scrape and the scheduled cycle, each with its own cache object
    # and connection, race on the same events with interleaved timestamps.
    manual = MarketCache(aioredis.Redis.from_url(redis_url), prefix=key_prefix, shards=SHARDS)
    scheduled = MarketCache(aioredis.Redis.from_url(redis_url), prefix=key_prefix, shards=SHARDS)
    try:
        events = [7001, 7002, 7003]
        offers = [
            [ONE_X_TWO, mk("18", 2.5), mk("18", 3.5)],
            [ONE_X_TWO, mk("18", 2.5, 1.9)],
            [ONE_X_TWO, mk("18", 3.5), mk("18", 0.0)],
            [mk("18", 2.5)],
            [ONE_X_TWO, mk("18", 2.5), mk("18", 3.5), mk("18", 0.0)],
        ]
        scrapes = [Scrape(e, BM, offers[i % len(offers)], at(i)) for e in events for i in range(12)]
        manual_part, scheduled_part = scrapes[::2], scrapes[1::2]
        outcomes = await asyncio.gather(
            *(manual.apply_scrape(**vars(s)) for s in manual_part),
            scheduled.apply_batch(scheduled_part[: len(scheduled_part) // 2]),
            scheduled.apply_batch(scheduled_part[len(scheduled_part) // 2:]),
            *(scheduled.apply_scrape(**vars(s)) for s in reversed(manual_part)),  # duplicates, in reverse
        )
        flat = [o for x in outcomes for o in (x if isinstance(x, list) else [x])]
        applied = sorted((o for o in flat if o.applied), key=lambda o: (o.event_id, o.scraped_at))
        # each scrape applied at most once
        assert len({(o.event_id, o.scraped_at) for o in applied}) == len(applied)
        # folding the reference over exactly the applied scrapes gives the cached state
        ref = ReferenceCache()
        by_time = {(s.event_id, s.scraped_at): s for s in scrapes}
        transitions = []
        for o in applied:
            expected = ref.apply(by_time[(o.event_id, o.scraped_at)])
            assert outcome_of(o) == expected
            transitions += [(o.event_id, k, o.scraped_at) for k in o.became_unavailable + o.became_available]
        for e in events:
            assert await cache.get_snapshot(e, BM) == ref.snapshot(e, BM)
            assert (await cache.get_snapshot(e, BM)).last_scraped_at == at(11)
        assert len(transitions) == len(set(transitions))
    finally:
        await manual.client.aclose()
        await scheduled.client.aclose()
