"""Reading availability: compare an event across bookmakers, its history, its timeline.

Every test builds its event the way production does: scrapes applied through
MarketCache, flushed to PostgreSQL by the Flusher; then reads it back.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from click.testing import CliRunner

from availability.cache import MarketCache
from availability.cli import cli
from availability.db.engine import libpq_url
from availability.errors import ConfigurationError
from availability.flusher import Flusher
from availability.model import CachedMarket, MarketKey
from availability.reader import (
    AVAILABLE,
    NEVER_OFFERED,
    UNAVAILABLE,
    AvailabilityReader,
    InvalidQuery,
    parse_market_filter,
)

UTC = timezone.utc
T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SHARDS = 4


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def market(market_id: str, line: float | None = None, odds: float = 1.85, name: str | None = None) -> CachedMarket:
    return CachedMarket(
        betpawa_market_id=market_id,
        betpawa_market_name=name or f"Market {market_id}",
        line=line,
        handicap_type=None if line is None else "handicap",
        handicap_home=line,
        handicap_away=None if line is None else -line,
        outcomes=[{"name": "Home", "odds": odds, "is_active": True},
                  {"name": "Away", "odds": 2.05, "is_active": True}],
        market_groups=None,
    )


async def flush(cache: MarketCache, database_url: str) -> None:
    flusher = Flusher(cache, database_url)
    try:
        await flusher.run_once()
    finally:
        await flusher.close()


async def build_event(cache: MarketCache, database_url: str) -> None:
    """Event 1: betpawa loses two markets at 12:05, one comes back at 12:10;
    sportybet lists it until the event leaves its listing at 12:12; bet9ja
    never lists it. Event 2 at bet9ja only, so the events stay apart."""
    await cache.mark_ready()
    await cache.apply_scrape(1, "betpawa", [market("1"), market("18", 2.5), market("18", 3.5), market("16", 0.0)], at(0))
    await cache.apply_scrape(1, "sportybet", [market("1", odds=1.8), market("18", 2.5)], at(1))
    await cache.apply_scrape(1, "betpawa", [market("1", odds=1.9), market("18", 2.5)], at(5))
    await cache.apply_scrape(1, "sportybet", [market("1", odds=1.8), market("18", 2.5), market("16")], at(6))
    await cache.apply_scrape(1, "betpawa", [market("1", odds=1.9), market("18", 2.5), market("18", 3.5)], at(10))
    await cache.mark_event_removed(1, "sportybet", at(12))
    await cache.apply_scrape(2, "bet9ja", [market("1")], at(3))
    await flush(cache, database_url)


@pytest.fixture
async def cache(redis_client, key_prefix):
    return MarketCache(redis_client, prefix=key_prefix, shards=SHARDS)


@pytest.fixture
async def reader(cache, database_url):
    async with AvailabilityReader(cache, database_url) as r:
        yield r


# ---------------------------------------------------------------- compare


async def test_compare_shows_available_unavailable_since_and_never_offered_per_bookmaker(cache, database_url, reader):
    await build_event(cache, database_url)

    c = await reader.compare(1)

    assert [b.bookmaker for b in c.bookmakers] == ["betpawa", "sportybet", "bet9ja"]
    assert [m.field for m in c.markets] == ["1@_", "16@_", "16@0.0", "18@2.5", "18@3.5"]
    one = c.market("1")
    assert one.state("betpawa").status == AVAILABLE
    assert one.state("betpawa").outcomes == (("Home", 1.9, True), ("Away", 2.05, True))
    assert one.state("sportybet").status == UNAVAILABLE
    assert one.state("sportybet").unavailable_since == at(12)  # the event left sportybet's listing
    assert one.state("sportybet").outcomes == (("Home", 1.8, True), ("Away", 2.05, True))  # its last odds
    assert one.state("bet9ja").status == NEVER_OFFERED and one.state("bet9ja").outcomes == ()
    # None and 0.0 are different markets: sportybet offered 16 without a line, betpawa 16@0.0
    assert c.market("16", 0.0).state("betpawa").status == UNAVAILABLE
    assert c.market("16", 0.0).state("betpawa").unavailable_since == at(5)
    assert c.market("16", 0.0).state("sportybet").status == NEVER_OFFERED
    assert c.market("16").state("betpawa").status == NEVER_OFFERED
    assert c.market("18", 3.5).state("betpawa").status == AVAILABLE  # came back at 12:10
    sporty, bet9ja = c.bookmaker("sportybet"), c.bookmaker("bet9ja")
    assert sporty.left_listing and sporty.removed_at == at(12) and sporty.last_scraped_at == at(12)
    assert (sporty.markets, sporty.unavailable) == (3, 3)
    assert not c.bookmaker("betpawa").left_listing and c.bookmaker("betpawa").last_scraped_at == at(10)
    assert not bet9ja.listed and not bet9ja.left_listing


async def test_compare_from_postgres_equals_compare_from_redis(cache, database_url, reader):
    await build_event(cache, database_url)

    from_redis = await reader.compare(1)
    from_pg = await reader.compare(1, source="postgres")

    assert (from_redis.source, from_pg.source) == ("redis", "postgres")
    assert from_pg == from_redis
    assert from_pg.as_dict() | {"source": "redis"} == from_redis.as_dict()


async def test_compare_of_an_event_nobody_listed_says_never_offered_everywhere(cache, database_url, reader):
    await build_event(cache, database_url)
    for source in ("redis", "postgres"):
        c = await reader.compare(99, source=source)
        assert not c.found and c.markets == ()
        assert [b.listed for b in c.bookmakers] == [False, False, False]


async def test_compare_shows_a_bookmaker_beyond_the_default_three(cache, database_url, reader):
    await cache.mark_ready()
    await cache.apply_scrape(5, "betking", [market("1")], at(0))
    await flush(cache, database_url)
    for source in ("redis", "postgres"):
        c = await reader.compare(5, source=source)
        assert [b.bookmaker for b in c.bookmakers] == ["betpawa", "sportybet", "bet9ja", "betking"]
        assert c.market("1").state("betking").status == AVAILABLE


async def test_reader_refuses_what_it_cannot_answer(cache, database_url):
    with pytest.raises(ConfigurationError, match="expected a cache, a database"):
        AvailabilityReader()
    with pytest.raises(ConfigurationError, match="database URL"):
        AvailabilityReader(cache, "mysql://x@y/z")
    async with AvailabilityReader(database=database_url) as r:
        with pytest.raises(ConfigurationError, match="source 'redis': this reader has no MarketCache"):
            await r.compare(1)
        with pytest.raises(InvalidQuery, match="source: expected one of redis, postgres, got 'pg'"):
            await r.compare(1, source="pg")
    async with AvailabilityReader(cache) as r:
        with pytest.raises(ConfigurationError, match="this reader has no PostgreSQL"):
            await r.history(1)
        with pytest.raises(ValueError, match="event_id: expected a positive integer, got 0"):
            await r.compare(0)


async def test_reader_uses_a_connection_it_was_given_and_leaves_it_open(cache, database_url):
    await build_event(cache, database_url)
    async with await psycopg.AsyncConnection.connect(libpq_url(database_url), autocommit=True) as conn:
        async with AvailabilityReader(cache, conn) as r:
            assert (await r.compare(1, source="postgres")) == (await r.compare(1))
            assert len(await r.history(1)) == 6
        assert not conn.closed
        assert (await (await conn.execute("SELECT 1")).fetchone()) == (1,)


# ---------------------------------------------------------------- history


def _rows(transitions):
    return [(t.bookmaker, t.field, t.transition, t.at) for t in transitions]


async def test_history_lists_every_transition_oldest_first(cache, database_url, reader):
    await build_event(cache, database_url)

    assert _rows(await reader.history(1)) == [
        ("betpawa", "16@0.0", "became_unavailable", at(5)),
        ("betpawa", "18@3.5", "became_unavailable", at(5)),
        ("betpawa", "18@3.5", "became_available", at(10)),
        ("sportybet", "1@_", "became_unavailable", at(12)),
        ("sportybet", "16@_", "became_unavailable", at(12)),
        ("sportybet", "18@2.5", "became_unavailable", at(12)),
    ]
    assert await reader.history(2) == []


async def test_history_filters_by_bookmaker_market_line_and_time(cache, database_url, reader):
    await build_event(cache, database_url)

    assert {t.bookmaker for t in await reader.history(1, bookmaker="sportybet")} == {"sportybet"}
    assert _rows(await reader.history(1, market="18")) == [
        ("betpawa", "18@3.5", "became_unavailable", at(5)),
        ("betpawa", "18@3.5", "became_available", at(10)),
        ("sportybet", "18@2.5", "became_unavailable", at(12)),
    ]
    assert [t.field for t in await reader.history(1, market="18@2.5")] == ["18@2.5"]
    assert [t.field for t in await reader.history(1, market=MarketKey("18", 3.5))] == ["18@3.5", "18@3.5"]
    # the market without a line and line 0.0 stay apart
    assert _rows(await reader.history(1, market="16@_")) == [("sportybet", "16@_", "became_unavailable", at(12))]
    assert _rows(await reader.history(1, market="16@0")) == [("betpawa", "16@0.0", "became_unavailable", at(5))]
    assert _rows(await reader.history(1, bookmaker="betpawa", since=at(10))) == [
        ("betpawa", "18@3.5", "became_available", at(10))]
    assert await reader.history(1, since=at(12) + timedelta(microseconds=1)) == []


async def test_history_refuses_bad_filters_naming_them(reader):
    with pytest.raises(InvalidQuery, match=r"market: expected ID or ID@LINE .* got '18@abc'"):
        await reader.history(1, market="18@abc")
    with pytest.raises(InvalidQuery, match="since: expected a timezone-aware datetime"):
        await reader.history(1, since=datetime(2026, 11, 28, 12, 0))
    with pytest.raises(ValueError, match="bookmaker: expected a lowercase slug"):
        await reader.history(1, bookmaker="Sporty Bet")


def test_market_filters():
    assert str(parse_market_filter("18")) == "18" and parse_market_filter("18").any_line
    assert parse_market_filter("18@2.50").matches(MarketKey("18", 2.5))
    assert not parse_market_filter("18@2.5").matches(MarketKey("18", 3.5))
    assert parse_market_filter("1@_").matches(MarketKey("1", None))
    assert not parse_market_filter("1@_").matches(MarketKey("1", 0.0))
    for bad in ("", " 18", "18@", "18@nan", 18):
        with pytest.raises(InvalidQuery, match="market: expected ID or ID@LINE"):
            parse_market_filter(bad)
