"""The script's short form: a worker that remembers a snapshot sends only what changed.

A worker (``MarketCache``) remembers each snapshot as its own last application left
it (``SnapshotMemory``): meta ``applied_id`` and the stored markets. Its next complete
scrape of that snapshot goes in apply_scrape.lua's short form; when another
application came between (another worker, a warm-up), the script answers ``resend``
having written nothing and the worker sends the full form. Whatever the workers
remember, every outcome, snapshot, hash and change record must be what the full form
gives: proven against a cache that remembers nothing (``memory=0``), on random
interleavings of several workers.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from redis.exceptions import ResponseError

from factory import T0, at
from test_cache_differential import PAIRS, Delivery, delete_prefix, example_prefix, market_rows

from availability import metrics
from availability.cache import MarketCache, Scrape
from availability.flusher import Flusher
from availability.keys import REDELIVERY_FIELDS
from availability.model import MarketKey, key_to_field
from availability.records import decode_record
from availability.warm import warm
from reference import ReferenceCache, outcome_of

SHARDS = 2
BM = "betpawa"


def mk(market_id: str, line: float | None = None, odds: float = 1.85) -> dict:
    return {"betpawa_market_id": market_id, "betpawa_market_name": f"Market {market_id}", "line": line,
            "outcomes": [{"name": "A", "odds": odds, "is_active": True}, {"name": "B", "odds": 2.05}]}


def calls(form: str) -> float:
    return metrics.REGISTRY.get_sample_value("availability_cache_script_calls_total", {"form": form}) or 0.0


def comparable(outcome: Any) -> tuple:
    """An outcome without what differs between two deployments (stream ids)."""
    return (outcome.status, outcome.event_id, outcome.bookmaker, outcome.scraped_at, outcome.new,
            outcome.changed, outcome.unchanged, outcome.became_unavailable, outcome.became_available,
            outcome.rejected, outcome.partial, outcome.last_scraped_at, type(outcome.error))


async def state(cache: MarketCache) -> dict[str, Any]:
    """Every hash of every snapshot (meta without the redelivery fields, which hold stream
    ids), the indexes, and the change records of each snapshot in stream order (a resent
    call runs after the rest of its batch, so records of different snapshots may
    interleave otherwise; changes in a fixed order: the order of a record's markets was
    never defined)."""
    client, keys = cache.client, cache.keys
    out: dict[str, Any] = {}
    for shard in keys.all_shards():
        pairs = [keys.parse_snapshot_member(m) for m in await client.zrange(keys.snapshots(shard), 0, -1)]
        for e, b in pairs:
            meta = await client.hgetall(keys.meta(e, b))
            for name in REDELIVERY_FIELDS:
                meta.pop(name.encode(), None)
            out[f"{e}:{b}"] = (await client.hgetall(keys.markets(e, b)),
                               await client.hgetall(keys.unavailable(e, b)), meta)
        out[f"alerts:{shard}"] = await client.zrange(keys.alerts(shard), 0, -1, withscores=True)
        for sid, fields in await client.xrange(keys.changes(shard)):
            r = decode_record(sid, fields)
            out.setdefault(f"records:{r.event_id}:{r.bookmaker}", []).append(
                (r.kind, r.scraped_at, r.completeness, r.present_blob,
                 sorted(r.changes, key=lambda c: (c.key.betpawa_market_id, str(c.key.line))),
                 r.rejected, r.kickoff, r.prev_complete))
    return out


async def deliver(cache: MarketCache, group: list[Delivery]) -> list[Any]:
    return await cache.apply_batch([d.scrape for d in group if not d.removed],
                                   removed=[d.scrape for d in group if d.removed])


# ---------------------------------------------------------------- equivalence, any interleaving


@st.composite
def scrape_pool(draw: Any) -> list[Delivery]:
    """Scrapes in time order, mostly complete ones of one (event, bookmaker): the short
    form's case (test_cache_differential's markets: now and then a quarantined one)."""
    pool = []
    minute = 0
    for _ in range(draw(st.integers(1, 20))):
        event, bookmaker = draw(st.sampled_from([PAIRS[0]] * 10 + PAIRS))
        minute += 0 if draw(st.integers(0, 8)) == 0 else 1
        when = T0 + timedelta(minutes=minute)
        kind = draw(st.sampled_from(["complete"] * 16 + ["partial", "confirmed_empty", "removed"]))
        if kind == "removed":
            pool.append(Delivery(Scrape(event, bookmaker, [], when), removed=True))
        elif kind == "confirmed_empty":
            pool.append(Delivery(Scrape(event, bookmaker, [], when, confirmed_empty=True)))
        else:
            pool.append(Delivery(Scrape(event, bookmaker, draw(market_rows()), when, complete=kind == "complete")))
    return pool


@st.composite
def interleavings(draw: Any) -> list[tuple[int, list[Delivery]]]:
    """The pool in time order (now and then a delivery repeated or swapped), each group
    handed to one of three workers, the first one most often (so it mostly remembers)."""
    pool = draw(scrape_pool())
    order = list(range(len(pool)))
    for _ in range(draw(st.integers(0, 3))):
        if len(order) > 1:
            i = draw(st.integers(0, len(order) - 2))
            order[i], order[i + 1] = order[i + 1], order[i]
    for again, position in draw(st.lists(st.tuples(st.integers(0, len(pool) - 1), st.integers(0, len(pool))),
                                         max_size=3)):
        order.insert(position, again)
    out: list[tuple[int, list[Delivery]]] = []
    for i in order:
        worker = draw(st.sampled_from([0] * 8 + [1, 2]))
        if out and out[-1][0] == worker and not pool[i].removed and draw(st.booleans()):
            out[-1][1].append(pool[i])
        else:
            out.append((worker, [pool[i]]))
    return out


async def same_as_the_full_form(redis_client: Any, key_prefix: str, plan: list[tuple[int, list[Delivery]]],
                                capacity: int) -> None:
    """Three workers (memory ``capacity``) apply the plan under one prefix, a cache that
    remembers nothing applies it under another: every outcome, hash and record the same."""
    prefix, full_prefix = example_prefix(key_prefix), example_prefix(key_prefix)
    workers = [MarketCache(redis_client, prefix=prefix, shards=SHARDS, memory=capacity) for _ in range(3)]
    full = MarketCache(redis_client, prefix=full_prefix, shards=SHARDS, memory=0)
    try:
        await workers[0].mark_ready()
        await full.mark_ready()
        for worker, group in plan:
            got = await deliver(workers[worker], group)
            expected = await deliver(full, group)
            assert [comparable(o) for o in got] == [comparable(o) for o in expected], group
        assert await state(workers[0]) == await state(full)
        for e, b in {(d.scrape.event_id, d.scrape.bookmaker) for _, g in plan for d in g}:
            assert await workers[0].get_snapshot(e, b) == await full.get_snapshot(e, b)
        assert all(len(w.memory) <= capacity for w in workers)
    finally:
        await delete_prefix(redis_client, prefix)
        await delete_prefix(redis_client, full_prefix)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=interleavings(), capacity=st.sampled_from([1, 2, 4096]))
async def test_workers_with_any_memory_give_what_the_full_form_gives(redis_client, key_prefix, plan, capacity):
    await same_as_the_full_form(redis_client, key_prefix, plan, capacity)


@st.composite
def steady_plans(draw: Any) -> list[tuple[int, list[Delivery]]]:
    """Clean complete scrapes of two snapshots (markets leaving and coming back, odds from
    two values, so a market often returns as it left), now and then a partial one, a
    repeat or an older one, handed mostly to one worker: the short form's steady state."""
    out: list[tuple[int, list[Delivery]]] = []
    minute = 0
    for _ in range(draw(st.integers(2, 24))):
        bookmaker = draw(st.sampled_from(["betpawa"] * 3 + ["sportybet"]))
        minute += draw(st.sampled_from([1] * 8 + [0, -1]))
        listed = draw(st.sets(st.integers(1, 6), min_size=1))
        markets = [mk(str(i), None, draw(st.sampled_from([1.5, 2.0]))) for i in sorted(listed)]
        scrape = Scrape(11, bookmaker, markets, at(minute), complete=draw(st.integers(0, 9)) > 0)
        worker = draw(st.sampled_from([0] * 8 + [1, 2]))
        if out and out[-1][0] == worker and draw(st.integers(0, 4)) == 0:
            out[-1][1].append(Delivery(scrape))
        else:
            out.append((worker, [Delivery(scrape)]))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=steady_plans())
async def test_steady_state_short_forms_give_what_the_full_form_gives(redis_client, key_prefix, plan):
    await same_as_the_full_form(redis_client, key_prefix, plan, 4096)


# ---------------------------------------------------------------- the protocol, step by step


def steady(n: int, odds: float = 1.85) -> list[dict]:
    return [mk(str(i), 2.5, odds if i == 0 else 1.85) for i in range(n)]


async def test_the_worker_that_applied_last_sends_only_what_changed(cache, redis_client):
    seen: list[list[Any]] = []
    many = cache.script.many

    async def spy(batch):  # the arguments that went to Redis, then the real call
        seen.extend(args for _, args in batch)
        return await many(batch)

    cache.script.many = spy
    ref = ReferenceCache()
    first = [*steady(40), mk("900")]
    for when, markets in enumerate([first, steady(40), steady(40, odds=1.9), [*steady(40), mk("900")]]):
        outcome = await cache.apply_scrape(1, BM, markets, at(when))
        assert outcome_of(outcome) == ref.apply(Scrape(1, BM, markets, at(when)))
    assert await cache.get_snapshot(1, BM) == ref.snapshot(1, BM)
    # full, then short forms: nothing changed but 900 leaving (0 sent), market 0's odds (1 sent),
    # 0's odds back (1 sent) and 900 returning as it left (remembered: not sent, read from the
    # store for the record); ARGV[11] is n, the markets sent
    assert [len(a) for a in seen][0] == 11 + 2 * 41 + 1
    assert [int(a[10]) for a in seen] == [41, 0, 1, 1]
    assert [len(a) for a in seen[1:]] == [11 + 2 * n + 4 for n in (0, 1, 1)]
    assert outcome.became_available == (MarketKey("900", None),)
    assert msgpack.unpackb(seen[1][-1]) == ["900@_"]  # stored, not listed: stamped
    assert msgpack.unpackb(seen[2][-1]) == ["900@_"]  # still not listed: already stamped
    assert msgpack.unpackb(seen[3][-1]) == []


async def test_a_stale_memory_costs_one_resend_and_gives_what_the_full_form_gives(redis_client, key_prefix):
    a, b = (MarketCache(redis_client, prefix=key_prefix, shards=SHARDS) for _ in range(2))
    full = MarketCache(redis_client, prefix=key_prefix + "f", shards=SHARDS, memory=0)
    try:
        await a.mark_ready()
        await full.mark_ready()
        plan = [(a, [mk("1"), mk("2"), mk("3")]),
                (b, [mk("1", odds=2.0), mk("2")]),  # b applies between: a's memory is stale
                (a, [mk("1", odds=2.0), mk("3"), mk("4")]),  # short form -> resend -> full form
                (a, [mk("1", odds=2.1), mk("3"), mk("4")])]  # a remembers again: short form, applied
        resent = calls("resent")
        for when, (worker, markets) in enumerate(plan):
            got = await worker.apply_scrape(7, BM, markets, at(when))
            expected = await full.apply_scrape(7, BM, markets, at(when))
            assert comparable(got) == comparable(expected)
        assert calls("resent") == resent + 1
        assert await state(a) == await state(full)
    finally:
        await delete_prefix(redis_client, key_prefix)
        await delete_prefix(redis_client, key_prefix + "f")


async def test_a_resend_reply_wrote_nothing(cache, redis_client, key_prefix):
    from test_cache import dump

    other = MarketCache(redis_client, prefix=key_prefix, shards=SHARDS)
    await cache.apply_scrape(3, BM, [mk("1"), mk("2")], at(0))
    await other.apply_scrape(3, BM, [mk("1"), mk("2", odds=2.0)], at(1))
    prepared = cache._prepare(Scrape(3, BM, [mk("1", odds=3.0)], at(2)))
    short, form = cache.memory.short_args(prepared)
    assert form.missing == ["2@_"]
    before = await dump(redis_client, key_prefix)
    assert await cache.script.many([(prepared.keys, short)]) == [[b"resend"]]
    assert await dump(redis_client, key_prefix) == before


async def test_an_account_of_the_stored_markets_that_does_not_hold_is_resent(cache, redis_client, key_prefix):
    """The applied_id matches, but the fields the worker says are stored are not all there
    is (or one is not stored): nothing is written, the full form is asked for."""
    from test_cache import dump

    await cache.apply_scrape(4, BM, [mk("1"), mk("2"), mk("3")], at(0))
    prepared = cache._prepare(Scrape(4, BM, [mk("1"), mk("2", odds=2.0)], at(1)))
    short, form = cache.memory.short_args(prepared)
    assert (short[10], form.missing) == ("1", ["3@_"])
    before = await dump(redis_client, key_prefix)
    wrong = {
        "a stored field left out": short[:-1] + [msgpack.packb([])],
        "a field that is not stored": short[:-1] + [msgpack.packb(["3@_", "77@_"])],
        "one listed too many": short[:-2] + ["3", short[-1]],
        "one listed too few": short[:-2] + ["1", short[-1]],
    }
    for name, argv in wrong.items():
        assert await cache.script.many([(prepared.keys, argv)]) == [[b"resend"]], name
        assert await dump(redis_client, key_prefix) == before, name
    # and the worker's own short form applies
    outcome = await cache.apply_scrape(4, BM, [mk("1"), mk("2", odds=2.0)], at(1))
    assert (outcome.changed, outcome.unchanged, [key_to_field(k) for k in outcome.became_unavailable]) == (
        1, 1, ["3@_"])


async def test_bad_short_forms_are_refused_before_any_write(cache, redis_client, key_prefix):
    from test_cache import dump

    await cache.apply_scrape(5, BM, [mk("1"), mk("2")], at(0))
    prepared = cache._prepare(Scrape(5, BM, [mk("1", odds=2.0), mk("2")], at(1)))
    short, _ = cache.memory.short_args(prepared)
    n = int(short[10])
    tail = 11 + 2 * n  # kickoff_us, base_id, listed, missing_blob
    assert n == 1 and len(short) == tail + 4
    bad = {
        "partial": short[:5] + ["partial"] + short[6:],
        "removed": ["removed"] + short[1:],
        "a held market": short[:12] + [b""] + short[13:],
        "a payload that is not a market": short[:12] + [b"\x92\xa1x\xa1y"] + short[13:],
        "another market's payload": short[:12] + [msgpack.packb(["9", "Market 9", None, None, None, None, [], None])]
                                    + short[13:],
        "missing_blob not msgpack": short[:-1] + [b"\xc1"],
        "missing_blob not a list": short[:-1] + [msgpack.packb(5)],
        "a missing field also sent": short[:-1] + [msgpack.packb(["1@_"])],
        "a missing field twice": short[:-1] + [msgpack.packb(["2@_", "2@_"])],
        "a missing field not text": short[:-1] + [msgpack.packb([7])],
        "listed below the markets sent": short[:-2] + ["0", short[-1]],
        "listed not a number": short[:-2] + ["all", short[-1]],
        "no base_id": short[:-3] + ["", *short[-2:]],
        "complete with nothing listed": short[:10] + ["0", short[tail], short[-3], "0", msgpack.packb([])],
    }
    before = await dump(redis_client, key_prefix)
    for name, argv in bad.items():
        with pytest.raises(ResponseError, match="availability: ") as info:
            await redis_client.evalsha(await cache.script.load(), len(prepared.keys), *prepared.keys, *argv)
        assert await dump(redis_client, key_prefix) == before, f"{name} wrote something: {info.value}"
    assert (await cache.script.many([(prepared.keys, short)]))[0][0] == b"applied"


async def test_a_retry_is_a_duplicate_whatever_form_either_call_took(redis_client, key_prefix):
    """The scrape digest is the full form's: a retry recognises the first call whichever
    form each took, and answers what that application did."""
    a = MarketCache(redis_client, prefix=key_prefix, shards=SHARDS)
    forgetful = MarketCache(redis_client, prefix=key_prefix, shards=SHARDS, memory=0)
    try:
        await a.mark_ready()
        await a.apply_scrape(6, BM, [mk("1"), mk("2")], at(0))
        short_first = await a.apply_scrape(6, BM, [mk("1", odds=2.0)], at(1))  # short form
        retried = await forgetful.apply_scrape(6, BM, [mk("1", odds=2.0)], at(1))  # full form
        assert retried.duplicate and comparable(retried)[1:] == comparable(short_first)[1:]
        full_first = await forgetful.apply_scrape(6, BM, [mk("1", odds=2.2), mk("2")], at(2))
        prepared = a._prepare(Scrape(6, BM, [mk("1", odds=2.2), mk("2")], at(2)))
        assert a.memory.short_args(prepared) is not None  # a remembers t=1: its retry goes short
        retried = await a.apply_scrape(6, BM, [mk("1", odds=2.2), mk("2")], at(2))
        assert retried.duplicate and comparable(retried)[1:] == comparable(full_first)[1:]
    finally:
        await delete_prefix(redis_client, key_prefix)


async def test_memory_is_bounded_and_zero_turns_it_off(redis_client, key_prefix):
    small = MarketCache(redis_client, prefix=key_prefix, shards=SHARDS, memory=2)
    off = MarketCache(redis_client, prefix=key_prefix, shards=SHARDS, memory=0)
    try:
        await small.mark_ready()
        for event in (1, 2, 3):
            await small.apply_scrape(event, BM, [mk("1")], at(0))
        assert len(small.memory) == 2
        assert [small.memory.short_args(small._prepare(Scrape(e, BM, [mk("1")], at(1)))) is None
                for e in (1, 2, 3)] == [True, False, False]  # the least recently used went
        await off.apply_scrape(2, BM, [mk("1")], at(1))
        assert len(off.memory) == 0
        assert off.memory.short_args(off._prepare(Scrape(2, BM, [mk("1")], at(2)))) is None
        # partial scrapes and held markets go in the full form and make the worker forget
        await small.apply_scrape(3, BM, [mk("1")], at(1), complete=False)
        assert small.memory.short_args(small._prepare(Scrape(3, BM, [mk("1")], at(2)))) is None
    finally:
        await delete_prefix(redis_client, key_prefix)
    with pytest.raises(ValueError, match="memory: expected a number of snapshots"):
        MarketCache(redis_client, prefix=key_prefix, memory=-1)


async def test_after_warm_up_a_remembered_snapshot_is_sent_whole(redis_client, key_prefix, database_url):
    """Warm-up rewrites a snapshot from PostgreSQL without an applied_id: no worker's
    memory matches it, so the first scrape after it goes in the full form."""
    cache = MarketCache(redis_client, prefix=key_prefix, shards=SHARDS)
    ref = ReferenceCache()
    scrapes = [Scrape(8, BM, [mk("1"), mk("2"), mk("3", 1.5)], T0),
               Scrape(8, BM, [mk("1", odds=2.0), mk("2")], at(1)),
               Scrape(8, BM, [mk("1", odds=2.0), mk("3", 1.5), mk("4")], at(2))]
    try:
        await cache.mark_ready()
        for s in scrapes[:2]:
            assert outcome_of((await cache.apply_batch([s]))[0]) == ref.apply(s)
        flusher = Flusher(cache, database_url)
        try:
            await flusher.run_once()
        finally:
            await flusher.close()
        await delete_prefix(redis_client, key_prefix)  # Redis lost its data
        stats = await warm(MarketCache(redis_client, prefix=key_prefix, shards=SHARDS), database_url)
        assert stats.snapshots == 1
        assert not await redis_client.hexists(cache.keys.meta(8, BM), "applied_id")
        resent = calls("resent")
        outcome = await cache.apply_scrape(**vars(scrapes[2]))
        assert calls("resent") == resent + 1
        assert outcome_of(outcome) == ref.apply(scrapes[2])
        assert await cache.get_snapshot(8, BM) == ref.snapshot(8, BM)
        assert await redis_client.hget(cache.keys.meta(8, BM), "applied_id") == outcome.stream_id.encode()
    finally:
        await delete_prefix(redis_client, key_prefix)



# ---------------------------------------------------------------- the payload-is-a-market rule


_IDS = iter(range(900_000, 10_000_000))
_PARTS = st.text(alphabet="1x@", min_size=0, max_size=3)


@st.composite
def fields_and_ids(draw: Any) -> tuple[str, str]:
    """A market id (an '@' in it too) and the field a payload of it is sent under: the id
    and one more character ("<id>@<line>" when it is '@') and the rest, or anything with an
    '@' (another id, an id's prefix, a line holding '@')."""
    market_id = draw(st.text(alphabet="1x@", min_size=1, max_size=3))
    if draw(st.integers(0, 3)) > 0:
        field = market_id + draw(st.sampled_from("@@1x")) + draw(_PARTS)
    else:
        field = draw(_PARTS) + "@" + draw(_PARTS)
    return field, market_id


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=fields_and_ids())
async def test_a_payload_is_stored_only_under_a_field_of_its_own_market(cache, redis_client, case):
    """The script's check of a payload's field (is_market in apply_scrape.lua) against the
    rule it implements: the field is "<id>@<line>" of the payload's own id, the line
    non-empty and without '@'. Anything else is refused before any write."""
    field, market_id = case
    # (a field without an "@", shorter than "x@", or the call's other market is refused
    # earlier, as such)
    assume(len(field) >= 2 and "@" in field and field != "2@_")
    event_id = next(_IDS)
    prepared = cache._prepare(Scrape(event_id, BM, [mk("1"), mk("2")], at(0)))
    args = list(prepared.args)
    assert args[11] == "1@_"
    args[11] = field
    args[12] = msgpack.packb([market_id, "Market", None, None, None, None, [], None])
    rule = len(field) > len(market_id) + 1 and field.startswith(market_id + "@") \
        and "@" not in field[len(market_id) + 1:]
    sha = await cache.script.load()
    if rule:
        reply = await redis_client.evalsha(sha, len(prepared.keys), *prepared.keys, *args)
        assert reply[0] == b"applied"
    else:
        with pytest.raises(ResponseError, match="payload is not a market for this field"):
            await redis_client.evalsha(sha, len(prepared.keys), *prepared.keys, *args)
        assert await redis_client.exists(cache.keys.markets(event_id, BM)) == 0
