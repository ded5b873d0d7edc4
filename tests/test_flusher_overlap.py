"""Batch k+1 is prepared while batch k is written, and every guarantee holds.

``Flusher._flush`` prepares the next batch (decode, convert, merge, lay out) in
a worker thread while the current one is written. These tests watch the order
of those steps, then break a batch in the middle of it: a poison record in the
second of two overlapped batches still goes to the dead letters while the rest
commits; a flusher stopped between overlapped batches (the batch ahead already
prepared) loses and duplicates nothing; a warm-up fence of one batch leaves it
and the one prepared ahead pending.
"""

from __future__ import annotations

import asyncio

import msgpack
import psycopg
import pytest

from factory import at, cached_market

from availability import storage
from availability.flush_batch import BatchWriting
from availability.flusher import Flusher
from availability.model import CachedMarket, encode_market
from availability.verify import verify
from streams import pending


def market(market_id: str, odds: float = 1.85) -> CachedMarket:
    return cached_market(market_id, None, outcomes=[("Yes", odds, True), ("No", 1.95, True)], groups=["main"])


def market_keys(database_url: str) -> set[tuple]:
    with psycopg.connect(database_url) as conn:
        return {tuple(r) for r in conn.execute("SELECT event_id, betpawa_market_id FROM market_odds")}


@pytest.fixture
def steps(monkeypatch) -> list[tuple[str, int]]:
    """("prepare start" | "prepare end" | "write start" | "write end", first record's event) in order."""
    seen: list[tuple[str, int]] = []
    prepare, write = BatchWriting._prepare, BatchWriting._write_prepared

    def event_of(entries) -> int:
        return int(entries[0].fields[b"event"]) if entries[0].fields else -1

    def watched_prepare(self, entries):
        seen.append(("prepare start", event_of(entries)))
        try:
            return prepare(self, entries)
        finally:
            seen.append(("prepare end", event_of(entries)))

    async def watched_write(self, batch):
        seen.append(("write start", event_of(batch.entries)))
        await write(self, batch)
        seen.append(("write end", event_of(batch.entries)))

    monkeypatch.setattr(BatchWriting, "_prepare", watched_prepare)
    monkeypatch.setattr(BatchWriting, "_write_prepared", watched_write)
    return seen


def batches_of(cache, count: int, size: int = 2, start: int = 100) -> list[list[int]]:
    """``count`` batches of ``size`` events, each batch on a shard of its own: one read
    (``batch_size`` records per shard) gets them all, in shard order."""
    by_shard: dict[int, list[int]] = {}
    for event in range(start, start + 2000):
        by_shard.setdefault(cache.keys.shard_of(event), []).append(event)
    shards = sorted(s for s, events in by_shard.items() if len(events) >= size)[:count]
    assert len(shards) == count
    return [by_shard[s][:size] for s in shards]


async def apply(cache, events: list[int]) -> None:
    for i, event in enumerate(events):
        await cache.apply_scrape(event, "betpawa", [market("1"), market(str(event))], at(i))


def keys_of(events) -> set[tuple]:
    return {(e, m) for e in events for m in ("1", str(e))}


async def test_the_next_batch_is_prepared_while_one_is_written(cache, database_url, steps):
    batches = batches_of(cache, 3)
    events = [e for b in batches for e in b]
    await apply(cache, events)
    async with Flusher(cache, database_url, batch_size=2, block_ms=50) as flusher:
        stats = await flusher.run_once()
    assert (stats.records, stats.batches, stats.dead_letters) == (6, 3, 0)
    firsts = [b[0] for b in batches]
    assert [e for step, e in steps if step == "write start"] == firsts  # in order, one after the other
    for k in range(2):  # batch k+1 was handed to the worker before batch k's write ended
        assert steps.index(("prepare start", firsts[k + 1])) < steps.index(("write end", firsts[k]))
        assert steps.index(("write start", firsts[k + 1])) > steps.index(("write end", firsts[k]))
    assert market_keys(database_url) == keys_of(events)
    assert await pending(cache) == 0
    assert await verify(cache, database_url) == []


async def test_a_poison_record_in_the_second_overlapped_batch_goes_to_the_dead_letters(cache, database_url, steps):
    batches = batches_of(cache, 3)
    good = [e for e in (e for b in batches for e in b) if e != batches[1][1]]
    await apply(cache, good)
    shard = cache.keys.shard_of(batches[1][1])
    bad = msgpack.packb(["9@_", encode_market(CachedMarket("9", "bad\x00name", None, None, None, None, [], None)),
                         "n"])
    poison = await cache.client.xadd(cache.keys.changes(shard), {  # batch 2's second record
        "v": "2", "kind": "scrape", "event": str(batches[1][1]), "bookmaker": "betpawa",
        "scraped_at": "1795867200000001", "completeness": "partial", "present": msgpack.packb(["9@_"]),
        "markets": bad})

    async with Flusher(cache, database_url, batch_size=2, block_ms=50) as flusher:
        stats = await flusher.run_once()

    assert (stats.records, stats.dead_letters) == (5, 1)
    assert steps.index(("prepare start", batches[1][0])) < steps.index(("write end", batches[0][0]))
    assert steps.index(("prepare start", batches[2][0])) < steps.index(("write end", batches[1][0]))
    dead = await cache.client.xrange(cache.keys.dead_letters(shard))
    assert [f[b"source_id"] for _, f in dead] == [poison]
    assert market_keys(database_url) == keys_of(good)
    assert await pending(cache) == 0
    assert await verify(cache, database_url) == []


async def test_stopped_between_overlapped_batches_nothing_is_lost_or_written_twice(
        cache, database_url, steps, monkeypatch):
    """Cancelled (a forced stop) when batch 2's write begins, batch 3 prepared ahead:
    batch 1 is committed and acknowledged, batches 2 and 3 stay pending, unwritten; the
    restarted flusher writes them, once."""
    batches = batches_of(cache, 3)
    events = [e for b in batches for e in b]
    await apply(cache, events)
    watched = BatchWriting._write_prepared
    calls = 0

    async def cancelled_on_second(self, batch):
        nonlocal calls
        calls += 1
        if calls == 2:  # batch 2's write: once batch 3 is being prepared, stop hard
            for _ in range(500):
                if ("prepare start", batches[2][0]) in steps:
                    break
                await asyncio.sleep(0.01)
            raise asyncio.CancelledError()
        await watched(self, batch)

    monkeypatch.setattr(BatchWriting, "_write_prepared", cancelled_on_second)
    async with Flusher(cache, database_url, batch_size=2, block_ms=50, consumer="crashing") as flusher:
        with pytest.raises(asyncio.CancelledError):
            await flusher.run_once()
    assert ("prepare start", batches[2][0]) in steps  # batch 3 was ahead when batch 2 was stopped
    assert ("write start", batches[1][0]) not in steps
    assert market_keys(database_url) == keys_of(batches[0])
    assert await pending(cache) == 4

    monkeypatch.setattr(BatchWriting, "_write_prepared", watched)
    async with Flusher(cache, database_url, batch_size=2, block_ms=50, consumer="crashing") as flusher:
        stats = await flusher.run_once()
    assert (stats.records, stats.dead_letters) == (4, 0)
    assert market_keys(database_url) == keys_of(events)
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM market_odds").fetchone()[0] == 12
    assert await pending(cache) == 0
    assert await verify(cache, database_url) == []


async def test_a_fenced_batch_leaves_it_and_the_batch_ahead_pending(cache, database_url, steps):
    """A warm-up between reading and writing fences batch 1 out: neither it nor batch 2,
    already prepared, is written or acknowledged; read again, they are written."""
    batches = batches_of(cache, 2)
    events = [e for b in batches for e in b]
    await apply(cache, events)
    async with Flusher(cache, database_url, batch_size=2, block_ms=50) as flusher:
        await flusher.ensure_groups()
        entries = await flusher._read(">", None)
        with psycopg.connect(database_url, autocommit=True) as conn:  # what `availability warm` does first
            conn.execute(storage.FENCE_BUMP_SQL, (cache.keys.prefix,))
        await flusher._flush(entries)
        assert flusher._fenced and market_keys(database_url) == set()
        assert ("prepare start", batches[1][0]) in steps and ("write start", batches[1][0]) not in steps
        assert await pending(cache) == 4
        stats = await flusher.run_once()
    assert stats.records == 4
    assert market_keys(database_url) == keys_of(events)
    assert await pending(cache) == 0
