"""Reading availability: compare an event across bookmakers, and its history.

Every test builds its event the way production does: scrapes applied through
MarketCache, flushed to PostgreSQL by the Flusher; then reads it back.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import psycopg
import pytest

from availability.coordinator import EventCoordinator
from availability.db.engine import libpq_url
from availability.errors import ConfigurationError
from availability.demo.feed import Feed, FeedConfig
from availability.model import MarketKey
from availability.reader import (
    AVAILABLE,
    NEVER_OFFERED,
    UNAVAILABLE,
    AvailabilityReader,
    InvalidQuery,
    parse_market_filter,
)
from availability.verify import verify
from factory import availability
from reading import SHARDS
from reading import at, build_event, flush, market


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
        with pytest.raises(ValueError, match="event_id: expected a non-zero integer .*, got 0"):
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


# ---------------------------------------------------------------- Redis and PostgreSQL agree on a realistic feed


async def test_compare_from_redis_equals_compare_from_postgres_on_a_realistic_feed(cache, database_url, reader):
    """Several events and cycles of the synthetic feed, through the coordinator
    (listing reconciliation included), flushed; every event compares equal from
    both stores, and the feed really exercised what the comparison shows."""
    feed = Feed(FeedConfig(seed=7, events=12, market_scale=0.25))
    coordinator = EventCoordinator(cache)
    await cache.mark_ready()
    for cycle in range(6):
        for b in feed.config.bookmakers:
            listing = feed.listing(b, cycle)
            await coordinator.reconcile_listing(b, listing.event_ids, listing.at, listing_ok=listing.ok)
        results = [r for r in feed.scrapes(cycle) if r is not None]
        await coordinator.store_batch_results(results)
        if cycle % 2:
            await flush(cache, database_url)  # flushes interleaved with scrapes, as in production
    await flush(cache, database_url)
    assert await verify(cache, database_url) == []

    statuses, left, returned = set(), 0, 0
    for event_id in feed.event_ids():
        from_redis = await reader.compare(event_id)
        from_pg = await reader.compare(event_id, source="postgres")
        assert from_pg == from_redis, f"event {event_id}"
        assert json.dumps(from_pg.as_dict() | {"source": "redis"}) == json.dumps(from_redis.as_dict())
        statuses |= {s.status for m in from_redis.markets for s in m.states}
        left += sum(1 for b in from_redis.bookmakers if b.left_listing)
        returned += sum(1 for t in await reader.history(event_id) if t.transition == "became_available")
    assert statuses == {AVAILABLE, UNAVAILABLE, NEVER_OFFERED}
    assert left > 0, "no event left a listing: the test would not check removed_at"
    assert returned > 0, "no market came back: the test would not check returning markets"


# ---------------------------------------------------------------- the command line


@pytest.fixture
async def built(cache, database_url, redis_url, key_prefix):
    await build_event(cache, database_url)
    return {"REDIS_URL": redis_url, "DATABASE_URL": database_url, "AVAILABILITY_PREFIX": key_prefix,
            "AVAILABILITY_SHARDS": str(SHARDS)}


async def test_cli_compare_prints_each_bookmakers_state_from_either_store(built):
    shown = availability("compare", "1", **built)
    assert shown.returncode == 0, shown.stderr
    lines = {line.split()[0]: line for line in shown.stdout.splitlines() if line.strip()[:1].isdigit()}
    assert lines["16@0.0"].split()[2:] == ["16", "gone", "since", "12:05:00", "(was", "1.85", "/", "2.05)",
                                           "never", "offered", "never", "offered"]
    assert "left at 12:12:00" in shown.stdout and "never listed this event" in shown.stdout
    from_redis = json.loads(availability("compare", "1", "--json", **built).stdout)
    from_pg = json.loads(availability("compare", "1", "--json", "--source", "postgres", **built).stdout)
    assert from_redis["markets"] == from_pg["markets"] and from_redis["bookmakers"] == from_pg["bookmakers"]
    one = next(m for m in from_redis["markets"] if m["key"] == "1@_")
    assert one["bookmakers"]["sportybet"] == {
        "status": "unavailable", "unavailable_since": "2026-11-28T12:12:00.000000Z",
        "outcomes": [{"name": "Home", "odds": 1.8, "is_active": True}, {"name": "Away", "odds": 2.05, "is_active": True}]}
    assert one["bookmakers"]["bet9ja"]["status"] == "never_offered"
    gaps = json.loads(availability("compare", "1", "--json", "--gaps-only", **built).stdout)
    # unavailable now somewhere; 18@3.5 came back, and never offered (bet9ja) is no gap
    assert [m["key"] for m in gaps["markets"]] == ["1@_", "16@_", "16@0.0", "18@2.5"]


async def test_cli_compare_of_an_unknown_event_exits_1_and_of_an_unknown_prefix_2(built):
    nothing = availability("compare", "99", **built)
    assert nothing.returncode == 1
    assert nothing.stderr.strip() == f"Error: event 99: nothing stored in redis (prefix {built['AVAILABILITY_PREFIX']!r})"
    assert nothing.stdout == ""
    wrong = availability("compare", "1", **(built | {"AVAILABILITY_PREFIX": built["AVAILABILITY_PREFIX"] + "x"}))
    assert wrong.returncode == 2 and "no deployment in Redis" in wrong.stderr  # a mistyped --prefix: configuration


async def test_cli_history_filters_and_json(built):
    shown = availability("history", "1", "--bookmaker", "betpawa", "--market", "18@3.5", **built)
    assert shown.returncode == 0, shown.stderr
    rows = [line.split() for line in shown.stdout.splitlines() if line.strip().startswith("2026")]
    assert rows == [["2026-11-28", "12:05:00.000000", "betpawa", "18@3.5", "became", "unavailable"],
                    ["2026-11-28", "12:10:00.000000", "betpawa", "18@3.5", "became", "available"]]
    data = json.loads(availability("history", "1", "--since", "2026-11-28T12:10:00", "--json", **built).stdout)
    assert [(t["bookmaker"], t["key"], t["transition"], t["at"]) for t in data] == [
        ("betpawa", "18@3.5", "became_available", "2026-11-28T12:10:00.000000Z"),
        ("sportybet", "1@_", "became_unavailable", "2026-11-28T12:12:00.000000Z"),
        ("sportybet", "16@_", "became_unavailable", "2026-11-28T12:12:00.000000Z"),
        ("sportybet", "18@2.5", "became_unavailable", "2026-11-28T12:12:00.000000Z"),
    ]
    # a time with its own zone: 13:11 in UTC+1 is 12:11 UTC
    later = json.loads(availability("history", "1", "--since", "2026-11-28T13:11:00+01:00", "--json", **built).stdout)
    assert {t["at"] for t in later} == {"2026-11-28T12:12:00.000000Z"}


@pytest.mark.parametrize("args, message", [
    (("history", "1", "--market", "18@x"), "Invalid value for '--market': market: expected ID or ID@LINE"),
    (("history", "1", "--since", "yesterday"), "Invalid value for '--since': expected an ISO 8601 time"),
    (("compare", "1", "--bookmaker", "Bet 9ja"), "bookmaker: expected a lowercase slug"),
    (("compare", "1", "--source", "mysql"), "Invalid value for '--source'"),
])
def test_cli_reading_usage_errors_are_one_line_exit_2(args, message):
    result = availability(*args, REDIS_URL="redis://127.0.0.1:1/0", DATABASE_URL="postgresql://u:secret@127.0.0.1:1/x")
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_cli_history_on_an_unreachable_database_masks_the_password():
    result = availability("history", "1", DATABASE_URL="postgresql://reader:s3cret@127.0.0.1:1/db")
    assert result.returncode == 2
    assert result.stderr.startswith("Error: cannot reach PostgreSQL at postgresql://reader:***@127.0.0.1:1/db")
    assert "s3cret" not in result.stderr + result.stdout
