"""Quarantine: one bad market never blinds a whole event, through Redis and PostgreSQL.

Scrapes go through ``MarketCache`` (the real Lua script) and the flusher
writes the real PostgreSQL; ``verify`` compares both sides.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import msgpack
import psycopg
import pytest
from click.testing import CliRunner
from psycopg.rows import dict_row

from availability.cache import MarketCache, Scrape
from availability.cli import cli
from availability.db.rejections import clean_text, prune_rejections
from availability.errors import InvalidScrape
from availability.flusher import Flusher
from availability.model import MarketKey, coerce_market, encode_market, merge_markets
from availability.verify import verify
from realistic import BOOKMAKERS, MARKET_COUNT, NAMELESS, event_markets, hostile, market_keys, with_hostile

UTC = timezone.utc
T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SHARDS = 4
EVENT = 4242


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def query(database_url: str, sql: str, *params) -> list[dict]:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()


def rejections(database_url: str) -> list[dict]:
    return query(database_url, "SELECT event_id, bookmaker, betpawa_market_id, line, field, reason, value, message,"
                               " first_rejected_at, last_rejected_at, times FROM market_rejections"
                               " ORDER BY bookmaker, event_id, betpawa_market_id, line")


def market(market_id: str, line: float | None = None, odds: float = 1.85, **extra) -> dict:
    return {"betpawa_market_id": market_id, "betpawa_market_name": f"Market {market_id}", "line": line,
            "outcomes": [{"name": "Over", "odds": odds}, {"name": "Under", "odds": 1.95}], **extra}


@pytest.fixture
async def cache(redis_client, key_prefix):
    cache = MarketCache(redis_client, prefix=key_prefix, shards=SHARDS)
    await cache.mark_ready()
    return cache


@pytest.fixture
async def flusher(cache, database_url):
    flusher = Flusher(cache, database_url, block_ms=50)
    yield flusher
    await flusher.close()


async def stream_entries(cache: MarketCache) -> list[tuple[str, dict]]:
    out = []
    for shard in cache.keys.all_shards():
        stream = cache.keys.changes(shard)
        out += [(stream, f) for _, f in await cache.client.xrange(stream)]
    return out


def stored_as(rows: list[dict]) -> dict[MarketKey, bytes]:
    """What the cache must hold for these rows: merged, canonically encoded."""
    return {k: encode_market(m) for k, m in merge_markets(coerce_market(r) for r in rows).items()}


# ---------------------------------------------------------------- the "done when" test


async def test_one_hostile_market_among_170_good_ones_at_each_bookmaker(cache, flusher, database_url):
    first = await cache.apply_batch([Scrape(EVENT, bm, event_markets(bm, 0), at(0)) for bm in BOOKMAKERS])
    assert [(o.status, o.new, o.rejected) for o in first] == [("applied", MARKET_COUNT, ())] * 3

    # the next scrape moves prices and carries one hostile market among the 169 others
    second = await cache.apply_batch([Scrape(EVENT, bm, with_hostile(bm, 1), at(5)) for bm in BOOKMAKERS])
    for bm, outcome in zip(BOOKMAKERS, second):
        bad, key, field = hostile(bm)
        assert outcome.applied and not outcome.partial, outcome
        [r] = outcome.rejected
        assert (r.key, r.field) == (MarketKey(*key), field)
        # nothing wrongly stamped, nothing new, every other market seen
        assert (outcome.became_unavailable, outcome.became_available, outcome.new) == ((), (), 0)
        assert outcome.changed > 0 and outcome.changed + outcome.unchanged == MARKET_COUNT - 1
        snap = await cache.get_snapshot(EVENT, bm)
        assert len(snap.markets) == MARKET_COUNT and snap.unavailable_markets == ()
        # every good market tracked with its new prices; the hostile one keeps its last good payload
        expected = stored_as([r for r in with_hostile(bm, 1) if (r["betpawa_market_id"], r["line"]) != key])
        expected[MarketKey(*key)] = stored_as(event_markets(bm, 0))[MarketKey(*key)]
        assert {m.key: encode_market(m) for m in snap.markets} == expected
        assert sorted(expected, key=str) == sorted((MarketKey(*k) for k in market_keys()), key=str)
    nameless = (await cache.get_snapshot(EVENT, "betpawa")).market(*NAMELESS)
    assert nameless.betpawa_market_name == "" and nameless.is_available
    european = (await cache.get_snapshot(EVENT, "sportybet")).market("4724", 2.0)
    assert european.handicap_type == "european" and european.handicap_home == 2.0

    # a later complete scrape without 1X2: only 1X2 is stamped, the hostile market is still present
    third = await cache.apply_batch([
        Scrape(EVENT, bm, [r for r in with_hostile(bm, 2) if r["betpawa_market_id"] != "1"], at(10))
        for bm in BOOKMAKERS])
    for bm, outcome in zip(BOOKMAKERS, third):
        assert outcome.became_unavailable == (MarketKey("1", None),) and len(outcome.rejected) == 1
        snap = await cache.get_snapshot(EVENT, bm)
        assert [m.key for m in snap.unavailable_markets] == [MarketKey("1", None)]

    # PostgreSQL equals Redis after a flush, and knows which markets were refused, when and why
    records = await stream_entries(cache)
    stats = await flusher.run_once()
    assert (stats.records, stats.dead_letters) == (9, 0)
    assert await verify(cache, database_url) == []
    assert query(database_url, "SELECT count(*) AS n FROM competitor_market_odds")[0]["n"] == 2 * MARKET_COUNT
    assert query(database_url, "SELECT count(*) AS n FROM market_odds")[0]["n"] == MARKET_COUNT
    rows = rejections(database_url)
    assert [(r["bookmaker"], r["betpawa_market_id"], r["line"], r["field"], r["times"]) for r in rows] == [
        ("bet9ja", "166", 9.5, "betpawa_market_name", 2),
        ("betpawa", "19", 1.5, "outcomes[1].odds", 2),
        ("sportybet", "18", 2.5, "outcomes[0].odds", 2),
    ]
    assert all((r["first_rejected_at"], r["last_rejected_at"]) == (at(5), at(10)) for r in rows)
    assert [r["reason"] for r in rows] == ["invalid_text", "invalid_value", "invalid_value"]
    assert [r["value"] for r in rows] == ["'Total\\x00corners'", "None", "'1,85'"]
    assert "control character '\\x00'" in rows[0]["message"]

    # every record delivered once more: nothing changes, nothing counted twice
    for stream, fields in records:
        await cache.client.xadd(stream, fields)
    replay = await flusher.run_once()
    assert (replay.records, replay.dead_letters, replay.rows, replay.rejections) == (9, 0, 0, 0)
    assert rejections(database_url) == rows
    assert await verify(cache, database_url) == []


# ---------------------------------------------------------------- issue 8 defect 4: text PostgreSQL cannot store


@pytest.mark.parametrize("bad", [
    {"betpawa_market_name": "Over\x00Under"},
    {"outcomes": [{"name": "Over\x00", "odds": 1.85}, {"name": "Under", "odds": 1.95}]},
    {"handicap_type": "asian\x00"},
    {"market_groups": ["main", "goals\x00"]},
], ids=["market_name", "outcome_name", "handicap_type", "market_groups"])
async def test_a_nul_in_one_market_never_keeps_the_good_markets_from_postgresql(cache, flusher, database_url, bad):
    """Issue 8 defect 4: text PostgreSQL cannot store used to pass validation and send the
    whole record, good markets included, to the dead-letter stream. Validation refuses it
    now, and only that market: the good ones of the scrape arrive in PostgreSQL."""
    good = [market("1"), market("18", 2.5), market("18", 3.5)]
    outcome = await cache.apply_scrape(EVENT, "betpawa", [*good, market("29", 1.5, **bad)], at(0))
    assert outcome.applied and outcome.new == 3
    [r] = outcome.rejected
    assert r.key == MarketKey("29", 1.5) and r.reason == "invalid_text" and "\\x00" in r.value
    stats = await flusher.run_once()
    assert (stats.records, stats.dead_letters) == (1, 0)
    assert await cache.client.xlen(cache.keys.dead_letters(cache.keys.shard_of(EVENT))) == 0
    # the good markets arrived; the bad one has no row (it never had a good payload)
    rows = query(database_url, "SELECT betpawa_market_id, line FROM market_odds ORDER BY betpawa_market_id, line")
    assert [(r["betpawa_market_id"], r["line"]) for r in rows] == [("1", None), ("18", 2.5), ("18", 3.5)]
    [row] = rejections(database_url)
    assert (row["betpawa_market_id"], row["line"], row["reason"], row["times"]) == ("29", 1.5, "invalid_text", 1)
    assert "\x00" not in row["value"] and "\x00" not in row["message"]
    assert await verify(cache, database_url) == []


# ---------------------------------------------------------------- the quarantine rules


async def test_an_unavailable_market_that_comes_back_invalid_is_available_with_its_last_good_payload(
    cache, flusher, database_url
):
    await cache.apply_scrape(EVENT, "sportybet", [market("1"), market("18", 2.5, 1.7)], at(0))
    gone = await cache.apply_scrape(EVENT, "sportybet", [market("1")], at(5))
    assert gone.became_unavailable == (MarketKey("18", 2.5),)
    back = await cache.apply_scrape(EVENT, "sportybet", [market("1"), market("18", 2.5, odds="1,9")], at(10))
    # it is offered again (present), so it is not unavailable; its price is the last good one
    assert back.became_available == (MarketKey("18", 2.5),) and (back.new, back.changed) == (0, 0)
    [r] = back.rejected
    assert (r.key, r.field, r.value) == (MarketKey("18", 2.5), "outcomes[0].odds", "'1,9'")
    m = (await cache.get_snapshot(EVENT, "sportybet")).market("18", 2.5)
    assert m.is_available and m.outcomes[0]["odds"] == 1.7
    await flusher.run_once()
    assert await verify(cache, database_url) == []
    history = query(database_url, "SELECT transition, at FROM market_availability_history ORDER BY at")
    assert [(h["transition"], h["at"]) for h in history] == [("became_unavailable", at(5)),
                                                             ("became_available", at(10))]


async def test_an_unreadable_key_makes_the_scrape_partial(cache, flusher, database_url):
    await cache.apply_scrape(EVENT, "bet9ja", [market("1"), market("18", 2.5), market("18", 3.5)], at(0))
    outcome = await cache.apply_scrape(
        EVENT, "bet9ja", [market("1", odds=2.2), market("18", "over")], at(5))  # which line? unknown
    assert outcome.applied and outcome.partial and outcome.changed == 1
    assert outcome.became_unavailable == ()  # 18@2.5 and 18@3.5 may be the unreadable one: nothing stamped
    [r] = outcome.rejected
    assert (r.key, r.field, r.value, r.reason) == (None, "line", "'over'", "invalid_key")
    snap = await cache.get_snapshot(EVENT, "bet9ja")
    assert snap.unavailable_markets == () and snap.market("1").outcomes[0]["odds"] == 2.2

    # nothing but unreadable markets: still applied (partial), so the rejections are recorded
    only_bad = await cache.apply_scrape(EVENT, "bet9ja", [{**market("7"), "betpawa_market_id": None}], at(10))
    assert only_bad.applied and only_bad.partial and (only_bad.new, only_bad.changed, only_bad.unchanged) == (0, 0, 0)
    assert (await cache.get_snapshot(EVENT, "bet9ja")).last_scraped_at == at(10)

    await flusher.run_once()
    assert await verify(cache, database_url) == []
    rows = rejections(database_url)
    assert [(r["betpawa_market_id"], r["line"], r["field"], r["reason"]) for r in rows] == [
        (None, None, "betpawa_market_id", "invalid_key"), (None, None, "line", "invalid_key")]


async def test_strict_keeps_the_whole_scrape_refusal(cache):
    await cache.apply_scrape(EVENT, "betpawa", [market("1"), market("18", 2.5)], at(0))
    before = await cache.get_snapshot(EVENT, "betpawa")
    for bad in ([market("1"), market("18", 2.5, odds=0)], [market("1"), market("18", "over")]):
        with pytest.raises(InvalidScrape):
            await cache.apply_scrape(EVENT, "betpawa", bad, at(5), strict=True)
        [outcome] = await cache.apply_batch([Scrape(EVENT, "betpawa", bad, at(5))], strict=True)
        assert outcome.status == "invalid" and outcome.rejected == ()
    assert await cache.get_snapshot(EVENT, "betpawa") == before


async def test_a_rejection_is_counted_once_per_scrape_and_its_value_is_the_newest(cache, flusher, database_url):
    await cache.apply_scrape(EVENT, "betpawa", [market("1")], at(0))
    for minute, odds in ((5, "1,5"), (10, "1,6"), (15, "1,7")):
        await cache.apply_scrape(EVENT, "betpawa", [market("1"), market("2", odds=odds)], at(minute))
        if minute == 5:
            await flusher.run_once()  # one record alone, then two in one batch
    entries = await stream_entries(cache)
    await flusher.run_once()
    [row] = rejections(database_url)
    assert (row["times"], row["first_rejected_at"], row["last_rejected_at"], row["value"]) == (
        3, at(5), at(15), "'1,7'")
    # a replay of every record, newest first, in one batch and one by one: nothing moves
    for stream, fields in reversed(entries):
        await cache.client.xadd(stream, fields)
    await flusher.run_once()
    assert rejections(database_url) == [row]
    # (the market never had a good payload: no row was made out of nothing)
    assert [r["betpawa_market_id"] for r in query(database_url, "SELECT betpawa_market_id FROM market_odds")] == ["1"]


async def test_a_poisoned_rejection_never_costs_a_record_its_markets(cache, flusher, database_url):
    outcome = await cache.apply_scrape(EVENT, "betpawa", [market("1"), market("2", odds=0)], at(0))
    [(stream, fields)] = await stream_entries(cache)
    await cache.client.xdel(stream, outcome.stream_id)
    # the same record, its rejections rewritten by hand: NUL, bytes that are not UTF-8, huge values
    poisoned = msgpack.packb([[b"2@_", b"f\x00ield", b"\xff\xfe" + b"v" * 10_000, "invalid\x00value", None],
                              [b"not a key", None, None, None, None], "not even a list"], use_bin_type=True)
    await cache.client.xadd(stream, {**fields, b"rejected": poisoned})
    await cache.client.xadd(stream, {**fields, b"rejected": b"\xc1 not msgpack"})
    stats = await flusher.run_once()
    assert (stats.records, stats.dead_letters) == (2, 0)
    assert [r["betpawa_market_id"] for r in query(database_url, "SELECT betpawa_market_id FROM market_odds")] == ["1"]
    rows = rejections(database_url)
    # what could be read is kept (cleaned, bounded); what could not is one row of an unknown market
    assert [(r["betpawa_market_id"], r["field"], r["reason"]) for r in rows] == [
        ("2", "field", "invalidvalue"), (None, None, "invalid_value")]
    assert rows[0]["value"] == "\ufffd\ufffd" + "v" * 198
    assert await verify(cache, database_url) == []


def test_clean_text_strips_what_postgresql_cannot_store():
    assert clean_text("a\x00b\ud800c", 100) == "ab?c"
    assert clean_text("x" * 500, 200) == "x" * 200
    assert clean_text(None, 10) is None and clean_text(7, 10) == "7"


async def test_prune_deletes_the_rows_not_seen_for_n_days(cache, flusher, database_url):
    await cache.apply_scrape(EVENT, "betpawa", [market("1"), market("2", odds=0), market("3", odds=0)], at(0))
    await flusher.run_once()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE market_rejections SET last_rejected_at = now() - interval '40 days'"
                     " WHERE betpawa_market_id = '2'")
        conn.execute("UPDATE market_rejections SET last_rejected_at = now() - interval '20 days'"
                     " WHERE betpawa_market_id = '3'")
    assert prune_rejections(database_url, 30) == 1
    assert [r["betpawa_market_id"] for r in rejections(database_url)] == ["3"]
    result = CliRunner().invoke(cli, ["--database-url", database_url, "prune-rejections", "--days", "10"])
    assert result.exit_code == 0, result.output
    assert "deleted 1 market_rejections rows" in result.output and rejections(database_url) == []
    with pytest.raises(ValueError, match="days"):
        prune_rejections(database_url, -1)


def test_a_record_written_by_older_code_decodes_with_no_rejections():
    from availability.model import key_to_field, to_micros
    from availability.records import decode_record

    payload = encode_market(coerce_market(market("1")))
    old = {b"v": b"2", b"kind": b"scrape", b"event": b"7", b"bookmaker": b"betpawa",
           b"scraped_at": str(to_micros(T0)).encode(), b"completeness": b"complete",
           b"present": msgpack.packb([key_to_field(MarketKey("1", None))]),
           b"markets": msgpack.packb([b"1@_", payload, b"n"])}
    record = decode_record(b"1-0", old)
    assert record.rejected == () and [c.key for c in record.changes] == [MarketKey("1", None)]
