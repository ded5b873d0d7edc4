"""Events: a snapshot's removed_at, against real Redis."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from availability.cache import MarketCache
from availability.model import CachedMarket, CachedSnapshot

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
