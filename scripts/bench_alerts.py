#!/usr/bin/env python3
"""Alerts at 20,000 events: "which upcoming events have unavailable markets",
answered from each index, against a full scan measured in the same run.

The cache is filled with ``--events`` events x 3 bookmakers (``--markets``
markets each, kickoffs spread over a week before and a week after now, one in
ten without a kickoff); a quarter of the snapshots then lose a market or two
in a second, complete scrape. A real ``Flusher`` writes it all to PostgreSQL.
None of that is timed. Then, ``--repeat`` times each, in turn:

* Redis, index: ``availability.alerts.redis_alerts`` -- one ``ZRANGEBYSCORE``
  per shard on the ``alerts`` sorted sets (16 shards, one pipeline);
* Redis, index, count only: ``count_events_with_unavailable`` (the app's
  "N events" badge: members without scores, no per-event objects);
* Redis, full scan (baseline): every snapshot of every shard (``ZRANGE``
  of the ``snapshots`` index, then ``HMGET meta unavailable kickoff_us`` for
  each, pipelined) and the same filter in Python;
* PostgreSQL, partial indexes: ``availability.alerts.postgres_alerts``
  (``ix_market_odds_unavailable``, ``ix_competitor_market_odds_unavailable``);
* PostgreSQL, full scan (baseline): the same statement with index scans
  switched off for the session (``enable_indexscan``, ``enable_indexonlyscan``,
  ``enable_bitmapscan``), i.e. sequential scans of the market tables.

Every method must give the same events (checked; exit 1 otherwise). Printed:
the median milliseconds of each and the ratio full scan / index. Timings are
never asserted anywhere: these machines are noisy, ratios within one run are
what carries over.

Starts a throwaway Redis and PostgreSQL unless ``--redis-url``/``REDIS_URL``
and ``--database-url``/``DATABASE_URL`` are given (then a fresh key prefix and
a scratch database, both removed at the end).

    python scripts/bench_alerts.py                   # ~3 min on 2 cores
    python scripts/bench_alerts.py --events 2000 --json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable

import psycopg
import redis.asyncio as aioredis

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_apply import delete_prefix, new_prefix  # noqa: E402
from bench_flush import emit, redis_server, scratch_database  # noqa: E402

from availability.alerts import (  # noqa: E402
    EventAlert,
    _group,
    alerts_sql,
    count_events_with_unavailable,
    postgres_alerts,
    redis_alerts,
)
from availability.cache import MarketCache, Scrape  # noqa: E402
from availability.db.convert import HOME_BOOKMAKER  # noqa: E402
from availability.db.engine import libpq_url  # noqa: E402
from availability.flusher import Flusher  # noqa: E402
from availability.logs import configure_logging  # noqa: E402
from availability.model import from_micros, to_micros  # noqa: E402

BOOKMAKERS = ("betpawa", "sportybet", "bet9ja")
FIRST_EVENT = 9_000_001


def market(i: int, odds: float) -> dict[str, Any]:
    return {"betpawa_market_id": str(i), "betpawa_market_name": f"Market {i}", "line": 2.5 if i % 2 else None,
            "outcomes": [{"name": "1", "odds": odds, "is_active": True}, {"name": "2", "odds": 1.9, "is_active": True}]}


async def fill(cache: MarketCache, events: int, markets: int, now: datetime, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    kickoffs = {
        e: None if rng.random() < 0.1 else now + timedelta(minutes=rng.randint(-7 * 1440, 7 * 1440))
        for e in range(FIRST_EVENT, FIRST_EVENT + events)
    }
    offer = [market(i, 1.5 + i / 10) for i in range(1, markets + 1)]
    first, second = now - timedelta(minutes=10), now - timedelta(minutes=5)
    scrapes = [Scrape(e, b, offer, first, kickoff=k) for e, k in kickoffs.items() for b in BOOKMAKERS]
    losing = [Scrape(s.event_id, s.bookmaker, offer[: markets - rng.randint(1, 2)], second)
              for s in scrapes if rng.random() < 0.25]
    applied = 0
    for batch_of in (scrapes, losing):
        for i in range(0, len(batch_of), 150):
            applied += sum(o.applied for o in await cache.apply_batch(batch_of[i : i + 150]))
    return {"scrapes": applied, "snapshots_losing_markets": len(losing)}


async def redis_full_scan(cache: MarketCache, now: datetime) -> list[EventAlert]:
    """The answer without the alerts index: every snapshot's meta."""
    keys, client = cache.keys, cache.client
    pipe = client.pipeline(transaction=False)
    for s in keys.all_shards():
        pipe.zrange(keys.snapshots(s), 0, -1)
    pairs = [keys.parse_snapshot_member(m) for members in await pipe.execute() for m in members]
    pipe = client.pipeline(transaction=False)
    for e, b in pairs:
        pipe.hmget(keys.meta(e, b), "unavailable", "kickoff_us")
    limit = to_micros(now)
    found = []
    for (e, b), (unavailable, kickoff) in zip(pairs, await pipe.execute()):
        if int(unavailable or 0) and (not kickoff or int(kickoff) > limit):
            found.append((e, b, from_micros(kickoff) if kickoff else None))
    return _group(found)


async def pg_full_scan(conn: psycopg.AsyncConnection, now: datetime) -> list[EventAlert]:
    """The same statement with index scans switched off: sequential scans of the market tables."""
    async with conn.transaction():
        for setting in ("enable_indexscan", "enable_indexonlyscan", "enable_bitmapscan"):
            await conn.execute(f"SET LOCAL {setting} = off")
        return await postgres_alerts(conn, now=now, home_bookmaker=HOME_BOOKMAKER)


async def plan_indexes(conn: psycopg.AsyncConnection, now: datetime) -> list[str]:
    """Index names the planner uses for the alerts statement (EXPLAIN)."""
    cur = await conn.execute(
        "EXPLAIN (FORMAT JSON) " + alerts_sql(None, HOME_BOOKMAKER),
        {"home": HOME_BOOKMAKER, "bookmaker": None, "all": False, "now": now},
    )
    plan = (await cur.fetchone())[0]
    found: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        if "Index Name" in node:
            found.append(f"{node['Node Type']} using {node['Index Name']}")
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return sorted(set(found))


async def timed(call: Callable[[], Awaitable[list[EventAlert]]], repeat: int) -> tuple[float, list[EventAlert]]:
    times, result = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = await call()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), result


async def measure(redis_url: str, database_url: str, events: int, markets: int, repeat: int, seed: int,
                  own_redis: bool) -> dict[str, Any]:
    client = aioredis.Redis.from_url(redis_url)
    prefix = new_prefix("alerts")
    cache = MarketCache(client, prefix=prefix)
    now = datetime.now(timezone.utc)
    conn = await psycopg.AsyncConnection.connect(libpq_url(database_url), autocommit=True)
    try:
        await cache.mark_ready()
        t0 = time.perf_counter()
        filled = await fill(cache, events, markets, now, seed)
        fill_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        async with Flusher(cache, database_url, batch_size=1000, claim_idle_ms=3_600_000) as flusher:
            flushed = await flusher.run_once()
        flush_s = time.perf_counter() - t0
        await conn.execute("VACUUM ANALYZE")  # as autovacuum would have by now: visibility map, statistics
        methods: dict[str, Callable[[], Awaitable[list[EventAlert]]]] = {
            "redis_index": lambda: redis_alerts(cache, now=now),
            "redis_scan": lambda: redis_full_scan(cache, now),
            "postgres_index": lambda: postgres_alerts(conn, now=now, home_bookmaker=HOME_BOOKMAKER),
            "postgres_scan": lambda: pg_full_scan(conn, now),
        }
        for call in methods.values():  # warm every cache once before timing
            await call()
        ms: dict[str, float] = {}
        answers: dict[str, list[EventAlert]] = {}
        for name, call in methods.items():
            ms[name], answers[name] = await timed(call, repeat)
        count = 0

        async def counted() -> list[EventAlert]:
            nonlocal count
            count = await count_events_with_unavailable(cache, now=now)
            return answers["redis_index"]

        ms["redis_count"], _ = await timed(counted, repeat)
        same = all(a == answers["redis_index"] for a in answers.values()) and count == len(answers["redis_index"])
        cur = await conn.execute(
            "SELECT (SELECT count(*) FROM market_odds) + (SELECT count(*) FROM competitor_market_odds),"
            " (SELECT count(*) FROM market_odds WHERE unavailable_at IS NOT NULL)"
            " + (SELECT count(*) FROM competitor_market_odds WHERE unavailable_at IS NOT NULL)")
        rows, unavailable_rows = await cur.fetchone()
        version = (await (await conn.execute("SHOW server_version")).fetchone())[0]
        info = await client.info("server")
        return {
            "events": events,
            "snapshots": events * len(BOOKMAKERS),
            "markets_per_snapshot": markets,
            "market_rows": rows,
            "unavailable_rows": unavailable_rows,
            "alerting_events": len(answers["redis_index"]),
            "same_answer": same,
            "repeat": repeat,
            "ms": {k: round(v, 2) for k, v in ms.items()},
            "redis_scan_over_index": round(ms["redis_scan"] / ms["redis_index"], 1),
            "redis_scan_over_count": round(ms["redis_scan"] / ms["redis_count"], 1),
            "postgres_scan_over_index": round(ms["postgres_scan"] / ms["postgres_index"], 1),
            "postgres_index_over_redis_index": round(ms["postgres_index"] / ms["redis_index"], 1),
            "postgres_plan": await plan_indexes(conn, now),
            "setup": {**filled, "fill_s": round(fill_s, 1), "flush_s": round(flush_s, 1),
                      "records_flushed": flushed.records},
            "postgres_version": version,
            "redis_version": info.get("redis_version") or info.get("valkey_version"),
        }
    finally:
        await conn.close()
        if not own_redis:
            await delete_prefix(client, prefix)
        await client.aclose()


def print_report(r: dict[str, Any]) -> None:
    print(f"alerts benchmark: {r['events']:,} events x 3 bookmakers ({r['snapshots']:,} snapshots, "
          f"{r['market_rows']:,} market rows, {r['unavailable_rows']:,} unavailable), "
          f"{r['alerting_events']:,} upcoming events with unavailable markets; median of {r['repeat']}")
    print(f"  Redis {r['redis_version']}, PostgreSQL {r['postgres_version']}")
    print()
    ms = r["ms"]
    print(f"  {'':<34} {'ms':>9} {'full scan / index':>18}")
    print(f"  {'Redis: alerts zsets (index)':<34} {ms['redis_index']:>9.2f} {r['redis_scan_over_index']:>17.1f}x")
    print(f"  {'Redis: alerts zsets, count only':<34} {ms['redis_count']:>9.2f} {r['redis_scan_over_count']:>17.1f}x")
    print(f"  {'Redis: every snapshot meta (scan)':<34} {ms['redis_scan']:>9.2f}")
    print(f"  {'PostgreSQL: partial indexes':<34} {ms['postgres_index']:>9.2f} {r['postgres_scan_over_index']:>17.1f}x")
    print(f"  {'PostgreSQL: sequential scans':<34} {ms['postgres_scan']:>9.2f}")
    print()
    print(f"  PostgreSQL partial indexes / Redis index: {r['postgres_index_over_redis_index']}x")
    print(f"  PostgreSQL plan: {', '.join(r['postgres_plan']) or 'no index'}")
    print(f"  every method gave the same events: {r['same_answer']}")
    print(f"  setup (not timed): {r['setup']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"),
                        help="PostgreSQL server to create a scratch database on (default: $DATABASE_URL)")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--markets", type=int, default=8, help="markets per snapshot")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--seed", type=int, default=20261130)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.events < 1 or args.markets < 3 or args.repeat < 1:
        parser.error("--events and --repeat must be >= 1, --markets >= 3")
    configure_logging("WARNING", stream=sys.stderr)
    started = time.perf_counter()
    with redis_server(args.redis_url) as (redis_url, own_redis), scratch_database(args.database_url) as db_url:
        result = asyncio.run(measure(redis_url, db_url, args.events, args.markets, args.repeat, args.seed,
                                     own_redis))
    emit(result, print_report, started, as_json=args.json)
    return 0 if result["same_answer"] else 1


if __name__ == "__main__":
    sys.exit(main())
