#!/usr/bin/env python3
"""Flusher throughput: rows/s written to PostgreSQL by availability.flusher.Flusher,
against a plain COPY of the same rows, measured in the same run.

Each cycle of the scrape profile of scripts/bench_apply.py (BetPawa ~170
markets, competitors ~72, ~5% odds changes, specialised markets leaving and
returning) is applied to the cache with ``MarketCache.apply_batch`` (not
timed), which leaves one change record per scrape on the shard streams. Then,
in alternating order:

* ``Flusher.run_once()`` writes the records (upserts of new, changed and
  stamped markets, confirmations of unchanged ones, history rows, snapshot
  rows), timed end to end: stream reads, decoding, SQL, XACK;
* baseline: ``COPY ... FROM STDIN`` of the same market rows -- one full row
  per market the cycle touched (listed, or stamped unavailable), split into
  ``market_odds`` and ``competitor_market_odds`` -- into UNLOGGED copies of
  those tables (``LIKE ... INCLUDING ALL``: same columns and indexes),
  emptied before each cycle (not timed).

Printed: rows/s of both and the ratio, for the first cycle (every market new:
INSERTs) and for the steady cycles (mostly confirmations: UPDATEs). Timings
are never asserted: these machines are noisy.

Starts a throwaway Redis and PostgreSQL (availability.harness) unless
``--redis-url``/``REDIS_URL`` and ``--database-url``/``DATABASE_URL`` are
given. The database URL is only used to ``CREATE DATABASE`` a scratch
database, migrated with availability.db.migrate.upgrade and dropped at the
end; on a given Redis the run uses a fresh random key prefix and deletes its
keys at the end.

    python scripts/bench_flush.py                  # ~30 s
    python scripts/bench_flush.py --events 400 --cycles 4 --batch-size 1000 --json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterator

import psycopg
import redis.asyncio as aioredis

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_apply import Simulation, batches, delete_prefix, event_ids, new_prefix  # noqa: E402

from availability.cache import MarketCache, Scrape, ScrapeOutcome  # noqa: E402
from availability.db.convert import HOME_BOOKMAKER  # noqa: E402
from availability.db.engine import libpq_url  # noqa: E402
from availability.flusher import Flusher, FlushStats  # noqa: E402
from availability.logs import configure_logging  # noqa: E402
from availability.model import CachedMarket, MarketKey, coerce_market, merge_markets  # noqa: E402
from availability.storage import MARKET_COLUMNS  # noqa: E402

_COLUMNS = tuple(name for name, _ in MARKET_COLUMNS)  # the flusher's columns, in its order
HOME_TABLE = "bench_copy_market_odds"
COMPETITOR_TABLE = "bench_copy_competitor_market_odds"

_dumps = json.JSONEncoder(separators=(",", ":")).encode


# ---------------------------------------------------------------- the baseline's rows


class RowBook:
    """The full row of every market, as the flusher's tables hold it, cycle by cycle."""

    def __init__(self) -> None:
        self.last: dict[tuple[int, str], dict[MarketKey, CachedMarket]] = {}
        self.captured: dict[tuple[int, str, MarketKey], datetime] = {}

    def rows(self, scrapes: list[Scrape], outcomes: list[ScrapeOutcome]) -> tuple[list[tuple], list[tuple]]:
        """``(home rows, competitor rows)`` the cycle touched: listed markets and stamped ones."""
        home: list[tuple] = []
        competitor: list[tuple] = []
        for scrape, outcome in zip(scrapes, outcomes):
            if not outcome.applied:
                continue
            at = scrape.scraped_at
            book = (scrape.event_id, scrape.bookmaker)
            previous = self.last.get(book, {})
            listed = merge_markets(coerce_market(m) for m in scrape.markets)
            out = home if scrape.bookmaker == HOME_BOOKMAKER else competitor
            source = () if scrape.bookmaker == HOME_BOOKMAKER else (scrape.bookmaker,)
            for key, market in listed.items():
                ck = (scrape.event_id, scrape.bookmaker, key)
                old = previous.get(key)
                if old is None or old.outcomes != market.outcomes or ck not in self.captured:
                    self.captured[ck] = at
                out.append(source + self._row(scrape.event_id, market, self.captured[ck], at, at, None))
            for key in outcome.became_unavailable:
                market = previous[key]
                ck = (scrape.event_id, scrape.bookmaker, key)
                out.append(source + self._row(scrape.event_id, market, self.captured.get(ck, at), at, at, at))
            self.last[book] = {**previous, **listed}
        return home, competitor

    @staticmethod
    def _row(event_id: int, m: CachedMarket, captured: datetime, confirmed: datetime, scraped: datetime,
             unavailable: datetime | None) -> tuple:
        return (
            event_id, m.betpawa_market_id, m.line, m.betpawa_market_name, m.handicap_type, m.handicap_home,
            m.handicap_away, _dumps(m.outcomes), None if m.market_groups is None else _dumps(m.market_groups),
            captured, confirmed, scraped, unavailable,
        )  # fmt: skip


# ---------------------------------------------------------------- measurement


@dataclass
class Phase:
    rows: int = 0  # market rows the cycle touched (the baseline copies exactly these)
    flush_seconds: float = 0.0
    copy_seconds: float = 0.0
    stats: FlushStats = field(default_factory=FlushStats)

    def as_dict(self) -> dict[str, Any]:
        flush_rate = self.rows / self.flush_seconds if self.flush_seconds else float("nan")
        copy_rate = self.rows / self.copy_seconds if self.copy_seconds else float("nan")
        return {
            "rows": self.rows,
            "flusher_seconds": round(self.flush_seconds, 3),
            "copy_seconds": round(self.copy_seconds, 3),
            "flusher_rows_per_s": round(flush_rate),
            "copy_rows_per_s": round(copy_rate),
            "copy_over_flusher": round(copy_rate / flush_rate, 3) if flush_rate else None,
            "flusher": vars(self.stats),
        }


async def copy_rows(conn: psycopg.AsyncConnection, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    if not rows:
        return
    async with conn.cursor() as cur:
        async with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                await copy.write_row(row)


async def measure(redis_url: str, database_url: str, events: int, cycles: int, batch_size: int, seed: int,
                  own_redis: bool) -> dict[str, Any]:
    client = aioredis.Redis.from_url(redis_url)
    prefix = new_prefix("flush")
    cache = MarketCache(client, prefix=prefix)
    flusher = Flusher(cache, database_url, batch_size=batch_size, claim_idle_ms=3_600_000)
    conn = await psycopg.AsyncConnection.connect(libpq_url(database_url), autocommit=True)
    try:
        await cache.mark_ready()
        await flusher.ensure_groups()
        for table, like in ((HOME_TABLE, "market_odds"), (COMPETITOR_TABLE, "competitor_market_odds")):
            await conn.execute(f"CREATE UNLOGGED TABLE {table} (LIKE {like} INCLUDING ALL)")
        sim = Simulation(event_ids(events), seed)
        book = RowBook()
        phases = {"first": Phase(), "steady": Phase()}
        for cycle in range(cycles + 1):
            scrapes = sim.scrapes()
            outcomes: list[ScrapeOutcome] = []
            for batch in batches(scrapes):
                outcomes += await cache.apply_batch(batch)
            home, competitor = book.rows(scrapes, outcomes)
            phase = phases["first" if cycle == 0 else "steady"]
            phase.rows += len(home) + len(competitor)

            async def run_flusher() -> None:
                t0 = time.perf_counter()
                stats = await flusher.run_once()
                phase.flush_seconds += time.perf_counter() - t0
                phase.stats.add(stats)

            async def run_copy() -> None:
                await conn.execute(f"TRUNCATE {HOME_TABLE}, {COMPETITOR_TABLE}")
                t0 = time.perf_counter()
                async with conn.transaction():
                    await copy_rows(conn, HOME_TABLE, _COLUMNS, home)
                    await copy_rows(conn, COMPETITOR_TABLE, ("source", *_COLUMNS), competitor)
                phase.copy_seconds += time.perf_counter() - t0

            first, second = (run_flusher, run_copy) if cycle % 2 == 0 else (run_copy, run_flusher)
            await first()
            await second()
        counts = {}
        for table in ("market_odds", "competitor_market_odds", "market_availability_history",
                      "availability_snapshots"):
            counts[table] = (await (await conn.execute(f"SELECT count(*) FROM {table}")).fetchone())[0]
        version = (await (await conn.execute("SHOW server_version")).fetchone())[0]
        return {
            "events": events,
            "cycles": cycles,
            "batch_size": batch_size,
            "postgres_version": version,
            "phases": {name: p.as_dict() for name, p in phases.items()},
            "table_rows": counts,
        }
    finally:
        await flusher.close()
        await conn.close()
        if not own_redis:
            await delete_prefix(client, prefix)
        await client.aclose()


# ---------------------------------------------------------------- output


def emit(result: dict[str, Any], print_report: Callable[[dict[str, Any]], None], started: float, *,
         as_json: bool) -> None:
    """The benchmarks' ending: the run's total seconds into ``result``, then ``result`` as
    JSON, or the printed report and the total."""
    result["seconds"] = round(time.perf_counter() - started, 1)
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print_report(result)
        print(f"\n(total {result['seconds']} s)")


# ---------------------------------------------------------------- servers


@contextlib.contextmanager
def redis_server(url: str | None) -> Iterator[tuple[str, bool]]:
    if url:
        yield url, False
        return
    from availability.harness import RedisServer

    with RedisServer() as server:
        yield server.url, True


@contextlib.contextmanager
def scratch_database(admin_url: str | None) -> Iterator[str]:
    """A fresh database migrated to head, on the given server or a throwaway one; dropped afterwards."""
    from availability.db.migrate import upgrade
    from availability.harness import PostgresServer, create_database, drop_database

    with contextlib.ExitStack() as stack:
        if not admin_url:
            admin_url = stack.enter_context(PostgresServer()).url
        name = f"bench_flush_{uuid.uuid4().hex[:10]}"
        url = create_database(admin_url, name)
        stack.callback(drop_database, admin_url, name)
        upgrade(url)
        yield url


# ---------------------------------------------------------------- report


def print_report(result: dict[str, Any]) -> None:
    print(f"flusher benchmark: {result['events']} events x 3 bookmakers, 1 first + {result['cycles']} steady "
          f"cycles, batch_size {result['batch_size']}, PostgreSQL {result['postgres_version']}")
    print()
    print(f"  {'cycle':<28} {'rows':>9} {'flusher rows/s':>15} {'COPY rows/s':>12} {'COPY/flusher':>13}")
    for name, label in (("first", "first (all new: INSERT)"), ("steady", "steady (mostly confirmations)")):
        p = result["phases"][name]
        print(f"  {label:<28} {p['rows']:>9,} {p['flusher_rows_per_s']:>15,} {p['copy_rows_per_s']:>12,}"
              f" {p['copy_over_flusher']:>12.2f}x")
    print()
    for name in ("first", "steady"):
        s = result["phases"][name]["flusher"]
        print(f"  flusher, {name}: {s['records']:,} records in {s['batches']} batches -> {s['rows']:,} rows upserted, "
              f"{s['confirmed']:,} confirmed, {s['transitions']:,} history rows, {s['snapshots']:,} snapshot rows")
    print(f"  tables afterwards: {result['table_rows']}")
    print("  rows = market rows a cycle touched (listed or stamped unavailable); the baseline COPYs exactly")
    print("  those, as full rows, into UNLOGGED copies of market_odds / competitor_market_odds (same indexes).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"),
                        help="use this Redis instead of a throwaway one (default: $REDIS_URL)")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"),
                        help="PostgreSQL server to create a scratch database on, as a user allowed to "
                             "CREATE DATABASE (default: $DATABASE_URL, else a throwaway server)")
    parser.add_argument("--events", type=int, default=200, help="events per cycle (x3 bookmakers)")
    parser.add_argument("--cycles", type=int, default=3, help="steady-state cycles after the first one")
    parser.add_argument("--batch-size", type=int, default=500, help="Flusher batch_size (records per transaction)")
    parser.add_argument("--seed", type=int, default=20261128)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.events < 1 or args.cycles < 1 or args.batch_size < 1:
        parser.error("--events, --cycles and --batch-size must be >= 1")
    configure_logging("WARNING", stream=sys.stderr)
    started = time.perf_counter()
    with redis_server(args.redis_url) as (redis_url, own_redis), scratch_database(args.database_url) as db_url:
        result = asyncio.run(measure(redis_url, db_url, args.events, args.cycles, args.batch_size, args.seed,
                                     own_redis))
    emit(result, print_report, started, as_json=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
