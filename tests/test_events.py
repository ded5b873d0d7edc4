"""Events: a snapshot's removed_at, and negative (competitor-only) event ids end to end.

Real Redis (the Lua scripts) and, for the flush and warm-up, real PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg.rows import dict_row
from redis.exceptions import ResponseError

from availability.cache import MarketCache, Scrape
from availability.errors import InvalidScrape
from availability.flusher import Flusher
from availability.keys import KeySchema, REDELIVERY_FIELDS, validate_event_id
from availability.model import CachedMarket, CachedSnapshot, MarketKey, format_ts
from availability.records import decode_record
from availability.verify import verify
from availability.warm import warm

UTC = timezone.utc
T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SHARDS = 4


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def market(market_id: str, line: float | None = None, odds: float = 1.85) -> CachedMarket:
    return CachedMarket(market_id, f"Market {market_id}", line, None, None, None,
                        [{"name": "Home", "odds": odds, "is_active": True}], None)


@pytest.fixture
async def cache(redis_client, key_prefix):
    cache = MarketCache(redis_client, prefix=key_prefix, shards=SHARDS)
    await cache.mark_ready()
    return cache


# ---------------------------------------------------------------- removed_at


def test_removed_at_is_the_last_field_and_defaults_to_none():
    snap = CachedSnapshot(1, "betpawa", T0, T0, (), T0)
    assert snap.removed_at is None
    assert CachedSnapshot(1, "betpawa", T0, T0, (), T0, T0).removed_at == T0


async def test_removed_at_tells_a_removed_event_from_one_whose_markets_all_disappeared(cache):
    await cache.apply_scrape(1, "betpawa", [market("1"), market("18", 2.5)], at(0))
    await cache.apply_scrape(2, "betpawa", [market("1"), market("18", 2.5)], at(0))

    await cache.mark_event_removed(1, "betpawa", at(5))
    await cache.apply_scrape(2, "betpawa", [], at(5), confirmed_empty=True)  # every market gone, still listed

    removed, emptied = await cache.get_snapshot(1, "betpawa"), await cache.get_snapshot(2, "betpawa")
    assert removed.removed_at == at(5) and removed.removed_at.tzinfo is UTC
    assert emptied.removed_at is None
    # both look alike otherwise
    assert [m.unavailable_at for m in removed.markets] == [m.unavailable_at for m in emptied.markets] == [at(5)] * 2

    # a second removal keeps the first time; a scrape that sees markets clears it
    await cache.mark_event_removed(1, "betpawa", at(10))
    assert (await cache.get_snapshot(1, "betpawa")).removed_at == at(5)
    await cache.apply_scrape(1, "betpawa", [market("1")], at(15))
    back = await cache.get_snapshot(1, "betpawa")
    assert back.removed_at is None and back.market("1").is_available
    assert (await cache.get_snapshots([1, 2]))[(1, "betpawa")].removed_at is None


# ---------------------------------------------------------------- negative event ids


@pytest.mark.parametrize("event_id", [-1, -5, -(2**53 - 1), 1, 2**53 - 1])
def test_any_non_zero_id_within_a_lua_double_is_valid(event_id):
    assert validate_event_id(event_id) == event_id


@pytest.mark.parametrize("event_id", [0, -0, 2**53, -(2**53), True, 1.0, "-5", None])
def test_zero_and_ids_beyond_a_lua_double_are_refused(event_id):
    with pytest.raises(InvalidScrape, match=r"^event_id: expected a non-zero integer from -\(2\*\*53 - 1\) to "
                                            r"2\*\*53 - 1, got "):
        validate_event_id(event_id)


def test_negative_event_keys_shard_and_index_member():
    keys = KeySchema("av", 16)
    assert keys.shard_of(-5) == 11 and keys.shard_of(-16) == 0 and keys.shard_of(-(2**53 - 1)) in range(16)
    assert keys.markets(-5, "sportybet") == "{av:11}:ev:-5:sportybet:markets"
    member = keys.snapshot_member(-5, "sportybet")
    assert member == "-5:sportybet"
    assert keys.parse_snapshot_member(member.encode()) == (-5, "sportybet")


async def lua_apply(cache: MarketCache, event_text: str) -> object:
    """The apply script called directly with ``event_text`` as its event_id argument."""
    keys = cache.keys.snapshot(-5, "sportybet").as_list()
    args = ["scrape", event_text, "sportybet", "1", format_ts(T0), "partial", "0", b"\x90", "digest", "0"]
    try:
        return await cache.client.evalsha(await cache.script.load(), len(keys), *keys, *args)
    except ResponseError as exc:  # the script's error reply
        return exc


@pytest.mark.parametrize("text", ["-5", "5", "-9007199254740991", "9007199254740991"])
async def test_the_script_takes_negative_event_ids(cache, text):
    reply = await lua_apply(cache, text)
    assert not isinstance(reply, Exception), reply


@pytest.mark.parametrize("text", ["0", "-0", "--5", "-", "", "+5", "05", "-05", "5.0", "-12345678901234567",
                                  "12345678901234567"])
async def test_the_script_refuses_other_event_id_text(cache, text):
    reply = await lua_apply(cache, text)
    assert isinstance(reply, Exception) and "event_id: expected a non-zero integer" in str(reply), reply


async def test_a_negative_event_end_to_end_apply_snapshot_flush_warm(cache, redis_client, key_prefix, database_url):
    event = -(2**40 + 7)
    await cache.apply_scrape(event, "sportybet", [market("1"), market("18", 2.5)], at(0))
    outcome = await cache.apply_scrape(event, "sportybet", [market("1", odds=1.9)], at(5))
    assert outcome.became_unavailable == (MarketKey("18", 2.5),)
    [batch_outcome] = await cache.apply_batch([Scrape(event, "bet9ja", [market("1")], at(1))])
    assert batch_outcome.applied and batch_outcome.event_id == event

    snap = await cache.get_snapshot(event, "sportybet")
    assert snap.event_id == event and snap.last_scraped_at == at(5)
    assert snap.market("18", 2.5).unavailable_at == at(5) and snap.market("1").outcomes[0]["odds"] == 1.9
    assert await cache.bookmakers_of(event) == ["bet9ja", "sportybet"]
    shard = cache.keys.shard_of(event)
    assert sorted(await cache.list_snapshots(shard)) == [(event, "bet9ja"), (event, "sportybet")]
    records = [decode_record(i, f) for i, f in await redis_client.xrange(cache.keys.changes(shard))]
    assert {r.event_id for r in records} == {event}

    # flushed to PostgreSQL
    flusher = Flusher(cache, database_url, block_ms=50)
    try:
        await flusher.run_once()
    finally:
        await flusher.close()
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        rows = conn.execute("SELECT source, event_id, betpawa_market_id, line, unavailable_at "
                            "FROM competitor_market_odds ORDER BY source, betpawa_market_id").fetchall()
        heads = conn.execute("SELECT event_id, bookmaker FROM availability_snapshots ORDER BY bookmaker").fetchall()
    assert [(r["source"], r["event_id"], r["betpawa_market_id"], r["line"], r["unavailable_at"]) for r in rows] == [
        ("bet9ja", event, "1", None, None), ("sportybet", event, "1", None, None),
        ("sportybet", event, "18", 2.5, at(5))]
    assert [(h["event_id"], h["bookmaker"]) for h in heads] == [(event, "bet9ja"), (event, "sportybet")]
    assert await verify(cache, database_url) == []

    # warmed back into an empty Redis, byte for byte
    restored = MarketCache(redis_client, prefix=f"{key_prefix}w", shards=SHARDS)
    try:
        stats = await warm(restored, database_url)
        assert (stats.snapshots, stats.skipped) == (2, 0)
        for bookmaker in ("sportybet", "bet9ja"):
            for name in ("markets", "unavailable", "meta"):
                key_of = getattr(cache.keys, name)
                original = await redis_client.hgetall(key_of(event, bookmaker))
                for field in REDELIVERY_FIELDS:  # not restored by warm-up, by design
                    original.pop(field.encode(), None)
                assert await redis_client.hgetall(getattr(restored.keys, name)(event, bookmaker)) == original
        assert await restored.get_snapshot(event, "sportybet") == snap
        assert await restored.list_snapshots(shard) == await cache.list_snapshots(shard)
        assert await verify(restored, database_url) == []
        # and it keeps working there
        again = await restored.apply_scrape(event, "sportybet", [market("1", odds=1.9), market("18", 2.5)], at(10))
        assert again.became_available == (MarketKey("18", 2.5),)
    finally:
        found = [k async for k in redis_client.scan_iter(match=f"{{{key_prefix}w:*")]
        await redis_client.delete(f"{key_prefix}w:config", *found)
