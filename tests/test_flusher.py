"""The write-behind flusher against real Redis and PostgreSQL.

Scrapes go through ``MarketCache`` (the real Lua script), so the records the
flusher reads are exactly what production writes.
"""

from __future__ import annotations

import asyncio

import msgpack
import psycopg
import pytest
from psycopg.rows import dict_row
from structlog.testing import capture_logs

from factory import at, cached_market
from realistic import BOOKMAKERS, event_markets

from availability import metrics
from availability.cache import MarketCache
from availability.flusher import GROUP, Flusher
from availability.model import CachedMarket, encode_market
from availability.verify import verify
from streams import pending

SHARDS = 4


def market(market_id: str, line: float | None = None, odds: float = 1.85, *, name: str | None = None) -> CachedMarket:
    return cached_market(market_id, line, name=name, outcomes=[("Over", odds, True), ("Under", 1.95, True)],
                         handicap_type=None if line is None else "total", handicap_home=line,
                         handicap_away=None if line is None else -line, groups=["main"])


@pytest.fixture
async def make_flusher(cache, database_url):
    made: list[Flusher] = []

    def make(**kwargs) -> Flusher:
        kwargs.setdefault("block_ms", 50)
        kwargs.setdefault("claim_idle_ms", 60_000)
        flusher = Flusher(cache, database_url, **kwargs)
        made.append(flusher)
        return flusher

    yield make
    for flusher in made:
        await flusher.close()


def query(database_url: str, sql: str, *params) -> list[dict]:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()


def market_rows(database_url: str, table: str = "market_odds") -> dict[tuple, dict]:
    """The rows with their last confirmation, derived as every reader gets it (revision 0006)."""
    rows = query(database_url, f"SELECT * FROM {table}_confirmed")
    return {(r.get("source"), r["event_id"], r["betpawa_market_id"], r["line"]): r for r in rows}


async def stream_entries(cache: MarketCache) -> list[tuple[str, bytes, dict]]:
    out = []
    for shard in cache.keys.all_shards():
        stream = cache.keys.changes(shard)
        out += [(stream, i, f) for i, f in await cache.client.xrange(stream)]
    return out


async def backlog(cache: MarketCache) -> int:
    """Records not yet written: undelivered (group lag) plus delivered but unacknowledged."""
    total = 0
    for shard in cache.keys.all_shards():
        for group in await cache.client.xinfo_groups(cache.keys.changes(shard)):
            total += int(group["lag"] or 0) + int(group["pending"])
    return total


# ---------------------------------------------------------------- rows


async def test_flush_writes_market_rows_snapshots_and_competitor_source(cache, make_flusher, database_url):
    await cache.apply_scrape(7, "betpawa", [market("1"), market("18", 2.5), market("18", 0.0)], at(0))
    await cache.apply_scrape(7, "sportybet", [market("1", odds=1.7), market("18", 2.5)], at(1))

    stats = await make_flusher().run_once()

    assert stats.records == 2 and stats.dead_letters == 0
    home = market_rows(database_url)
    assert set(home) == {(None, 7, "1", None), (None, 7, "18", 2.5), (None, 7, "18", 0.0)}
    row = home[(None, 7, "18", 2.5)]
    assert row["outcomes"] == [{"name": "Over", "odds": 1.85, "is_active": True},
                               {"name": "Under", "odds": 1.95, "is_active": True}]
    assert row["market_groups"] == ["main"] and row["handicap_away"] == -2.5
    assert row["captured_at"] == row["last_confirmed_at"] == row["scraped_at"] == at(0)
    assert row["unavailable_at"] is None
    competitor = market_rows(database_url, "competitor_market_odds")
    assert set(competitor) == {("sportybet", 7, "1", None), ("sportybet", 7, "18", 2.5)}
    assert competitor[("sportybet", 7, "1", None)]["outcomes"][0]["odds"] == 1.7
    snaps = {(r["event_id"], r["bookmaker"]): r for r in query(database_url, "SELECT * FROM availability_snapshots")}
    assert snaps[(7, "betpawa")]["last_scraped_at"] == at(0)
    assert snaps[(7, "sportybet")]["captured_at"] == snaps[(7, "sportybet")]["last_confirmed_at"] == at(1)
    assert await pending(cache) == 0
    assert await verify(cache, database_url) == []


async def test_unavailable_at_is_set_then_cleared_with_both_transitions_in_history(cache, make_flusher, database_url):
    flusher = make_flusher()
    await cache.apply_scrape(3, "betpawa", [market("1"), market("18", 2.5)], at(0))
    await cache.apply_scrape(3, "betpawa", [market("1")], at(5))
    await flusher.run_once()
    gone = market_rows(database_url)[(None, 3, "18", 2.5)]
    assert gone["unavailable_at"] == at(5)
    assert gone["last_confirmed_at"] == at(0)  # last seen before it left
    assert market_rows(database_url)[(None, 3, "1", None)]["last_confirmed_at"] == at(5)

    await cache.apply_scrape(3, "betpawa", [market("1"), market("18", 2.5)], at(10))
    await flusher.run_once()
    back = market_rows(database_url)[(None, 3, "18", 2.5)]
    assert back["unavailable_at"] is None and back["last_confirmed_at"] == at(10)
    assert back["captured_at"] == at(0)  # same odds all along
    history = query(database_url, "SELECT transition, at, line FROM market_availability_history ORDER BY at")
    assert history == [
        {"transition": "became_unavailable", "at": at(5), "line": 2.5},
        {"transition": "became_available", "at": at(10), "line": 2.5},
    ]
    assert await verify(cache, database_url) == []


async def test_captured_at_moves_only_when_the_odds_change(cache, make_flusher, database_url):
    flusher = make_flusher()
    await cache.apply_scrape(4, "bet9ja", [market("1")], at(0))
    await cache.apply_scrape(4, "bet9ja", [market("1")], at(5))
    await flusher.run_once()
    row = market_rows(database_url, "competitor_market_odds")[("bet9ja", 4, "1", None)]
    assert (row["captured_at"], row["last_confirmed_at"], row["scraped_at"]) == (at(0), at(5), at(0))
    await cache.apply_scrape(4, "bet9ja", [market("1", odds=2.2)], at(10))
    await flusher.run_once()
    row = market_rows(database_url, "competitor_market_odds")[("bet9ja", 4, "1", None)]
    assert (row["captured_at"], row["last_confirmed_at"], row["scraped_at"]) == (at(10), at(10), at(10))


async def test_removed_event_sets_removed_at_until_it_is_listed_again(cache, make_flusher, database_url):
    flusher = make_flusher()
    await cache.apply_scrape(9, "betpawa", [market("1")], at(0))
    await cache.mark_event_removed(9, "betpawa", at(5))
    await flusher.run_once()
    snap = query(database_url, "SELECT * FROM availability_snapshots")[0]
    assert snap["removed_at"] == at(5) and snap["last_scraped_at"] == at(5)
    assert market_rows(database_url)[(None, 9, "1", None)]["unavailable_at"] == at(5)
    await cache.apply_scrape(9, "betpawa", [market("1")], at(10))
    await flusher.run_once()
    snap = query(database_url, "SELECT * FROM availability_snapshots")[0]
    assert snap["removed_at"] is None and snap["last_confirmed_at"] == at(10)
    assert await verify(cache, database_url) == []


# ---------------------------------------------------------------- idempotence and ordering


async def test_replaying_every_record_changes_nothing(cache, make_flusher, database_url):
    flusher = make_flusher()
    await cache.apply_scrape(5, "betpawa", [market("1"), market("2")], at(0))
    await cache.apply_scrape(5, "betpawa", [market("1", odds=3.0)], at(5))
    records = await stream_entries(cache)  # read now: run_once trims what it acknowledged
    await flusher.run_once()
    before = (market_rows(database_url), query(database_url, "SELECT * FROM market_availability_history"),
              query(database_url, "SELECT event_id, bookmaker, last_scraped_at, captured_at, last_confirmed_at,"
                                  " removed_at FROM availability_snapshots"))

    for stream, _, fields in records:  # the same records, delivered again
        await cache.client.xadd(stream, fields)
    replay = await flusher.run_once()

    assert replay.records == 2
    assert (replay.rows, replay.confirmed, replay.transitions) == (0, 0, 0)
    after = (market_rows(database_url), query(database_url, "SELECT * FROM market_availability_history"),
             query(database_url, "SELECT event_id, bookmaker, last_scraped_at, captured_at, last_confirmed_at,"
                                 " removed_at FROM availability_snapshots"))
    assert after == before


async def _reverse_streams(cache: MarketCache) -> None:
    """Deliver the records newest first, as two flushers committing out of order would."""
    entries = await stream_entries(cache)
    for stream, entry_id, _ in entries:
        await cache.client.xdel(stream, entry_id)
    for stream, _, fields in reversed(entries):
        await cache.client.xadd(stream, fields)


async def test_an_older_record_never_overwrites_a_newer_one(cache, make_flusher, database_url):
    flusher = make_flusher(batch_size=1)  # one record per transaction
    await cache.apply_scrape(6, "betpawa", [market("1"), market("2")], at(0))
    await flusher.run_once()
    await flusher.trim()
    await cache.apply_scrape(6, "betpawa", [market("1", odds=2.0), market("2")], at(5))  # odds change
    await cache.apply_scrape(6, "betpawa", [market("2")], at(10))  # "1" disappears, last odds 2.0
    await _reverse_streams(cache)

    stats = await flusher.run_once()  # the newest record commits first

    assert stats.batches == 2
    row = market_rows(database_url)[(None, 6, "1", None)]
    assert row["outcomes"][0]["odds"] == 2.0
    assert row["unavailable_at"] == at(10) and row["scraped_at"] == at(10)
    assert row["captured_at"] == at(5)  # the odds change, though its record came last
    assert row["last_confirmed_at"] == at(5)
    assert market_rows(database_url)[(None, 6, "2", None)]["last_confirmed_at"] == at(10)
    snap = query(database_url, "SELECT * FROM availability_snapshots")[0]
    assert (snap["last_scraped_at"], snap["captured_at"], snap["last_confirmed_at"]) == (at(10), at(5), at(10))
    assert await verify(cache, database_url) == []


async def test_records_delivered_newest_first_still_leave_the_newest_state(cache, make_flusher, database_url):
    await cache.apply_scrape(6, "betpawa", [market("1"), market("2")], at(0))
    await cache.apply_scrape(6, "betpawa", [market("1", odds=2.0), market("2")], at(5))
    await cache.apply_scrape(6, "betpawa", [market("2", odds=3.0)], at(10))
    await cache.apply_scrape(6, "betpawa", [market("1", odds=2.0), market("2", odds=3.0)], at(15))
    await _reverse_streams(cache)

    await make_flusher(batch_size=1).run_once()

    rows = market_rows(database_url)
    assert rows[(None, 6, "1", None)]["outcomes"][0]["odds"] == 2.0
    assert rows[(None, 6, "1", None)]["unavailable_at"] is None
    assert rows[(None, 6, "2", None)]["outcomes"][0]["odds"] == 3.0
    assert rows[(None, 6, "2", None)]["captured_at"] == at(10)
    snap = query(database_url, "SELECT * FROM availability_snapshots")[0]
    assert (snap["last_scraped_at"], snap["captured_at"], snap["last_confirmed_at"]) == (at(15), at(10), at(15))
    # (a row's own captured_at/last_confirmed_at can lag by one scrape here: its creating
    # record committed last; see the flusher's docstring)
    assert len(query(database_url, "SELECT * FROM market_availability_history")) == 2
    assert await verify(cache, database_url) == []


async def test_a_batch_staged_through_copy_writes_the_same_rows(cache, make_flusher, database_url, monkeypatch):
    """Insert-heavy batches go through a binary COPY into a staging table: same rows,
    same times, newest first or not, and a replay still changes nothing."""
    from availability.storage import batch

    staged: list[int] = []
    stage = batch.stage_markets

    async def counting_stage(conn, rows):
        staged.append(len(rows.markets))
        await stage(conn, rows)

    monkeypatch.setattr(batch, "STAGE_MIN_ROWS", 1)
    monkeypatch.setattr(batch, "stage_markets", counting_stage)
    await cache.apply_scrape(6, "betpawa", [market("1"), market("2", 2.5)], at(0))
    await cache.apply_scrape(6, "sportybet", [market("1", odds=1.5), market("3")], at(1))
    await cache.apply_scrape(6, "betpawa", [market("1", odds=2.0), market("2", 2.5)], at(5))
    await cache.apply_scrape(6, "betpawa", [market("2", 2.5)], at(10))  # "1" disappears
    records = await stream_entries(cache)
    await _reverse_streams(cache)

    stats = await make_flusher(batch_size=1).run_once()

    assert stats.records == 4 and stats.dead_letters == 0
    assert staged, "no batch went through the COPY staging path"
    row = market_rows(database_url)[(None, 6, "1", None)]
    assert row["outcomes"][0]["odds"] == 2.0 and row["unavailable_at"] == at(10)
    assert (row["captured_at"], row["last_confirmed_at"]) == (at(5), at(5))
    assert market_rows(database_url)[(None, 6, "2", 2.5)]["last_confirmed_at"] == at(10)
    competitor = market_rows(database_url, "competitor_market_odds")[("sportybet", 6, "3", None)]
    assert (competitor["captured_at"], competitor["last_confirmed_at"]) == (at(1), at(1))
    assert await verify(cache, database_url) == []
    for stream, _, fields in records:  # delivered again, in one staged batch
        await cache.client.xadd(stream, fields)
    replay = await make_flusher().run_once()
    assert (replay.records, replay.rows, replay.confirmed) == (4, 0, 0)
    assert await verify(cache, database_url) == []


def _counting_copies(monkeypatch) -> list:
    """Make every batch big enough for COPY, and record what copy_new_markets returned."""
    from availability.storage import batch

    results: list = []
    copy = batch.copy_new_markets

    async def counting_copy(conn, rows):
        results.append(await copy(conn, rows))
        return results[-1]

    monkeypatch.setattr(batch, "STAGE_MIN_ROWS", 1)
    monkeypatch.setattr(batch, "copy_new_markets", counting_copy)
    return results


async def test_an_all_new_batch_is_copied_into_its_tables_and_a_replay_upserts(
        cache, make_flusher, database_url, monkeypatch):
    """A first cycle (every market new) is COPYed straight into market_odds and
    competitor_market_odds: the same rows and times as the upserts write. Delivered
    again, the unique keys refuse the COPY, nothing of it stays, and the upserts
    change nothing."""
    copies = _counting_copies(monkeypatch)
    await cache.apply_scrape(6, "betpawa", [market("1"), market("2", 2.5), market("3", -0.0)], at(0))
    await cache.apply_scrape(6, "sportybet", [market("1", odds=1.5), market("3")], at(1))
    await cache.apply_scrape(7, "bet9ja", [market("1", odds=1.6)], at(2))
    records = await stream_entries(cache)

    stats = await make_flusher().run_once()

    assert (stats.records, stats.rows, stats.dead_letters) == (3, 6, 0)
    assert copies == [{"market_odds": 3, "competitor_market_odds": 3}]
    row = market_rows(database_url)[(None, 6, "2", 2.5)]
    assert row["outcomes"] == [{"name": "Over", "odds": 1.85, "is_active": True},
                               {"name": "Under", "odds": 1.95, "is_active": True}]
    assert row["market_groups"] == ["main"] and row["handicap_away"] == -2.5
    assert (row["captured_at"], row["last_confirmed_at"], row["scraped_at"], row["unavailable_at"]) == (
        at(0), at(0), at(0), None)
    competitor = market_rows(database_url, "competitor_market_odds")[("bet9ja", 7, "1", None)]
    assert (competitor["outcomes"][0]["odds"], competitor["captured_at"]) == (1.6, at(2))
    assert await verify(cache, database_url) == []
    before = query(database_url, "SELECT * FROM market_odds ORDER BY id")

    for stream, _, fields in records:  # delivered again: every market still says "new"
        await cache.client.xadd(stream, fields)
    with capture_logs() as logs:
        replay = await make_flusher().run_once()

    assert copies[-1] is None and [e for e in logs if e["event"] == "flusher.copy_refused"]
    assert (replay.records, replay.rows, replay.confirmed, replay.dead_letters) == (3, 0, 0, 0)
    assert query(database_url, "SELECT * FROM market_odds ORDER BY id") == before
    assert query(database_url, "SELECT count(*) AS n FROM competitor_market_odds") == [{"n": 3}]
    assert await verify(cache, database_url) == []


async def test_copied_rows_equal_the_rows_the_upserts_write(cache, make_flusher, database_url, monkeypatch):
    """The realistic scrapes of three bookmakers (lines, handicaps, text odds, many outcomes),
    flushed once through COPY and once, from the same records, through the upserts: every
    column of every row is the same."""
    from availability.storage import batch

    copies = _counting_copies(monkeypatch)
    for e, bookmaker in enumerate(BOOKMAKERS):
        await cache.apply_scrape(20 + e, bookmaker, event_markets(bookmaker, 0), at(e))
    records = await stream_entries(cache)
    columns = "source, event_id, betpawa_market_id, line, betpawa_market_name, handicap_type, handicap_home, " \
              "handicap_away, outcomes, market_groups, captured_at, seen_at, scraped_at, unavailable_at"
    home = columns.replace("source, ", "")
    every_row = (f"SELECT NULL::text AS source, {home} FROM market_odds UNION ALL "
                 f"SELECT {columns} FROM competitor_market_odds ORDER BY 1, 2, 3, 4")

    def written() -> list[dict]:
        return query(database_url, every_row)

    assert (await make_flusher().run_once()).dead_letters == 0
    assert copies and all(copies)
    through_copy = written()
    assert len(through_copy) > 400
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE market_odds, competitor_market_odds, availability_snapshots")

    async def refuse(conn, rows):
        return None

    monkeypatch.setattr(batch, "copy_new_markets", refuse)
    for stream, _, fields in records:
        await cache.client.xadd(stream, fields)
    assert (await make_flusher().run_once()).rows == len(through_copy)
    assert written() == through_copy


async def test_a_poison_record_in_an_all_new_batch_is_bisected_out(cache, make_flusher, database_url, monkeypatch):
    """PostgreSQL refuses the COPY of an all-new batch for a record's data (a NUL byte):
    the upserts decide, bisection finds the record, it alone goes to the dead letters."""
    copies = _counting_copies(monkeypatch)
    shard = cache.keys.shard_of(12)
    stream = cache.keys.changes(shard)
    await cache.apply_scrape(12, "betpawa", [market("1")], at(0))
    bad_market = msgpack.packb(["9@_", encode_market(CachedMarket("9", "bad\x00name", None, None, None, None, [], None)),
                                "n"])
    poison = await cache.client.xadd(stream, {
        "v": "2", "kind": "scrape", "event": "12", "bookmaker": "betpawa", "scraped_at": "1795867200000001",
        "completeness": "partial", "present": msgpack.packb(["9@_"]), "markets": bad_market})
    await cache.apply_scrape(16, "betpawa", [market("3")], at(5))  # same shard

    stats = await make_flusher(batch_size=10).run_once()

    assert copies[0] is None and any(copies[1:])  # refused whole; bisected, the halves without it are copied
    assert stats.dead_letters == 1 and stats.records == 2
    dead = await cache.client.xrange(cache.keys.dead_letters(shard))
    assert [f[b"source_id"] for _, f in dead] == [poison]
    assert set(market_rows(database_url)) == {(None, 12, "1", None), (None, 16, "3", None)}
    assert await pending(cache) == 0
    assert await verify(cache, database_url) == []


async def test_one_batch_touching_a_row_several_times_is_merged(cache, make_flusher, database_url):
    await cache.apply_scrape(8, "betpawa", [market("1"), market("2")], at(0))
    await cache.apply_scrape(8, "betpawa", [market("2")], at(5))  # 1 leaves
    await cache.apply_scrape(8, "betpawa", [market("1", odds=4.0), market("2")], at(10))  # 1 returns, new odds
    await cache.apply_scrape(8, "betpawa", [market("1", odds=4.0), market("2")], at(15))  # confirmed

    stats = await make_flusher().run_once()

    assert stats.batches == 1 and stats.records == 4
    row = market_rows(database_url)[(None, 8, "1", None)]
    assert row["outcomes"][0]["odds"] == 4.0 and row["unavailable_at"] is None
    assert (row["captured_at"], row["last_confirmed_at"], row["scraped_at"]) == (at(10), at(15), at(10))
    transitions = query(database_url, "SELECT transition, at FROM market_availability_history ORDER BY at")
    assert [(t["transition"], t["at"]) for t in transitions] == [
        ("became_unavailable", at(5)), ("became_available", at(10))]
    assert await verify(cache, database_url) == []


# ---------------------------------------------------------------- bad records


async def test_poison_records_go_to_the_dead_letter_stream_and_the_rest_is_flushed(cache, make_flusher, database_url):
    shard = cache.keys.shard_of(12)
    stream = cache.keys.changes(shard)
    await cache.apply_scrape(12, "betpawa", [market("1")], at(0))
    garbage = await cache.client.xadd(stream, {"v": "2", "kind": "scrape", "event": "12", "scraped_at": "soon"})
    # decodes fine, but PostgreSQL refuses text with a NUL byte: found by bisecting the batch
    bad_market = msgpack.packb(["9@_", encode_market(CachedMarket("9", "bad\x00name", None, None, None, None, [], None)),
                                "n"])
    rejected = await cache.client.xadd(stream, {
        "v": "2", "kind": "scrape", "event": "12", "bookmaker": "betpawa", "scraped_at": "1795867200000001",
        "completeness": "partial", "present": msgpack.packb(["9@_"]), "markets": bad_market})
    await cache.apply_scrape(12, "betpawa", [market("1"), market("2")], at(5))
    await cache.apply_scrape(16, "betpawa", [market("3")], at(5))  # same shard

    with capture_logs() as logs:
        stats = await make_flusher(batch_size=10).run_once()

    assert stats.dead_letters == 2 and stats.records == 3
    dead = await cache.client.xrange(cache.keys.dead_letters(shard))
    by_source = {f[b"source_id"]: f for _, f in dead}
    assert set(by_source) == {garbage, rejected}
    assert b"RecordError" in by_source[garbage][b"error"]
    assert b"NUL" in by_source[rejected][b"error"] or b"0x00" in by_source[rejected][b"error"]
    assert by_source[rejected][b"markets"] == bad_market  # the original fields travel along
    assert int(by_source[rejected][b"attempts"]) >= 1 and by_source[rejected][b"source_stream"] == stream.encode()
    assert set(market_rows(database_url)) == {(None, 12, "1", None), (None, 12, "2", None), (None, 16, "3", None)}
    assert await pending(cache) == 0
    assert [e for e in logs if e["event"] == "flusher.dead_letter"]
    assert await verify(cache, database_url) == []


# ---------------------------------------------------------------- bounded streams


async def test_trim_drops_only_what_every_group_acknowledged(cache, make_flusher, database_url):
    flusher = make_flusher()
    stream = cache.keys.changes(cache.keys.shard_of(1))
    for minute in (0, 5):
        await cache.apply_scrape(1, "betpawa", [market("1", odds=1.5 + minute)], at(minute))
    await flusher.run_once()
    # a consumer that dies holding the third record
    await cache.apply_scrape(1, "betpawa", [market("1", odds=9.0)], at(10))
    held = await cache.client.xreadgroup(GROUP, "dead-consumer", {stream: ">"}, count=1)
    held_id = held[0][1][0][0]
    await cache.apply_scrape(1, "betpawa", [market("1", odds=9.5)], at(15))
    await flusher.run_once()  # claim_idle_ms is long: the held record stays pending; run_once trims

    assert [i for i, _ in await cache.client.xrange(stream)][0] == held_id
    assert await flusher.trim() == 0
    assert await cache.client.xlen(stream) == 2

    # another group that has read nothing yet holds everything back
    await cache.client.xgroup_create(stream, "audit", id="0")
    assert await flusher.trim() == 0 and await cache.client.xlen(stream) == 2
    await cache.client.xgroup_destroy(stream, "audit")

    # a stream without any group is never trimmed
    other = cache.keys.changes((cache.keys.shard_of(1) + 1) % SHARDS)
    await cache.client.xgroup_destroy(other, GROUP)
    await cache.client.xadd(other, {"v": "1"})
    await flusher.trim()
    assert await cache.client.xlen(other) == 1


async def test_idle_records_of_a_dead_consumer_are_claimed(cache, make_flusher, database_url):
    stream = cache.keys.changes(cache.keys.shard_of(2))
    flusher = make_flusher(claim_idle_ms=100)
    await flusher.ensure_groups()
    await cache.apply_scrape(2, "betpawa", [market("1")], at(0))
    await cache.client.xreadgroup(GROUP, "dead-consumer", {stream: ">"}, count=10)
    assert (await flusher.run_once()).records == 0  # not idle long enough yet
    await asyncio.sleep(0.15)
    stats = await flusher.run_once()
    assert stats.claimed == 1 and stats.records == 1 and await pending(cache) == 0
    assert set(market_rows(database_url)) == {(None, 2, "1", None)}


async def test_batch_log_line_and_metrics(cache, make_flusher, database_url):
    before = metrics.REGISTRY.get_sample_value("availability_flusher_records_total", {"outcome": "flushed"}) or 0
    await cache.apply_scrape(3, "betpawa", [market("1")], at(0))
    await cache.apply_scrape(3, "betpawa", [market("2")], at(5))
    with capture_logs() as logs:
        await make_flusher().run_once()
    batch = [e for e in logs if e["event"] == "flusher.batch"]
    assert batch and batch[0]["records"] == 2 and batch[0]["transitions"] == 1
    assert {"rows", "lag_ms", "retries"} <= set(batch[0])
    after = metrics.REGISTRY.get_sample_value("availability_flusher_records_total", {"outcome": "flushed"})
    assert after - before == 2


# ---------------------------------------------------------------- several flushers


def _offer(event_id: int, cycle: int) -> list[CachedMarket]:
    """Markets come and go and change odds from cycle to cycle."""
    out = []
    for i in range(12):
        if (event_id + i + cycle) % 5 == 0:
            continue  # not listed this cycle
        line = None if i % 3 == 0 else (i % 3) * 0.5
        out.append(market(str(i), line, odds=1.5 + ((event_id * i + cycle) % 4) / 10))
    return out


async def test_two_flushers_at_once_lose_nothing_duplicate_nothing_and_newest_wins(cache, make_flusher, database_url):
    flushers = [make_flusher(batch_size=7, consumer=f"f{i}") for i in range(2)]
    stop = asyncio.Event()
    runs = [asyncio.create_task(f.run(stop)) for f in flushers]
    expected_transitions = 0
    for cycle in range(8):
        for event_id in range(1, 13):
            for bookmaker in ("betpawa", "sportybet"):
                outcome = await cache.apply_scrape(event_id, bookmaker, _offer(event_id, cycle), at(5 * cycle))
                expected_transitions += len(outcome.became_unavailable) + len(outcome.became_available)
        await asyncio.sleep(0.01)
    try:
        for _ in range(400):
            if await backlog(cache) == 0:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        totals = await asyncio.gather(*runs)

    assert sum(t.records for t in totals) == 8 * 12 * 2  # every record exactly once
    assert all(t.records > 0 for t in totals)  # both took part
    history = query(database_url, "SELECT count(*) AS n FROM market_availability_history")[0]["n"]
    assert history == expected_transitions > 0
    assert await verify(cache, database_url) == []


async def test_an_applied_scrape_that_changes_nothing_still_moves_postgres_clock(cache, make_flusher, database_url):
    await cache.apply_scrape(7, "betpawa", [market("1")], at(0))
    await cache.mark_event_removed(7, "betpawa", at(1))
    again = await cache.mark_event_removed(7, "betpawa", at(2))  # nothing left to stamp
    assert again.applied and not again.changed_anything and again.stream_id
    await make_flusher().run_once()
    rows = query(database_url, "SELECT last_scraped_at, removed_at FROM availability_snapshots")
    assert rows == [{"last_scraped_at": at(2), "removed_at": at(1)}]
    assert await verify(cache, database_url) == []
