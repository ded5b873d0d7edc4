"""MarketCache on a real 3-master Redis Cluster.

Every key of a shard -- the event hashes, the shard index, the change and
dead-letter streams, the ready flag -- carries the hash tag ``{<prefix>:<shard>}``,
so each apply_scrape call touches one slot. These tests apply scrapes over
events of every shard, with a prefix chosen so the shards land on all three
masters, and check the results against the pure reference model
(``reference.py``), the cluster-only code paths of ``MarketCache``
(per-scrape EVALSHA instead of one pipeline, reads without a pipeline,
``cold_shards``), staleness, event removal, ``SCRIPT FLUSH`` on every node,
and the slot of every key with ``CLUSTER KEYSLOT``.
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from factory import T0

from availability.cache import MarketCache, Scrape
from availability.errors import CacheNotReady, ConfigurationError
from availability.keys import KeySchema
from availability.model import MarketKey, format_ts, key_sort_order
from availability.records import decode_record
from reference import ReferenceCache, outcome_of

pytestmark = pytest.mark.slow

SHARDS = 16
BOOKMAKERS = ("betpawa", "sportybet", "bet9ja")
# three events per shard: every shard, and so every master, gets keys
EVENTS = [5_000 + i for i in range(3 * SHARDS)]
_TAG = re.compile(rb"^\{([^}]*)\}")


def at(cycle: int, event_id: int = 0, k: int = 0) -> datetime:
    return T0 + timedelta(minutes=5 * cycle, milliseconds=10 * (event_id % 1000) + k)


def market(market_id: str, line: float | None, odds: float, name: str = "Over/Under") -> dict:
    return {
        "betpawa_market_id": market_id,
        "betpawa_market_name": name,
        "line": line,
        "outcomes": [
            {"name": "Over", "odds": odds, "is_active": True},
            {"name": "Under", "odds": round(4.0 - odds, 2), "is_active": True},
        ],
        "market_groups": ["goals"],
    }


def offer(event_id: int, bookmaker: str, cycle: int) -> list[dict]:
    """Deterministic markets of one scrape: a no-line market and a 0.0 line (different
    markets), odds that change now and then, a market that leaves and comes back."""
    b = BOOKMAKERS.index(bookmaker)
    keys: list[tuple[str, float | None]] = [("1", None), ("16", 0.0), ("16", -1.0), ("16", 1.0)]
    keys += [("18", line) for line in (0.5, 1.5, 2.5, 3.5, 4.5)]
    out = []
    for i, (market_id, line) in enumerate(keys):
        if (market_id, line) == ("18", 4.5) and (event_id + b + cycle) % 3 == 0:
            continue  # specialised: listed two cycles out of three
        bumps = sum(1 for c in range(1, cycle + 1) if (event_id + 3 * i + b + c) % 7 == 0)
        out.append(market(market_id, line, round(1.5 + 0.1 * i + 0.05 * bumps, 2)))
    return out


def keys_of(markets: list[dict]) -> set[MarketKey]:
    return {MarketKey(m["betpawa_market_id"], m["line"]) for m in markets}


def scrape(event_id: int, bookmaker: str, cycle: int, **kw: Any) -> Scrape:
    k = BOOKMAKERS.index(bookmaker)
    markets = kw.pop("markets", None)
    if markets is None:
        markets = offer(event_id, bookmaker, cycle)
    return Scrape(event_id, bookmaker, markets, at(cycle, event_id, k), **kw)


def cycle_scrapes(cycle: int, events: list[int] = EVENTS) -> list[Scrape]:
    return [scrape(e, bm, cycle) for e in events for bm in BOOKMAKERS]


# ---------------------------------------------------------------- fixtures


async def _node_clients(urls: list[str]) -> list[aioredis.Redis]:
    return [aioredis.Redis.from_url(url) for url in urls]


async def _delete_prefix_on_every_node(urls: list[str], prefix: str) -> None:
    """SCAN each node for the prefix's keys and UNLINK them one by one (keys of
    different slots cannot share a command in a cluster)."""
    for client in await _node_clients(urls):
        try:
            for pattern in (f"{{{prefix}:*", f"{prefix}:*"):
                async for key in client.scan_iter(match=pattern, count=1000):
                    await client.unlink(key)
        finally:
            await client.aclose()


async def _covering_prefix(client: AsyncRedisCluster, base: str) -> str:
    """A prefix whose SHARDS hash tags are spread over every master."""
    await client.initialize()
    masters = {node.name for node in client.get_primaries()}
    assert len(masters) == 3
    for i in range(1000):
        prefix = f"{base}{i}"
        schema = KeySchema(prefix, SHARDS)
        owners = {client.get_node_from_key(schema.tag(s)).name for s in schema.all_shards()}
        if owners == masters:
            return prefix
    raise AssertionError("no prefix spreads the shards over every master")


@pytest.fixture
async def cluster_cache(redis_cluster, key_prefix) -> AsyncIterator[MarketCache]:
    cache = MarketCache.from_url(redis_cluster.url, cluster=True, prefix=key_prefix, shards=SHARDS)
    prefix = await _covering_prefix(cache.client, key_prefix)
    await cache.close()
    cache = MarketCache.from_url(redis_cluster.url, cluster=True, prefix=prefix, shards=SHARDS)
    try:
        await cache.mark_ready()
        yield cache
    finally:
        await cache.close()
        await _delete_prefix_on_every_node(redis_cluster.urls, prefix)


async def keys_per_node(urls: list[str], prefix: str) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    for url, client in zip(urls, await _node_clients(urls)):
        try:
            out[url] = [k async for k in client.scan_iter(match=f"{{{prefix}:*", count=1000)]
        finally:
            await client.aclose()
    return out


# ---------------------------------------------------------------- behaviour across every master


async def test_scrapes_over_every_shard_and_master_match_the_reference(redis_cluster, cluster_cache):
    cache, ref = cluster_cache, ReferenceCache()
    assert cache._is_cluster

    async def apply(scrapes: list[Scrape], removed: list[Scrape] = ()) -> list:
        outcomes = await cache.apply_batch(scrapes, removed=removed)
        expected = [ref.apply(s) for s in scrapes]
        expected += [ref.mark_event_removed(s.event_id, s.bookmaker, s.scraped_at) for s in removed]
        assert [outcome_of(o) for o in outcomes] == expected
        return outcomes

    first = await apply(cycle_scrapes(0))
    assert {o.status for o in first} == {"applied"}
    assert sum(o.new for o in first) == sum(len(offer(e, bm, 0)) for e in EVENTS for bm in BOOKMAKERS)

    second = await apply(cycle_scrapes(1))
    assert sum(o.changed for o in second) > 0
    assert sum(len(o.became_unavailable) for o in second) > 0

    # cycle 2: partial pages, a flaky empty page, a confirmed-empty event, a removal,
    # a stale replay of cycle 1, and apply_scrape besides apply_batch
    mixed: list[Scrape] = []
    for n, e in enumerate(EVENTS):
        for bm in BOOKMAKERS:
            s = scrape(e, bm, 2)
            if n % 5 == 1:
                s = scrape(e, bm, 2, markets=offer(e, bm, 2)[:4], complete=False)
            mixed.append(s)
    mixed[3] = scrape(EVENTS[1], "betpawa", 2, markets=[])  # ignored_empty
    mixed[6] = scrape(EVENTS[2], "betpawa", 2, markets=[], confirmed_empty=True)
    mixed.append(scrape(EVENTS[4], "sportybet", 1))  # stale: cycle 1 was applied
    removed = [Scrape(EVENTS[7], "bet9ja", [], at(2, EVENTS[7], 9))]
    third = await apply([s for i, s in enumerate(mixed) if i != 9], removed)
    statuses = {o.status for o in third}
    assert statuses == {"applied", "ignored_empty", "stale"}
    single = await cache.apply_scrape(mixed[9].event_id, mixed[9].bookmaker, mixed[9].markets, mixed[9].scraped_at)
    assert outcome_of(single) == ref.apply(mixed[9])

    returning = await apply(cycle_scrapes(3))
    assert sum(len(o.became_available) for o in returning) > 0

    # reads: every snapshot, through bookmakers_of and with explicit bookmakers
    snapshots = await cache.get_snapshots(EVENTS)
    assert snapshots == {pair: ref.snapshot(*pair) for pair in ref.pairs()}
    assert await cache.get_snapshots(EVENTS, BOOKMAKERS) == snapshots
    assert await cache.get_snapshot(EVENTS[2], "betpawa") == ref.snapshot(EVENTS[2], "betpawa")
    assert await cache.bookmakers_of(EVENTS[0]) == sorted(BOOKMAKERS)
    listed = [pair for shard in cache.keys.all_shards() for pair in await cache.list_snapshots(shard)]
    assert sorted(listed) == ref.pairs()

    # one change record per applied scrape, on its own shard's stream
    applied = [o for o in [*first, *second, *third, single, *returning] if o.applied and o.stream_id]
    per_shard: dict[int, int] = defaultdict(int)
    for o in applied:
        per_shard[cache.keys.shard_of(o.event_id)] += 1
    for shard in cache.keys.all_shards():
        stream = cache.keys.changes(shard)
        assert await cache.client.xlen(stream) == per_shard[shard]
        for sid, fields in await cache.client.xrange(stream, count=5):
            assert cache.keys.shard_of(decode_record(sid, fields).event_id) == shard

    # the data really is spread: every master holds keys of this deployment
    nodes = await keys_per_node(redis_cluster.urls, cache.keys.prefix)
    assert all(nodes.values()), {url: len(keys) for url, keys in nodes.items()}


async def test_mark_event_removed_and_stale_scrapes_on_a_cluster(cluster_cache):
    cache = cluster_cache
    shards_seen = set()
    for e in EVENTS[:SHARDS]:  # one event per shard
        shards_seen.add(cache.keys.shard_of(e))
        await cache.apply_scrape(e, "betpawa", offer(e, "betpawa", 0), at(0, e))
        stream = cache.keys.changes(cache.keys.shard_of(e))
        length = await cache.client.xlen(stream)

        removed = await cache.mark_event_removed(e, "betpawa", at(1, e))
        assert removed.applied
        assert removed.became_unavailable == tuple(sorted(keys_of(offer(e, "betpawa", 0)), key=key_sort_order))
        snap = await cache.get_snapshot(e, "betpawa")
        assert snap.available_markets == ()
        assert {m.unavailable_at for m in snap.markets} == {at(1, e)}
        meta = cache.keys.meta(e, "betpawa")
        assert await cache.client.hget(meta, "removed_at") == format_ts(at(1, e)).encode()
        assert await cache.client.xlen(stream) == length + 1

        # older or equal scrapes and removals are refused and change nothing
        for when in (at(1, e), at(0, e) + timedelta(minutes=1)):
            stale = await cache.apply_scrape(e, "betpawa", offer(e, "betpawa", 1), when)
            assert stale.stale and stale.last_scraped_at == at(1, e)
            again = await cache.mark_event_removed(e, "betpawa", when)
            # the removal's own re-delivery is a duplicate, an older one stale
            assert again.duplicate if when == at(1, e) else again.stale
        [batch_stale] = await cache.apply_batch([scrape(e, "betpawa", 0)])
        assert batch_stale.stale
        assert await cache.get_snapshot(e, "betpawa") == snap
        assert await cache.client.hget(meta, "removed_at") == format_ts(at(1, e)).encode()
        assert await cache.client.xlen(stream) == length + 1

        back = await cache.apply_scrape(e, "betpawa", offer(e, "betpawa", 2), at(2, e))
        assert set(back.became_available) == keys_of(offer(e, "betpawa", 0)) & keys_of(offer(e, "betpawa", 2))
        assert await cache.client.hget(meta, "removed_at") is None
    assert shards_seen == set(cache.keys.all_shards())


async def test_cold_shards_are_refused_on_a_cluster(redis_cluster, key_prefix):
    prefix = key_prefix + "c"
    cache = MarketCache.from_url(redis_cluster.url, cluster=True, prefix=prefix, shards=SHARDS)
    try:
        assert await cache.cold_shards() == list(range(SHARDS))
        await cache.mark_ready([0, 1])
        assert await cache.cold_shards() == list(range(2, SHARDS))
        with pytest.raises(CacheNotReady):
            await cache.apply_scrape(SHARDS + 5, "betpawa", offer(1, "betpawa", 0), at(0))
        cold, warm = await cache.apply_batch([scrape(SHARDS + 5, "betpawa", 0), scrape(SHARDS, "betpawa", 0)])
        assert cold.status == "cold" and isinstance(cold.error, CacheNotReady)
        assert warm.applied
    finally:
        await cache.close()
        await _delete_prefix_on_every_node(redis_cluster.urls, prefix)


async def test_subscribe_on_a_cluster_gets_every_transition_of_every_master(cluster_cache):
    """A subscriber group on a cluster: one XREADGROUP per shard stream (one slot per
    call), every transition of events spread over the three masters arrives once,
    and what was acknowledged is not delivered again to a restarted consumer."""
    from availability.subscribe import Subscription

    cache = cluster_cache
    events = EVENTS[:SHARDS]  # one event per shard: every master has some
    sub = Subscription(cache, "alerting", consumer="c1", block_ms=50)
    await sub.register()
    gone = [market("1", None, 1.5), market("77", 2.5, 1.9)]
    kept = gone[:1]
    await cache.apply_batch([Scrape(e, "sportybet", gone, at(0, e)) for e in events])
    await cache.apply_batch([Scrape(e, "sportybet", kept, at(1, e)) for e in events])  # 77@2.5 gone
    await cache.apply_batch([Scrape(e, "sportybet", gone, at(2, e)) for e in events])  # and back
    got = []
    while len(got) < 2 * len(events):
        change = await asyncio.wait_for(sub.__anext__(), 30)  # a guard, not a timing assertion
        got.append(change)
        await sub.ack(change)
    assert sorted((c.event_id, c.field, c.transition, c.at) for c in got) == sorted(
        [(e, "77@2.5", "became_unavailable", at(1, e)) for e in events]
        + [(e, "77@2.5", "became_available", at(2, e)) for e in events]
    )
    assert {c.shard for c in got} == set(range(SHARDS))
    again = Subscription(cache, "alerting", consumer="c1", block_ms=50)
    await cache.apply_batch([Scrape(events[0], "sportybet", kept, at(3, events[0]))])
    nxt = await asyncio.wait_for(again.__anext__(), 30)
    assert (nxt.event_id, nxt.field, nxt.transition) == (events[0], "77@2.5", "became_unavailable")
    await sub.unregister()


async def test_a_large_batch_on_one_node_stays_within_the_connection_pool(redis_cluster, key_prefix):
    """One shard: every scrape goes to the same node. redis-py's cluster client raises
    MaxConnectionsError instead of waiting once a node has max_connections in use, so
    the cache must bound its concurrent script calls (here 300, first ones without a
    loaded script, against a pool of 100 connections per node)."""
    prefix = key_prefix + "b"
    cache = MarketCache.from_url(redis_cluster.url, cluster=True, prefix=prefix, shards=1, max_connections=100)
    ref = ReferenceCache()
    try:
        await cache.mark_ready()
        scrapes = [scrape(e, bm, 0) for e in range(1, 101) for bm in BOOKMAKERS]
        outcomes = await cache.apply_batch(scrapes)
        assert [outcome_of(o) for o in outcomes] == [ref.apply(s) for s in scrapes]
        assert {o.status for o in outcomes} == {"applied"}
    finally:
        await cache.close()
        await _delete_prefix_on_every_node(redis_cluster.urls, prefix)


async def test_a_cluster_client_passed_in_works_and_decoded_replies_are_refused(redis_cluster, key_prefix):
    client = AsyncRedisCluster.from_url(redis_cluster.url)
    try:
        cache = MarketCache(client, prefix=key_prefix, shards=SHARDS)
        await cache.mark_ready()
        outcome = await cache.apply_scrape(EVENTS[0], "betpawa", offer(EVENTS[0], "betpawa", 0), at(0))
        assert outcome.applied and outcome.new == len(offer(EVENTS[0], "betpawa", 0))
        await cache.close()  # not ours: stays open
        assert await client.ping()
    finally:
        await client.aclose()
        await _delete_prefix_on_every_node(redis_cluster.urls, key_prefix)

    decoding = AsyncRedisCluster.from_url(redis_cluster.url, decode_responses=True)
    try:
        with pytest.raises(ConfigurationError, match="decode_responses"):
            MarketCache(decoding, prefix=key_prefix)
    finally:
        await decoding.aclose()


# ---------------------------------------------------------------- scripts and slots


async def test_script_flush_on_every_node_is_survived(redis_cluster, cluster_cache):
    cache, ref = cluster_cache, ReferenceCache()
    scrapes = cycle_scrapes(0)
    assert [outcome_of(o) for o in await cache.apply_batch(scrapes)] == [ref.apply(s) for s in scrapes]
    sha = cache.script.sha
    assert cache.script.loaded  # SCRIPT LOAD went to every primary before the first EVALSHA

    nodes = await _node_clients(redis_cluster.urls)
    try:
        for node in nodes:
            assert await node.script_exists(sha) == [True]
            await node.script_flush()
            assert await node.script_exists(sha) == [False]

        # apply_batch (one EVALSHA per scrape on a cluster) falls back to EVAL on every shard
        scrapes = cycle_scrapes(1)
        outcomes = await cache.apply_batch(scrapes)
        assert [outcome_of(o) for o in outcomes] == [ref.apply(s) for s in scrapes]
        assert {o.status for o in outcomes} == {"applied"}
        # EVAL cached the script again on every master
        for node in nodes:
            assert await node.script_exists(sha) == [True]

        await cache.client.script_flush()  # the cluster client's SCRIPT FLUSH: all primaries
        for node in nodes:
            assert await node.script_exists(sha) == [False]
        e = EVENTS[5]
        single = await cache.apply_scrape(e, "sportybet", offer(e, "sportybet", 2), at(2, e, 1))
        assert outcome_of(single) == ref.apply(scrape(e, "sportybet", 2))
        removed = await cache.mark_event_removed(EVENTS[6], "bet9ja", at(2, EVENTS[6], 2))
        assert outcome_of(removed) == ref.mark_event_removed(EVENTS[6], "bet9ja", at(2, EVENTS[6], 2))
    finally:
        for node in nodes:
            await node.aclose()
    assert await cache.get_snapshots(EVENTS) == {pair: ref.snapshot(*pair) for pair in ref.pairs()}


async def test_every_key_of_a_shard_hashes_to_one_slot(redis_cluster, cluster_cache):
    cache = cluster_cache
    await cache.apply_batch(cycle_scrapes(0))
    await cache.apply_batch(cycle_scrapes(1))  # stamps: the unavailable hashes exist too
    schema = cache.keys
    client = cache.client

    async def keyslot(key: str | bytes) -> int:
        return int(await client.execute_command("CLUSTER KEYSLOT", key))

    slots: dict[int, int] = {}
    for shard in schema.all_shards():
        events = [e for e in EVENTS if schema.shard_of(e) == shard]
        assert events
        names = [schema.changes(shard), schema.dead_letters(shard), schema.snapshots(shard), schema.ready(shard)]
        for e in events:
            for bm in BOOKMAKERS:
                names += schema.snapshot(e, bm).as_list()
                names += [schema.markets(e, bm), schema.unavailable(e, bm), schema.meta(e, bm)]
        shard_slots = {await keyslot(name) for name in names}
        assert len(shard_slots) == 1, (shard, shard_slots)
        slots[shard] = shard_slots.pop()
        assert await client.type(schema.changes(shard)) == b"stream"
        assert await client.xlen(schema.changes(shard)) == 2 * 3 * len(events)
        assert await client.exists(schema.ready(shard)) == 1
        # the stream lives on the node that holds the shard's event hashes
        stream_node = client.get_node_from_key(schema.changes(shard))
        assert client.get_node_from_key(schema.markets(events[0], "betpawa")) == stream_node
    assert len(set(slots.values())) == SHARDS  # one slot per shard, none shared

    # every key actually stored (SCAN of each node) is in its shard's slot, on the node owning it
    nodes = await keys_per_node(redis_cluster.urls, schema.prefix)
    seen_nodes: set[str] = set()
    for url, keys in nodes.items():
        for key in keys:
            shard = int(_TAG.match(key).group(1).decode().rsplit(":", 1)[1])
            assert await keyslot(key) == slots[shard], key
            owner = client.get_node_from_key(key)
            assert urlsplit(url).port == owner.port, (key, url, owner.name)
            seen_nodes.add(url)
    assert seen_nodes == set(redis_cluster.urls)
    kinds = {(await client.type(k)).decode() for keys in nodes.values() for k in keys}
    assert kinds == {"hash", "zset", "stream", "string"}


async def test_flusher_warm_and_verify_on_a_cluster(redis_cluster, cluster_cache, database_url):
    from availability.flusher import Flusher
    from availability.verify import verify
    from availability.warm import warm

    events = EVENTS[:SHARDS]
    for cycle in range(3):
        outcomes = await cluster_cache.apply_batch(cycle_scrapes(cycle, events))
        assert all(o.applied for o in outcomes), [o for o in outcomes if not o.applied]
    async with Flusher(cluster_cache, database_url, prefix=cluster_cache.keys.prefix, shards=SHARDS) as flusher:
        stats = await flusher.run_once()
    assert stats.records == 3 * len(events) * len(BOOKMAKERS)
    assert await verify(cluster_cache, database_url) == []

    # the cluster lost its data: warm it from PostgreSQL, and it agrees again
    await _delete_prefix_on_every_node(redis_cluster.urls, cluster_cache.keys.prefix)
    cold = MarketCache.from_url(redis_cluster.url, cluster=True, prefix=cluster_cache.keys.prefix, shards=SHARDS)
    try:
        assert await cold.cold_shards() == list(range(SHARDS))
        await warm(cold, database_url)
        assert await cold.cold_shards() == []
        assert await verify(cold, database_url) == []
        stale = await cold.apply_batch([scrape(events[0], "betpawa", 1)])
        assert stale[0].stale
    finally:
        await cold.close()
