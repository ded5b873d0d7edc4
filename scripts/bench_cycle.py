#!/usr/bin/env python3
"""The production cycle end to end: worker and flusher processes, PostgreSQL with production durability.

One run, printed as a table of figures against their targets, each with a
baseline measured in the same run (these machines are noisy; no test asserts
a timing):

* **apply**: ``--workers`` scraper processes apply one cycle of the production
  profile (docs/domain.md: ~1,300 events, BetPawa ~170 markets, the two
  competitors ~72, ~5% odds changes, specialised markets leaving and
  returning; ~408,000 market observations) with ``MarketCache.apply_batch``,
  in batches of 50 events x 3 bookmakers. The scrapes of a cycle are
  generated before it starts (not timed).
* **drain**: then ``--flushers`` flusher processes run ``Flusher.run_once()``
  until the streams are drained into PostgreSQL (the wall time from the
  command to the last flusher's return, every record acknowledged).
* first cycle (every market new) and ``--cycles`` steady cycles.

Measured around each phase: wall time; CPU of every component from
``/proc/<pid>/stat`` (worker processes, flusher processes, the PostgreSQL
server's processes when it is our own) and Redis's from ``INFO cpu``; WAL
bytes from ``pg_current_wal_lsn()``; Redis memory per cached market from
``INFO memory`` after the first cycle was drained and its streams trimmed.

Baselines, in the same run:

* a plain ``COPY`` of the first cycle's market rows (full rows, as the
  flusher's tables hold them) into logged copies of ``market_odds`` /
  ``competitor_market_odds`` (``LIKE ... INCLUDING ALL``: same indexes), in
  one transaction: the floor for the first cycle's drain;
* a blind pipelined ``HSET`` of exactly the payloads each cycle's scripts
  store, into the same hash layout under a second key prefix, by the same
  worker processes: the floor for Redis CPU per market.

PostgreSQL runs with ``fsync``, ``synchronous_commit`` and
``full_page_writes`` on (production durability). By default both servers are
throwaway ones of our own (availability.harness), so WAL and CPU figures are
ours alone; ``--redis-url`` / ``--database-url`` use given servers instead (a
scratch database created and dropped, ``synchronous_commit`` set on for it;
WAL is server-wide there, so other clients' writes count too).

Seconds are printed as measured and, when the run is smaller than the
production profile, scaled linearly to its ~408,000 observations.

    python scripts/bench_cycle.py            # the production profile: 1,300 events, 3 steady cycles (~4 min)
    python scripts/bench_cycle.py --quick    # 100 events, 2 steady cycles (< 1 min)
    python scripts/bench_cycle.py --events 600 --cycles 2 --workers 2 --flushers 2 --json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import psycopg
import redis.asyncio as aioredis

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_flush import emit  # noqa: E402
from bench_apply import PROFILE, Simulation, batches, delete_prefix, event_ids, new_prefix  # noqa: E402

from availability.cache import MarketCache, Scrape  # noqa: E402
from availability.db.convert import HOME_BOOKMAKER  # noqa: E402
from availability.db.engine import libpq_url  # noqa: E402
from availability.flusher import Flusher  # noqa: E402
from availability.keys import KeySchema  # noqa: E402
from availability.logs import configure_logging  # noqa: E402
from availability.model import coerce_market, merge_markets  # noqa: E402
from availability.storage import MARKET_COLUMNS  # noqa: E402

PRODUCTION_EVENTS = 1_300
_COLUMNS = tuple(name for name, _ in MARKET_COLUMNS)  # the flusher's columns, in its order
COPY_TABLES = {"market_odds": "bench_copy_market_odds", "competitor_market_odds": "bench_copy_competitor_market_odds"}
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_dumps = json.JSONEncoder(separators=(",", ":")).encode


# ---------------------------------------------------------------- CPU from /proc


def proc_cpu(pid: int, children: bool = False) -> float:
    """CPU seconds (user + system) of ``pid``; with ``children``, plus its reaped children's."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # after the command name: state is field 3, utime 14, stime 15, cutime 16, cstime 17
    ticks = int(parts[11]) + int(parts[12])
    if children:
        ticks += int(parts[13]) + int(parts[14])
    return ticks / _CLK_TCK


def tree_cpu(root: int) -> float:
    """CPU seconds of a server: its root process, its live children, and the reaped ones."""
    total = proc_cpu(root, children=True)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == root:
            total += proc_cpu(int(entry))
    return total


# ---------------------------------------------------------------- worker and flusher processes


def _scrapes_of(worker: int, workers: int, events: int, seed: int, start: datetime) -> Simulation:
    """Worker ``worker``'s share of the events, as a simulation the parent can rebuild exactly."""
    mine = [e for i, e in enumerate(event_ids(events)) if i % workers == worker]
    return Simulation(mine, seed + worker, start)


def worker_main(conn: Any, redis_url: str, prefix: str, blind_prefix: str, worker: int, workers: int,
                events: int, seed: int, start: datetime) -> None:
    configure_logging("WARNING", stream=sys.stderr)
    asyncio.run(_worker(conn, redis_url, prefix, blind_prefix, worker, workers, events, seed, start))


async def _worker(conn: Any, redis_url: str, prefix: str, blind_prefix: str, worker: int, workers: int,
                  events: int, seed: int, start: datetime) -> None:
    """Commands from the parent: ``prepare`` (the next cycle's scrapes, untimed), ``apply``,
    ``blind`` (the same payloads as a blind pipelined HSET), ``stop``."""
    sim = _scrapes_of(worker, workers, events, seed, start)
    cache = MarketCache.from_url(redis_url, prefix=prefix)
    blind_keys = KeySchema(blind_prefix)
    scrapes: list[Scrape] = []
    try:
        await cache.ensure_config()
        conn.send("ready")
        while True:
            command = conn.recv()
            if command == "prepare":
                scrapes = sim.scrapes()
                conn.send("ready")
            elif command == "apply":
                counts: dict[str, int] = {}
                markets = 0
                for batch in batches(scrapes):
                    for outcome in await cache.apply_batch(batch):
                        counts[outcome.status] = counts.get(outcome.status, 0) + 1
                        for name in ("new", "changed", "unchanged"):
                            counts[name] = counts.get(name, 0) + getattr(outcome, name)
                        counts["became_unavailable"] = counts.get("became_unavailable", 0) + len(
                            outcome.became_unavailable)
                        counts["became_available"] = counts.get("became_available", 0) + len(
                            outcome.became_available)
                    markets += sum(len(s.markets) for s in batch)
                conn.send({"markets": markets, "scrapes": len(scrapes), "outcomes": counts})
            elif command == "blind_prepare":
                pipes = []
                for batch in batches(scrapes):
                    pipe = cache.client.pipeline(transaction=False)
                    for p in (cache._prepare(s) for s in batch):
                        pipe.execute_command("HSET", blind_keys.markets(p.event_id, p.bookmaker), *p.args[10:])
                    pipes.append(pipe)
                conn.send("ready")
            elif command == "blind":
                for pipe in pipes:
                    await pipe.execute()
                pipes = []
                conn.send("done")
            elif command == "stop":
                return
    finally:
        await cache.close()


def flusher_main(conn: Any, redis_url: str, database_url: str, prefix: str, batch_size: int) -> None:
    configure_logging("WARNING", stream=sys.stderr)
    asyncio.run(_flusher(conn, redis_url, database_url, prefix, batch_size))


async def _flusher(conn: Any, redis_url: str, database_url: str, prefix: str, batch_size: int) -> None:
    """Commands: ``drain`` (``run_once``: everything there is now), ``stop``."""
    client = aioredis.Redis.from_url(redis_url)
    flusher = Flusher(client, database_url, prefix=prefix, batch_size=batch_size, claim_idle_ms=3_600_000)
    try:
        await flusher.ensure_groups()
        conn.send("ready")
        while True:
            command = conn.recv()
            if command == "drain":
                stats = await flusher.run_once()
                conn.send(vars(stats))
            elif command == "stop":
                return
    finally:
        await flusher.close()
        await client.aclose()


class Crew:
    """Child processes driven in lock step over pipes; ``run`` sends one command to all."""

    def __init__(self, target: Callable[..., None], args_of: Callable[[int], tuple], count: int) -> None:
        ctx = mp.get_context("spawn")
        self.pipes = []
        self.procs = []
        for i in range(count):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=target, args=(child, *args_of(i)), daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)
        self.wait()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def cpu(self) -> float:
        return sum(proc_cpu(pid) for pid in self.pids)

    def wait(self, timeout: float = 900.0) -> list[Any]:
        replies = []
        for pipe, proc in zip(self.pipes, self.procs):
            if not pipe.poll(timeout):
                raise RuntimeError(f"process {proc.pid} did not answer in {timeout} s")
            replies.append(pipe.recv())
        return replies

    def run(self, command: str) -> list[Any]:
        for pipe in self.pipes:
            pipe.send(command)
        return self.wait()

    def stop(self) -> None:
        for pipe, proc in zip(self.pipes, self.procs):
            with contextlib.suppress(Exception):
                if proc.is_alive():
                    pipe.send("stop")
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
                proc.join()


# ---------------------------------------------------------------- the baseline's rows


def first_cycle_rows(workers: int, events: int, seed: int, start: datetime) -> tuple[list[tuple], list[tuple]]:
    """``(home rows, competitor rows)`` of the first cycle: every listed market, a full new row."""
    home: list[tuple] = []
    competitor: list[tuple] = []
    for w in range(workers):
        for scrape in _scrapes_of(w, workers, events, seed, start).scrapes():
            at = scrape.scraped_at
            out, source = (home, ()) if scrape.bookmaker == HOME_BOOKMAKER else (competitor, (scrape.bookmaker,))
            for m in merge_markets(coerce_market(x) for x in scrape.markets).values():
                out.append(source + (
                    scrape.event_id, m.betpawa_market_id, m.line, m.betpawa_market_name, m.handicap_type,
                    m.handicap_home, m.handicap_away, _dumps(m.outcomes),
                    None if m.market_groups is None else _dumps(m.market_groups), at, at, at, None,
                ))  # fmt: skip
    return home, competitor


# ---------------------------------------------------------------- measurement


@dataclass
class Cycle:
    """Figures of one cycle."""

    observations: int = 0
    scrapes: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    apply_s: float = 0.0
    worker_cpu_s: float = 0.0
    redis_cpu_s: float = 0.0
    drain_s: float = 0.0
    flusher_cpu_s: float = 0.0
    postgres_cpu_s: float | None = None
    wal_bytes: int = 0
    after_checkpoint: bool = False
    flushed: dict[str, int] = field(default_factory=dict)
    blind_redis_cpu_s: float = 0.0

    def per_market_us(self, seconds: float | None) -> float | None:
        return None if seconds is None or not self.observations else 1e6 * seconds / self.observations


class Servers:
    """Redis and PostgreSQL: throwaway ones of our own, or given ones (a scratch database)."""

    def __init__(self, redis_url: str | None, database_url: str | None) -> None:
        self.stack = contextlib.ExitStack()
        self.redis_url = redis_url
        self.admin_url = database_url
        self.postgres_pid: int | None = None
        self.own_redis = redis_url is None
        self.own_postgres = database_url is None
        self.database_url = ""

    def __enter__(self) -> "Servers":
        from availability.db.migrate import upgrade
        from availability.harness import PostgresServer, RedisServer, create_database, drop_database

        try:
            if self.redis_url is None:
                self.redis_url = self.stack.enter_context(RedisServer()).url
            if self.admin_url is None:
                pg = self.stack.enter_context(PostgresServer(settings={
                    "fsync": "on", "synchronous_commit": "on", "full_page_writes": "on",
                    # checkpoints only where the benchmark asks for one (see measure)
                    "max_wal_size": "8GB", "checkpoint_timeout": "1h",
                }))  # fmt: skip
                self.admin_url = pg.url
                self.postgres_pid = pg.pid
            name = f"bench_cycle_{uuid.uuid4().hex[:10]}"
            self.database_url = create_database(self.admin_url, name)
            self.stack.callback(drop_database, self.admin_url, name)
            with psycopg.connect(libpq_url(self.admin_url), autocommit=True) as conn:
                conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = on')
            upgrade(self.database_url)
        except BaseException:
            self.stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def postgres_cpu(self) -> float | None:
        return tree_cpu(self.postgres_pid) if self.postgres_pid else None


async def redis_cpu(client: aioredis.Redis) -> float:
    info = await client.info("cpu")
    user = info.get("used_cpu_user_main_thread", info.get("used_cpu_user", 0.0))
    system = info.get("used_cpu_sys_main_thread", info.get("used_cpu_sys", 0.0))
    return float(user) + float(system)


async def wal_lsn(conn: psycopg.AsyncConnection) -> str:
    return (await (await conn.execute("SELECT pg_current_wal_lsn()::text")).fetchone())[0]


async def wal_since(conn: psycopg.AsyncConnection, lsn: str) -> int:
    row = await (await conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", (lsn,))).fetchone()
    return int(row[0])


async def copy_baseline(conn: psycopg.AsyncConnection, home: list[tuple], competitor: list[tuple]) -> dict[str, Any]:
    """COPY the rows into logged copies of the two tables (same indexes), in one transaction."""
    for table, copy in COPY_TABLES.items():
        await conn.execute(f"CREATE TABLE {copy} (LIKE {table} INCLUDING ALL)")
    try:
        await conn.execute("CHECKPOINT")  # the flusher's drain started after one too (see measure)
        lsn = await wal_lsn(conn)
        t0 = time.perf_counter()
        async with conn.transaction():
            for table, columns, rows in (("market_odds", _COLUMNS, home),
                                         ("competitor_market_odds", ("source", *_COLUMNS), competitor)):
                async with conn.cursor() as cur:
                    async with cur.copy(f"COPY {COPY_TABLES[table]} ({', '.join(columns)}) FROM STDIN") as copy:
                        for row in rows:
                            await copy.write_row(row)
        seconds = time.perf_counter() - t0
        return {"rows": len(home) + len(competitor), "seconds": seconds, "wal_bytes": await wal_since(conn, lsn)}
    finally:
        for copy in COPY_TABLES.values():
            await conn.execute(f"DROP TABLE IF EXISTS {copy}")


async def measure(servers: Servers, args: argparse.Namespace) -> dict[str, Any]:
    assert servers.redis_url is not None
    prefix = new_prefix("cycle")
    blind_prefix = prefix + "-b"
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=1)
    client = aioredis.Redis.from_url(servers.redis_url)
    conn = await psycopg.AsyncConnection.connect(libpq_url(servers.database_url), autocommit=True)
    workers = flushers = None
    try:
        await MarketCache(client, prefix=prefix).mark_ready()
        memory_before = (await client.info("memory"))["used_memory"]
        workers = Crew(worker_main, lambda i: (servers.redis_url, prefix, blind_prefix, i, args.workers,
                                               args.events, args.seed, start), args.workers)
        flushers = Crew(flusher_main, lambda i: (servers.redis_url, servers.database_url, prefix,
                                                 args.batch_size), args.flushers)
        cycles: list[Cycle] = []
        memory_per_market = None
        copy: dict[str, Any] = {}
        for number in range(args.cycles + 1):
            cycle = Cycle()
            workers.run("prepare")
            # apply
            cpu0, r0, t0 = workers.cpu(), await redis_cpu(client), time.perf_counter()
            replies = workers.run("apply")
            cycle.apply_s = time.perf_counter() - t0
            cycle.worker_cpu_s = workers.cpu() - cpu0
            cycle.redis_cpu_s = await redis_cpu(client) - r0
            for reply in replies:
                cycle.observations += reply["markets"]
                cycle.scrapes += reply["scrapes"]
                for k, v in reply["outcomes"].items():
                    cycle.outcomes[k] = cycle.outcomes.get(k, 0) + v
            # drain. The first and the last steady one start from a CHECKPOINT, so they pay the
            # full-page image of every page they touch, as every cycle does in production
            # (checkpoint_timeout 5 min = one cycle); the other steady ones do not.
            cycle.after_checkpoint = number in (0, args.cycles)
            if cycle.after_checkpoint:
                await conn.execute("CHECKPOINT")
            lsn, cpu0, pg0 = await wal_lsn(conn), flushers.cpu(), servers.postgres_cpu()
            t0 = time.perf_counter()
            for reply in flushers.run("drain"):
                for k, v in reply.items():
                    cycle.flushed[k] = cycle.flushed.get(k, 0) + v
            cycle.drain_s = time.perf_counter() - t0
            cycle.flusher_cpu_s = flushers.cpu() - cpu0
            pg1 = servers.postgres_cpu()
            cycle.postgres_cpu_s = None if pg0 is None or pg1 is None else pg1 - pg0
            cycle.wal_bytes = await wal_since(conn, lsn)
            if number == 0:
                markets = (await client.info("memory"))["used_memory"] - memory_before
                memory_per_market = markets / cycle.observations
            # blind HSET of the same payloads (Redis CPU baseline)
            workers.run("blind_prepare")
            r0 = await redis_cpu(client)
            workers.run("blind")
            cycle.blind_redis_cpu_s = await redis_cpu(client) - r0
            cycles.append(cycle)
        # last: its CHECKPOINT must not fall between two steady cycles
        home, competitor = first_cycle_rows(args.workers, args.events, args.seed, start)
        copy = await copy_baseline(conn, home, competitor)
        pending = 0
        for shard in KeySchema(prefix).all_shards():
            with contextlib.suppress(Exception):
                pending += int((await client.xpending(KeySchema(prefix).changes(shard), "flushers"))["pending"])
        version = (await (await conn.execute("SHOW server_version")).fetchone())[0]
        settings = {name: (await (await conn.execute(f"SHOW {name}")).fetchone())[0]
                    for name in ("fsync", "synchronous_commit", "full_page_writes")}
        redis_version = (await client.info("server")).get("redis_version")
        return {
            "events": args.events,
            "workers": args.workers,
            "flushers": args.flushers,
            "batch_size": args.batch_size,
            "postgres": {"version": version, **settings, "own_server": servers.own_postgres},
            "redis": {"version": redis_version, "own_server": servers.own_redis},
            "memory_per_market_bytes": memory_per_market,
            "copy_baseline": copy,
            "left_pending": pending,
            "load_average": os.getloadavg(),
            "cycles": [vars(c) for c in cycles],
        }
    finally:
        for crew in (workers, flushers):
            if crew is not None:
                crew.stop()
        await conn.close()
        if not servers.own_redis:
            await delete_prefix(client, prefix)
            await delete_prefix(client, blind_prefix)
        await client.aclose()


# ---------------------------------------------------------------- report


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's table: each figure measured, its baseline (same run), its target, pass or not."""
    cycles = [Cycle(**c) for c in result["cycles"]]
    first, steady = cycles[0], cycles[1:]
    production = PRODUCTION_EVENTS * sum(core + special / 2 for core, special in PROFILE.values())
    scale = production / statistics.mean(c.observations for c in steady)
    scale_first = production / first.observations

    def mean(values: list[float]) -> float:
        return statistics.mean(values)

    def spread(values: list[float]) -> list[float]:
        return [min(values), max(values)]

    copy_s = result["copy_baseline"]["seconds"]
    rows: list[dict[str, Any]] = []

    def row(name: str, value: float, unit: str, target: str, ok: bool | None, baseline: str = "",
            scaled: float | None = None, values: list[float] | None = None) -> None:
        rows.append({"figure": name, "value": value, "unit": unit, "scaled": scaled, "range": values,
                     "baseline": baseline, "target": target, "pass": ok})

    apply_s = [c.apply_s for c in steady]
    row(f"steady cycle: apply ({result['workers']} workers)", mean(apply_s), "s", "< 2 s",
        mean(apply_s) * scale < 2, scaled=mean(apply_s) * scale, values=spread(apply_s))
    drain_s = [c.drain_s for c in steady]
    row(f"steady cycle: drained into PostgreSQL after apply ({result['flushers']} flusher"
        f"{'s' if result['flushers'] > 1 else ''})", mean(drain_s), "s", "< 3 s", mean(drain_s) * scale < 3,
        scaled=mean(drain_s) * scale, values=spread(drain_s))
    row("first cycle (all new): drain", first.drain_s, "s", "<= 2x COPY", first.drain_s <= 2 * copy_s,
        baseline=f"COPY {copy_s:.2f} s ({first.drain_s / copy_s:.1f}x)", scaled=first.drain_s * scale_first)
    plain = [c for c in steady if not c.after_checkpoint] or steady
    wal = [c.wal_bytes / 1e6 for c in plain]
    row("PostgreSQL WAL written per steady cycle", mean(wal), "MB", "< 30 MB", mean(wal) * scale < 30,
        baseline=f"first cycle {first.wal_bytes / 1e6:.0f} MB; its COPY "
                 f"{result['copy_baseline']['wal_bytes'] / 1e6:.0f} MB",
        scaled=mean(wal) * scale, values=spread(wal))
    checked = [c for c in steady if c.after_checkpoint]
    if checked and checked != plain:
        c = checked[-1]
        row("  the same, right after a CHECKPOINT (full-page images)", c.wal_bytes / 1e6, "MB", "", None,
            baseline="production: checkpoint_timeout 5 min = 1 cycle", scaled=c.wal_bytes / 1e6 * scale)
    client_us = [c.per_market_us(c.worker_cpu_s) or 0.0 for c in steady]
    row("client CPU per market (validate, encode, send, parse)", mean(client_us), "us", "<= 5 us",
        mean(client_us) <= 5, values=spread(client_us))
    redis_us = [c.per_market_us(c.redis_cpu_s) or 0.0 for c in steady]
    blind_us = [c.per_market_us(c.blind_redis_cpu_s) or 0.0 for c in steady]
    redis_ratio = mean(redis_us) / mean(blind_us) if mean(blind_us) else float("nan")
    row("Redis CPU per market, steady state, vs a blind pipelined HSET", mean(redis_us), "us", "<= 2x",
        redis_ratio <= 2, baseline=f"HSET {mean(blind_us):.2f} us ({redis_ratio:.1f}x)", values=spread(redis_us))
    # more figures, no target
    flusher_us = [c.per_market_us(c.flusher_cpu_s) or 0.0 for c in steady]
    row("flusher CPU per market, steady", mean(flusher_us), "us", "", None,
        baseline=f"first cycle {first.per_market_us(first.flusher_cpu_s):.1f} us", values=spread(flusher_us))
    if first.postgres_cpu_s is not None:
        pg_us = [c.per_market_us(c.postgres_cpu_s) or 0.0 for c in steady]
        row("PostgreSQL CPU per market, steady", mean(pg_us), "us", "", None,
            baseline=f"first cycle {first.per_market_us(first.postgres_cpu_s):.1f} us", values=spread(pg_us))
    row("first cycle (all new): apply", first.apply_s, "s", "", None, scaled=first.apply_s * scale_first,
        baseline=f"client CPU {first.per_market_us(first.worker_cpu_s):.1f} us/market, Redis "
                 f"{first.per_market_us(first.redis_cpu_s):.2f} us/market (HSET "
                 f"{first.per_market_us(first.blind_redis_cpu_s):.2f})")
    if result["memory_per_market_bytes"] is not None:
        row("Redis memory per cached market", result["memory_per_market_bytes"], "B", "", None)
    return {"rows": rows, "scale": scale, "first": vars(first), "steady_observations": mean(
        [c.observations for c in steady]), "production_observations": production}


def _fmt(value: float, unit: str) -> str:
    if unit == "B":
        return f"{value:,.0f} B"
    if unit == "us":
        return f"{value:.2f} us"
    if unit == "MB":
        return f"{value:.1f} MB"
    return f"{value:.2f} s"


def print_report(result: dict[str, Any]) -> None:
    s = result["summary"]
    pg, redis = result["postgres"], result["redis"]
    print(f"production cycle: {result['events']} events x {len(PROFILE)} bookmakers, "
          f"~{s['steady_observations']:,.0f} market observations a steady cycle, 1 first + "
          f"{len(result['cycles']) - 1} steady cycles; {result['workers']} worker and {result['flushers']} flusher "
          f"processes, batch_size {result['batch_size']}")
    print(f"PostgreSQL {pg['version']} (fsync={pg['fsync']} synchronous_commit={pg['synchronous_commit']} "
          f"full_page_writes={pg['full_page_writes']}, {'own server' if pg['own_server'] else 'given server'}), "
          f"Redis {redis['version']} ({'own server' if redis['own_server'] else 'given server'}); "
          f"load average {result['load_average'][0]:.1f} on {os.cpu_count()} cores")
    scaled = abs(s["scale"] - 1) > 0.05
    print()
    head = f"| {'figure':<66} | {'measured':>22} |"
    if scaled:
        head += f" {'at ~408,000 obs':>15} |"
    head += f" {'baseline (same run)':<44} | {'target':<10} |      |"
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for r in s["rows"]:
        measured = _fmt(r["value"], r["unit"])
        if r["range"] and r["range"][0] != r["range"][1]:
            lo, hi = r["range"]
            measured = f"{_fmt(lo, r['unit'])}-{_fmt(hi, r['unit'])}".replace(f" {r['unit']}-", "-")
        line = f"| {r['figure']:<66} | {measured:>22} |"
        if scaled:
            line += f" {_fmt(r['scaled'], r['unit']) if r['scaled'] is not None else '':>15} |"
        verdict = "" if r["pass"] is None else ("PASS" if r["pass"] else "FAIL")
        line += f" {r['baseline']:<44} | {r['target']:<10} | {verdict:<4} |"
        print(line)
    print()
    first = s["first"]
    print(f"first cycle: {first['observations']:,} observations, flushed {first['flushed'].get('records', 0):,} "
          f"records -> {first['flushed'].get('rows', 0):,} rows; COPY baseline "
          f"{result['copy_baseline']['rows']:,} rows in {result['copy_baseline']['seconds']:.2f} s")
    for i, c in enumerate(result["cycles"][1:], 1):
        o, f = c["outcomes"], c["flushed"]
        print(f"steady {i}: {c['observations']:,} obs ({o.get('changed', 0):,} changed, {o.get('new', 0):,} new, "
              f"{o.get('became_unavailable', 0):,} stamped, {o.get('became_available', 0):,} back); flushed "
              f"{f.get('records', 0):,} records -> {f.get('rows', 0):,} rows upserted, {f.get('confirmed', 0):,} "
              f"confirmed, {f.get('transitions', 0):,} history, {f.get('snapshots', 0):,} snapshots; "
              f"WAL {c['wal_bytes'] / 1e6:.1f} MB{' (after a CHECKPOINT)' if c['after_checkpoint'] else ''}")
    if result["left_pending"]:
        print(f"WARNING: {result['left_pending']} records left pending")
    print("CPU from /proc/<pid>/stat (workers, flushers, PostgreSQL server processes), Redis from INFO cpu "
          "(main thread); WAL from pg_current_wal_lsn() around the drain (the first cycle's and the last steady\n"
          "one's start from a CHECKPOINT: their WAL holds a full-page image of every page they touch).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis-url", default=None, help="use this Redis instead of a throwaway one")
    parser.add_argument("--database-url", default=None,
                        help="PostgreSQL server to create a scratch database on (a user allowed to CREATE "
                             "DATABASE) instead of a throwaway server; WAL figures are then server-wide")
    parser.add_argument("--events", type=int, default=PRODUCTION_EVENTS, help="events per cycle (x3 bookmakers)")
    parser.add_argument("--cycles", type=int, default=3, help="steady cycles after the first one")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--flushers", type=int, default=1, help="flusher processes")
    parser.add_argument("--batch-size", type=int, default=500, help="Flusher batch_size (records per transaction)")
    parser.add_argument("--seed", type=int, default=20261128)
    parser.add_argument("--quick", action="store_true", help="100 events, 2 steady cycles: under a minute")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.cycles = 100, 2
    if min(args.events, args.cycles, args.workers, args.flushers, args.batch_size) < 1:
        parser.error("--events, --cycles, --workers, --flushers and --batch-size must be >= 1")
    configure_logging("WARNING", stream=sys.stderr)
    started = time.perf_counter()
    with Servers(args.redis_url, args.database_url) as servers:
        result = asyncio.run(measure(servers, args))
    result["summary"] = summarise(result)
    emit(result, print_report, started, as_json=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
