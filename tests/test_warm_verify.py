"""Warm-up (PostgreSQL -> Redis) and verify (Redis vs PostgreSQL), and their CLI."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import psycopg
import pytest
from click.testing import CliRunner

from factory import at, cached_market

from availability.cache import MarketCache
from availability.cli import cli
from availability.errors import CacheNotReady
from availability.flusher import Flusher
from availability.keys import REDELIVERY_FIELDS
from availability.model import CachedMarket, encode_market, key_to_field
from availability.verify import KINDS, Mismatch, verify
from availability.warm import warm

SHARDS = 4


def market(market_id: str, line: float | None = None, odds: float = 1.85) -> CachedMarket:
    return cached_market(market_id, line, outcomes=[("Home", odds, True), ("Away", 2.05, False)],
                         handicap_type=None if line is None else "handicap", handicap_home=line,
                         handicap_away=None if line is None else -line,
                         groups=None if line is None else ["main", "handicaps"])


async def populate(cache: MarketCache, database_url: str) -> None:
    """Snapshots of every kind, flushed: unavailable markets, None vs 0.0 lines,
    competitors, an event removed from a listing."""
    await cache.mark_ready()
    await cache.apply_scrape(1, "betpawa", [market("1"), market("16", 0.0), market("16", None), market("16", -1.5)], at(0))
    await cache.apply_scrape(1, "betpawa", [market("1", odds=1.9), market("16", None)], at(5))
    await cache.apply_scrape(1, "sportybet", [market("1"), market("16", 0.0)], at(1))
    await cache.apply_scrape(2, "bet9ja", [market("1"), market("18", 2.5)], at(2))
    await cache.apply_scrape(6, "betpawa", [market("1")], at(0))
    await cache.mark_event_removed(6, "betpawa", at(5))
    flusher = Flusher(cache, database_url)
    try:
        await flusher.run_once()
    finally:
        await flusher.close()


async def raw_snapshot(cache: MarketCache, event_id: int, bookmaker: str) -> tuple[dict, dict, dict]:
    keys = cache.keys
    meta = await cache.client.hgetall(keys.meta(event_id, bookmaker))
    for name in REDELIVERY_FIELDS:  # not restored by warm-up, by design
        meta.pop(name.encode(), None)
    return (await cache.client.hgetall(keys.markets(event_id, bookmaker)),
            await cache.client.hgetall(keys.unavailable(event_id, bookmaker)),
            meta)


PAIRS = [(1, "betpawa"), (1, "sportybet"), (2, "bet9ja"), (6, "betpawa")]


# ---------------------------------------------------------------- warm


async def test_warm_round_trip_restores_every_hash_byte_for_byte(redis_client, key_prefix, database_url):
    original = MarketCache(redis_client, prefix=key_prefix, shards=SHARDS)
    await populate(original, database_url)
    restored = MarketCache(redis_client, prefix=f"{key_prefix}w", shards=SHARDS)  # an empty Redis, in effect
    try:
        assert await restored.cold_shards() == list(range(SHARDS))

        stats = await warm(restored, database_url)

        assert (stats.snapshots, stats.skipped) == (4, 0)
        assert stats.markets == 4 + 2 + 2 + 1 and stats.unavailable == 2 + 1
        for event_id, bookmaker in PAIRS:
            assert await raw_snapshot(restored, event_id, bookmaker) == await raw_snapshot(original, event_id, bookmaker)
        for shard in range(SHARDS):
            assert await restored.list_snapshots(shard) == await original.list_snapshots(shard)
        assert await restored.cold_shards() == []
        assert await verify(restored, database_url) == []
    finally:
        keys = [k async for k in redis_client.scan_iter(match=f"{{{key_prefix}w:*")]
        await redis_client.delete(f"{key_prefix}w:config", *keys)


async def test_cold_cache_refuses_scrapes_until_warmed_then_still_refuses_stale_ones(redis_client, key_prefix,
                                                                                     database_url):
    await populate(MarketCache(redis_client, prefix=key_prefix, shards=SHARDS), database_url)
    keys = [k async for k in redis_client.scan_iter(match=f"{{{key_prefix}:*")]
    await redis_client.delete(*keys)  # Redis lost its data
    cache = MarketCache(redis_client, prefix=key_prefix, shards=SHARDS)

    with pytest.raises(CacheNotReady):
        await cache.apply_scrape(1, "betpawa", [market("1")], at(10))

    await warm(cache, database_url)

    assert (await cache.apply_scrape(1, "betpawa", [market("1")], at(3))).stale
    fresh = await cache.apply_scrape(1, "betpawa", [market("1", odds=1.9)], at(10))
    # 16@None was still listed at 12:05; missing now, it is stamped, not forgotten
    assert {key_to_field(k) for k in fresh.became_unavailable} == {"16@_"}
    assert fresh.new == 0


async def test_warm_never_overwrites_newer_state_and_is_idempotent(redis_client, key_prefix, database_url):
    cache = MarketCache(redis_client, prefix=key_prefix, shards=SHARDS)
    await populate(cache, database_url)
    # a scrape PostgreSQL has not seen yet (the flusher lags)
    await cache.apply_scrape(2, "bet9ja", [market("1", odds=3.3)], at(20))
    newer = await raw_snapshot(cache, 2, "bet9ja")

    stats = await warm(cache, database_url)

    assert stats.snapshots == 0 and stats.skipped == 4  # same scrape everywhere, or newer in Redis
    assert await raw_snapshot(cache, 2, "bet9ja") == newer


async def test_warm_on_an_empty_database_only_marks_the_shards_ready(redis_client, key_prefix, database_url):
    cache = MarketCache(redis_client, prefix=key_prefix, shards=SHARDS)
    stats = await warm(cache, database_url)
    assert (stats.snapshots, stats.markets) == (0, 0)
    assert await cache.cold_shards() == []
    assert (await cache.apply_scrape(3, "betpawa", [market("1")], at(0))).new == 1


# ---------------------------------------------------------------- verify


async def break_everything(cache: MarketCache, database_url: str) -> None:
    """One mismatch of every kind."""
    keys = cache.keys
    extra = market("99")
    await cache.client.hset(keys.markets(1, "betpawa"), key_to_field(extra.key), encode_market(extra))
    await cache.client.hdel(keys.markets(1, "sportybet"), "16@0.0")
    await cache.client.hset(keys.markets(1, "betpawa"), "97@_", b"garbage")
    await cache.client.zrem(keys.snapshots(keys.shard_of(6)), "6:betpawa")
    await cache.client.delete(keys.markets(6, "betpawa"), keys.unavailable(6, "betpawa"), keys.meta(6, "betpawa"))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("""UPDATE market_odds SET outcomes = '[{"name": "Home", "odds": 9.99, "is_active": true}]'
                        WHERE event_id = 1 AND betpawa_market_id = '1'""")
        # (also its derived last confirmation: an available market was seen by the last complete scrape)
        conn.execute("UPDATE market_odds SET unavailable_at = NULL WHERE event_id = 1 AND line = 0.0")
        conn.execute("UPDATE market_odds SET captured_at = captured_at + interval '1 hour'"
                     " WHERE event_id = 1 AND betpawa_market_id = '16' AND line IS NULL")
        conn.execute("UPDATE availability_snapshots SET last_scraped_at = last_scraped_at - interval '1 minute'"
                     " WHERE event_id = 1 AND bookmaker = 'sportybet'")
        conn.execute("DELETE FROM competitor_market_odds WHERE event_id = 2")
        conn.execute("""INSERT INTO market_odds (event_id, betpawa_market_id, line, betpawa_market_name, outcomes,
                        captured_at, seen_at, scraped_at)
                        SELECT 1, '98', NULL, 'Broken', '"not a list"', now(), now(), now()""")
        conn.execute("DELETE FROM availability_snapshots WHERE event_id = 2")


async def test_verify_finds_every_kind_of_mismatch(redis_client, key_prefix, database_url):
    cache = MarketCache(redis_client, prefix=key_prefix, shards=SHARDS)
    await populate(cache, database_url)
    assert await verify(cache, database_url) == []

    await break_everything(cache, database_url)
    mismatches = await verify(cache, database_url)

    found = {(m.kind, m.event_id, m.bookmaker, m.market) for m in mismatches}
    assert found == {
        ("missing_in_postgres", 1, "betpawa", "99@_"),
        ("payload", 1, "betpawa", "1@_"),
        ("unavailable_at", 1, "betpawa", "16@0.0"),
        ("last_confirmed_at", 1, "betpawa", "16@0.0"),
        ("captured_at", 1, "betpawa", "16@_"),
        ("missing_in_redis", 1, "sportybet", "16@0.0"),
        ("last_scraped_at", 1, "sportybet", None),
        ("snapshot_missing_in_postgres", 2, "bet9ja", None),
        ("snapshot_missing_in_redis", 6, "betpawa", None),
        ("undecodable_in_redis", 1, "betpawa", "97@_"),
        ("undecodable_in_postgres", 1, "betpawa", "98@None"),
    }
    assert {m.kind for m in mismatches} == set(KINDS)
    text = {m.kind: str(m) for m in mismatches}
    assert text["unavailable_at"] == ("event 1 at betpawa, market 16@0.0: unavailable_at differs: "
                                      "redis=2026-11-28T12:05:00.000000Z postgres=None")
    assert text["missing_in_redis"] == "event 1 at sportybet, market 16@0.0: row in PostgreSQL, not cached in Redis"
    assert "9.99" in text["payload"]
    assert text["captured_at"] == ("event 1 at betpawa, market 16@_: captured_at differs: redis=at most "
                                   "2026-11-28T12:05:00.000000Z (the snapshot's) postgres=2026-11-28T13:00:00.000000Z")
    assert text["last_confirmed_at"] == ("event 1 at betpawa, market 16@0.0: last_confirmed_at differs: redis=before "
                                         "2026-11-28T12:05:00.000000Z (unavailable since) "
                                         "postgres=2026-11-28T12:05:00.000000Z")
    # limited to some events
    assert {m.event_id for m in await verify(cache, database_url, [2])} == {2}


def test_mismatch_reads_well():
    m = Mismatch("last_scraped_at", 5, "betpawa", None, at(5), at(0))
    assert str(m) == ("event 5 at betpawa: last_scraped_at differs: "
                      "redis=2026-11-28T12:05:00.000000Z postgres=2026-11-28T12:00:00.000000Z")


# ---------------------------------------------------------------- the CLI


async def run_cli(*args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "availability.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    return proc.returncode, out.decode(), err.decode()


async def test_cli_warm_then_verify_clean_then_exit_1_on_each_mismatch(redis_client, redis_url, key_prefix,
                                                                       database_url):
    await populate(MarketCache(redis_client, prefix=key_prefix, shards=SHARDS), database_url)
    keys = [k async for k in redis_client.scan_iter(match=f"{{{key_prefix}:*")]
    await redis_client.delete(*keys)
    common = ["--redis-url", redis_url, "--database-url", database_url, "--prefix", key_prefix,
              "--shards", str(SHARDS), "--log-level", "WARNING"]

    code, out, err = await run_cli(*common, "warm", "--json")
    assert code == 0, err
    assert json.loads(out)["warmed"]["snapshots"] == 4
    code, out, err = await run_cli(*common, "verify")
    assert (code, out.strip()) == (0, "verify: Redis and PostgreSQL agree"), err

    cache = MarketCache(redis_client, prefix=key_prefix, shards=SHARDS)
    await break_everything(cache, database_url)
    code, out, err = await run_cli(*common, "verify")
    assert code == 1
    assert len(out.strip().splitlines()) == 11
    assert "event 6 at betpawa: in PostgreSQL, not cached in Redis" in out
    assert "11 mismatches" in err and "Traceback" not in err
    code, out, _ = await run_cli(*common, "verify", "--event", "1", "--json")
    assert code == 1
    assert {json.loads(line)["kind"] for line in out.splitlines()} == {
        "missing_in_postgres", "payload", "unavailable_at", "missing_in_redis", "last_scraped_at",
        "undecodable_in_redis", "undecodable_in_postgres", "captured_at", "last_confirmed_at"}


def test_cli_names_an_unreachable_server_without_its_password_or_a_traceback():
    runner = CliRunner()
    result = runner.invoke(cli, ["--redis-url", "redis://app:s3cret@127.0.0.1:1/0",
                                 "--database-url", "postgresql://app:s3cret@127.0.0.1:1/db", "verify"], env={})
    assert result.exit_code == 2  # nothing was checked: told apart from a mismatch (1)
    assert "cannot reach Redis at redis://app:***@127.0.0.1:1/0" in result.output
    assert "s3cret" not in result.output and "Traceback" not in result.output


def test_cli_configuration_errors_exit_2():
    runner = CliRunner()
    result = runner.invoke(cli, ["--redis-url", "redis://127.0.0.1:1/0", "warm"],
                           env={"DATABASE_URL": "", "REDIS_URL": ""})
    assert result.exit_code == 2 and "no database URL" in result.output
    result = runner.invoke(cli, ["--shards", "0", "verify"], env={})
    assert result.exit_code == 2 and "shards" in result.output
