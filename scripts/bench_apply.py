#!/usr/bin/env python3
"""Benchmark of the apply_scrape Lua script against a blind write, measured in the same run.

What it measures (one process, then ``--workers`` processes):

1. Redis-side time per market, from ``INFO commandstats`` deltas taken around
   each pipelined batch (50 events x 3 bookmakers, as the production scraper
   batched them):

   (a) baseline: blind pipelined ``HSET`` of exactly the payloads the script
       stores, into the same hash layout under a second key prefix;
   (b) ``MarketCache.apply_batch`` in steady state (mostly unchanged markets,
       ~5% odds changes, specialised markets leaving and returning);
   (c) the first apply of every event (all markets new).

   Blind and script batches alternate (and swap order every batch), so noise
   from other processes falls on both. The goal "script <= 2x blind write" is
   printed as PASS/FAIL; only ``--strict`` turns a FAIL into exit status 1.
   Timings are never asserted otherwise: these machines are noisy.

2. Client-side throughput: markets/s and scrapes/s of ``apply_batch`` (Python
   validation and encoding included) with N concurrent worker processes, each
   with its own events, over steady-state cycles.

Profile (docs/domain.md): BetPawa snapshots ~170 markets (150 always listed + 40
specialised ones listed about half the time), SportyBet and Bet9ja ~72 (62 +
20); each cycle ~5% of listed markets change odds, ~0.05% toggle suspension,
and each specialised market leaves or returns with probability 0.15.

Starts a throwaway Redis (availability.servers.RedisServer) unless
``--redis-url`` or ``REDIS_URL`` is given; on a given server it uses a fresh
random key prefix, never resets its statistics, and deletes its keys at the
end. Commandstats deltas on a shared server also count other clients' HSET
and EVALSHA calls: use a server of your own for clean figures.

    python scripts/bench_apply.py                      # ~30 s
    python scripts/bench_apply.py --events 400 --cycles 8 --workers 4 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator, Sequence

import redis.asyncio as aioredis

from availability.cache import MarketCache, Scrape
from availability.keys import KeySchema
from availability.logs import configure_logging

GOAL_RATIO = 2.0

# bookmaker -> (markets always listed, specialised markets listed part of the time)
PROFILE: dict[str, tuple[int, int]] = {
    "betpawa": (150, 40),
    "sportybet": (62, 20),
    "bet9ja": (62, 20),
}
ODDS_CHANGE = 0.05  # share of listed markets whose odds change per cycle
SUSPEND_TOGGLE = 0.0005  # share of markets whose outcomes get (un)suspended per cycle
SPECIAL_SHARE = 0.5  # share of specialised markets listed at the start
SPECIAL_TOGGLE = 0.15  # chance per cycle that a specialised market leaves or returns
BATCH_EVENTS = 50  # events per apply_batch, as the production scraper batched them
CYCLE = timedelta(minutes=5)

_TOTAL_LINES = [0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5]
_HANDICAP_LINES = [-2.5, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5]


# ---------------------------------------------------------------- synthetic scrapes


def catalogue(size: int) -> list[tuple]:
    """``size`` market templates: (id, name, line, handicap_type, home, away, outcome names, groups).

    A mix of markets without a line (1X2-like), totals (Over/Under 0.5..6.5)
    and handicaps (-2.5..2.5, 0.0 included), as a BetPawa snapshot has.
    """
    out: list[tuple] = []
    market_id = 1
    kinds = ["plain", "total", "plain", "handicap"]
    while len(out) < size:
        kind = kinds[market_id % len(kinds)]
        mid = str(market_id)
        if kind == "plain":
            out.append((mid, f"Match Result {mid}", None, None, None, None, ("1", "X", "2"), ("main",)))
        elif kind == "total":
            for line in _TOTAL_LINES:
                out.append((mid, f"Total Goals {mid}", line, None, None, None, ("Over", "Under"), ("goals",)))
        else:
            for line in _HANDICAP_LINES:
                out.append((mid, f"Asian Handicap {mid}", line, "asian", line, -line + 0.0, ("1", "2"),
                            ("handicap", "popular")))
        market_id += 1
    return out[:size]


_CATALOGUES = {bm: catalogue(core + special) for bm, (core, special) in PROFILE.items()}


class Book:
    """One event at one bookmaker: odds, suspension and listing of every market, cycle by cycle."""

    __slots__ = ("templates", "core", "odds", "active", "listed")

    def __init__(self, bookmaker: str, rng: random.Random) -> None:
        self.templates = _CATALOGUES[bookmaker]
        self.core = PROFILE[bookmaker][0]
        self.odds = [[round(rng.uniform(1.05, 9.0), 2) for _ in t[6]] for t in self.templates]
        self.active = [True] * len(self.templates)
        self.listed = [i < self.core or rng.random() < SPECIAL_SHARE for i in range(len(self.templates))]

    def step(self, rng: random.Random) -> None:
        for i in range(len(self.templates)):
            if self.listed[i] and rng.random() < ODDS_CHANGE:
                prices = self.odds[i]
                j = rng.randrange(len(prices))
                new = round(max(1.01, prices[j] * rng.uniform(0.85, 1.15)), 2)
                prices[j] = new if new != prices[j] else round(new + 0.01, 2)
            if rng.random() < SUSPEND_TOGGLE:
                self.active[i] = not self.active[i]
            if i >= self.core and rng.random() < SPECIAL_TOGGLE:
                self.listed[i] = not self.listed[i]

    def markets(self) -> list[dict]:
        out = []
        for i, (mid, name, line, htype, home, away, names, groups) in enumerate(self.templates):
            if not self.listed[i]:
                continue
            active = self.active[i]
            out.append({
                "betpawa_market_id": mid,
                "betpawa_market_name": name,
                "line": line,
                "handicap_type": htype,
                "handicap_home": home,
                "handicap_away": away,
                "outcomes": [{"name": o, "odds": p, "is_active": active} for o, p in zip(names, self.odds[i])],
                "market_groups": list(groups),
            })
        return out


class Simulation:
    """Events at every bookmaker of PROFILE, advanced one scrape cycle at a time."""

    def __init__(self, event_ids: Sequence[int], seed: int, start: datetime | None = None) -> None:
        self.rng = random.Random(seed)
        self.event_ids = list(event_ids)
        self.books = {(e, bm): Book(bm, self.rng) for e in self.event_ids for bm in PROFILE}
        self.start = start or datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=1)
        self.cycle = 0

    def scrapes(self) -> list[Scrape]:
        """The next cycle: one complete scrape per (event, bookmaker), events in order."""
        if self.cycle:
            for book in self.books.values():
                book.step(self.rng)
        at = self.start + self.cycle * CYCLE
        self.cycle += 1
        out = []
        for n, e in enumerate(self.event_ids):
            for k, bm in enumerate(PROFILE):
                scraped_at = at + timedelta(milliseconds=10 * n + k)
                out.append(Scrape(e, bm, self.books[(e, bm)].markets(), scraped_at))
        return out


def event_ids(count: int, first: int = 7_000_001) -> list[int]:
    return list(range(first, first + count))


def batches(scrapes: list[Scrape], events_per_batch: int = BATCH_EVENTS) -> Iterator[list[Scrape]]:
    size = events_per_batch * len(PROFILE)
    for i in range(0, len(scrapes), size):
        yield scrapes[i : i + size]


# ---------------------------------------------------------------- measurement helpers


@dataclass
class Phase:
    """Accumulated figures of one measured phase."""

    usec: int = 0  # Redis-side command time, from INFO commandstats
    cpu: float = 0.0  # Redis main-thread CPU seconds (parsing, execution, replies, socket I/O)
    calls: int = 0
    markets: int = 0
    scrapes: int = 0
    wall: float = 0.0  # client wall seconds of the pipelined batches
    prep: float = 0.0  # Python validation + encoding seconds inside apply_batch (script phases)
    counts: dict[str, int] = field(default_factory=dict)

    def _per_market(self, value: float) -> float:
        return value / self.markets if self.markets else float("nan")

    def command_us(self) -> float:
        return self._per_market(self.usec)

    def cpu_us(self) -> float:
        return self._per_market(1e6 * self.cpu)

    def wall_us(self) -> float:
        """Client wall time of the round trips (Python validation + encoding excluded)."""
        return self._per_market(1e6 * (self.wall - self.prep))

    def as_dict(self) -> dict[str, Any]:
        return {
            "command_us_per_market": round(self.command_us(), 4),
            "command_us_per_call": round(self.usec / self.calls, 2) if self.calls else None,
            "server_cpu_us_per_market": round(self.cpu_us(), 4),
            "wall_us_per_market": round(self.wall_us(), 4),
            "python_prepare_us_per_market": round(self._per_market(1e6 * self.prep), 4),
            "calls": self.calls,
            "scrapes": self.scrapes,
            "markets": self.markets,
            **({"outcomes": self.counts} if self.counts else {}),
        }


async def server_stats(client: aioredis.Redis) -> dict[str, Any]:
    """Per-command ``(calls, usec)`` and the main thread's CPU seconds, from one INFO call."""
    info = await client.info("commandstats", "cpu")
    stats: dict[str, Any] = {
        name.removeprefix("cmdstat_"): (v["calls"], v["usec"])
        for name, v in info.items()
        if name.startswith("cmdstat_")
    }
    user = info.get("used_cpu_user_main_thread", info.get("used_cpu_user", 0.0))
    system = info.get("used_cpu_sys_main_thread", info.get("used_cpu_sys", 0.0))
    stats["_cpu"] = user + system
    return stats


def stat_delta(before: dict, after: dict, command: str) -> tuple[int, int]:
    c0, u0 = before.get(command, (0, 0))
    c1, u1 = after.get(command, (0, 0))
    return c1 - c0, u1 - u0


def cpu_delta(before: dict, after: dict) -> float:
    return after["_cpu"] - before["_cpu"]


async def info_cpu_cost(client: aioredis.Redis, samples: int = 50) -> float:
    """Server CPU seconds one stats snapshot itself costs (subtracted from every phase)."""
    before = await server_stats(client)
    for _ in range(samples):
        after = await server_stats(client)
    return cpu_delta(before, after) / samples


def tally(phase: Phase, outcomes: list) -> None:
    for o in outcomes:
        c = phase.counts
        c[o.status] = c.get(o.status, 0) + 1
        c["new"] = c.get("new", 0) + o.new
        c["changed"] = c.get("changed", 0) + o.changed
        c["unchanged"] = c.get("unchanged", 0) + o.unchanged
        c["became_unavailable"] = c.get("became_unavailable", 0) + len(o.became_unavailable)
        c["became_available"] = c.get("became_available", 0) + len(o.became_available)


async def delete_prefix(client: aioredis.Redis, prefix: str) -> int:
    deleted = 0
    for pattern in (KeySchema(prefix).scan_pattern(), KeySchema(prefix).config()):
        batch: list[bytes] = []
        async for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += await client.unlink(*batch)
                batch = []
        if batch:
            deleted += await client.unlink(*batch)
    return deleted


def new_prefix(tag: str) -> str:
    return f"bench-{tag}-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------- (a), (b), (c): Redis-side cost


async def measure_redis_side(url: str, events: int, cycles: int, seed: int, own_server: bool) -> dict[str, Any]:
    client = aioredis.Redis.from_url(url)
    prefix = new_prefix("lua")
    blind_prefix = prefix + "-b"
    cache = MarketCache(client, prefix=prefix)
    blind_keys = KeySchema(blind_prefix)
    try:
        await cache.mark_ready()
        await cache.script.load()
        if own_server:
            await client.config_resetstat()
        snapshot_cpu = await info_cpu_cost(client)
        sim = Simulation(event_ids(events), seed)
        phases = {name: Phase() for name in ("blind_first", "first", "blind", "steady")}
        generate = 0.0
        for cycle in range(cycles + 1):
            t = time.perf_counter()
            scrapes = sim.scrapes()
            generate += time.perf_counter() - t
            blind_phase, script_phase = (phases["blind_first"], phases["first"]) if cycle == 0 else (
                phases["blind"], phases["steady"])
            for number, batch in enumerate(batches(scrapes)):
                # The exact arguments MarketCache sends; the blind write stores the same payloads.
                t = time.perf_counter()
                prepared = [cache._prepare(s) for s in batch]
                prep = time.perf_counter() - t
                markets = sum(int(p.args[9]) for p in prepared)
                blind = client.pipeline(transaction=False)
                for p in prepared:
                    blind.execute_command("HSET", blind_keys.markets(p.event_id, p.bookmaker), *p.args[9:])

                async def run_blind() -> None:
                    before = await server_stats(client)
                    t0 = time.perf_counter()
                    await blind.execute()
                    blind_phase.wall += time.perf_counter() - t0
                    after = await server_stats(client)
                    calls, usec = stat_delta(before, after, "hset")
                    blind_phase.calls += calls
                    blind_phase.usec += usec
                    blind_phase.cpu += cpu_delta(before, after) - snapshot_cpu
                    blind_phase.markets += markets
                    blind_phase.scrapes += len(batch)

                async def run_script() -> None:
                    before = await server_stats(client)
                    t0 = time.perf_counter()
                    outcomes = await cache.apply_batch(batch)
                    script_phase.wall += time.perf_counter() - t0
                    after = await server_stats(client)
                    for command in ("evalsha", "eval"):
                        calls, usec = stat_delta(before, after, command)
                        script_phase.calls += calls
                        script_phase.usec += usec
                    script_phase.cpu += cpu_delta(before, after) - snapshot_cpu
                    script_phase.markets += markets
                    script_phase.scrapes += len(batch)
                    script_phase.prep += prep
                    tally(script_phase, outcomes)

                first, second = (run_blind, run_script) if number % 2 == 0 else (run_script, run_blind)
                await first()
                await second()
        info = await client.info("server")
        memory = await client.info("memory")
        return {
            "server": {"redis_version": info.get("redis_version"), "own_server": own_server},
            "events": events,
            "cycles": cycles,
            "generate_seconds": round(generate, 2),
            "used_memory_mb": round(memory["used_memory"] / 2**20, 1),
            "phases": {name: p.as_dict() for name, p in phases.items()},
            "_phases": phases,
        }
    finally:
        if not own_server:
            await delete_prefix(client, prefix)
            await delete_prefix(client, blind_prefix)
        await client.aclose()


# ---------------------------------------------------------------- throughput with N workers


def _worker(url: str, prefix: str, worker: int, workers: int, events: int, cycles: int, seed: int,
            barrier: Any, results: Any) -> None:
    asyncio.run(_worker_async(url, prefix, worker, workers, events, cycles, seed, barrier, results))


async def _worker_async(url: str, prefix: str, worker: int, workers: int, events: int, cycles: int, seed: int,
                        barrier: Any, results: Any) -> None:
    mine = [e for i, e in enumerate(event_ids(events)) if i % workers == worker]
    sim = Simulation(mine, seed + worker)
    first = sim.scrapes()
    steady = [sim.scrapes() for _ in range(cycles)]
    cache = MarketCache.from_url(url, prefix=prefix)
    try:
        for batch in batches(first):  # untimed: every event's first apply
            await cache.apply_batch(batch)
        markets = scrapes = applied = 0
        await asyncio.to_thread(barrier.wait)
        t0 = time.perf_counter()
        for cycle in steady:
            for batch in batches(cycle):
                outcomes = await cache.apply_batch(batch)
                applied += sum(o.applied for o in outcomes)
                scrapes += len(batch)
                markets += sum(len(s.markets) for s in batch)
        elapsed = time.perf_counter() - t0
        results.put({"worker": worker, "seconds": elapsed, "markets": markets, "scrapes": scrapes,
                     "applied": applied})
    finally:
        await cache.close()


async def _prepare_deployment(url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        await MarketCache(client, prefix=prefix).mark_ready()
    finally:
        await client.aclose()


async def _drop_deployment(url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        await delete_prefix(client, prefix)
    finally:
        await client.aclose()


def measure_throughput(url: str, workers: int, events: int, cycles: int, seed: int, own_server: bool) -> dict[str, Any]:
    prefix = new_prefix("tp")
    asyncio.run(_prepare_deployment(url, prefix))
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(workers)
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(url, prefix, w, workers, events, cycles, seed, barrier, results))
             for w in range(workers)]
    try:
        for p in procs:
            p.start()
        rows = [results.get(timeout=600) for _ in procs]
        for p in procs:
            p.join()
        if any(p.exitcode for p in procs):
            raise RuntimeError(f"a worker failed: exit codes {[p.exitcode for p in procs]}")
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join()
        if not own_server:
            asyncio.run(_drop_deployment(url, prefix))
    seconds = max(r["seconds"] for r in rows)
    markets = sum(r["markets"] for r in rows)
    scrapes = sum(r["scrapes"] for r in rows)
    rate = markets / seconds
    return {
        "workers": workers,
        "events": events,
        "cycles": cycles,
        "seconds": round(seconds, 3),
        "markets": markets,
        "scrapes": scrapes,
        "applied": sum(r["applied"] for r in rows),
        "markets_per_s": round(rate),
        "scrapes_per_s": round(scrapes / seconds),
        # production: ~400,000 market observations per 5-minute cycle (docs/domain.md)
        "seconds_per_production_cycle": round(400_000 / rate, 1),
        "per_worker": sorted(rows, key=lambda r: r["worker"]),
    }


# ---------------------------------------------------------------- report


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


MEASURES = {
    # name: (Phase method, label)
    "server_cpu": ("cpu_us", "Redis main-thread CPU (INFO cpu)"),
    "command": ("command_us", "Redis command time (INFO commandstats)"),
    "wall": ("wall_us", "client wall time of the pipelined round trips"),
}
HEADLINE = "server_cpu"


def summarise(side: dict[str, Any]) -> dict[str, Any]:
    p = side.pop("_phases")
    ratios: dict[str, dict[str, float]] = {}
    for name, (method, _) in MEASURES.items():
        blind, steady, first, blind_first = (getattr(p[k], method)() for k in ("blind", "steady", "first",
                                                                               "blind_first"))
        ratios[name] = {
            "steady_over_blind": round(ratio(steady, blind), 3),
            "first_over_blind": round(ratio(first, blind), 3),
            "first_over_blind_first": round(ratio(first, blind_first), 3),
        }
    return {
        **side,
        "ratios": ratios,
        "goal": {
            "max_ratio": GOAL_RATIO,
            "measure": HEADLINE,
            "pass": bool(ratios[HEADLINE]["steady_over_blind"] <= GOAL_RATIO),
            "by_measure": {name: bool(r["steady_over_blind"] <= GOAL_RATIO) for name, r in ratios.items()},
        },
    }


def print_report(result: dict[str, Any]) -> None:
    side = result["redis_side"]
    ph = side["phases"]
    print(f"apply_scrape benchmark: {side['events']} events x {len(PROFILE)} bookmakers, "
          f"1 first + {side['cycles']} steady cycles, Redis {side['server']['redis_version']}"
          f" ({'own throwaway server' if side['server']['own_server'] else 'given server'})")
    print()
    print("µs per market")
    print(f"  {'phase':<42} {'server CPU':>10} {'command':>9} {'wall':>8}   {'command µs/call':>15}")
    rows = [
        ("(a) blind HSET, steady (baseline)", ph["blind"]),
        ("(b) apply_batch, steady", ph["steady"]),
        ("(c) apply_batch, first apply (all new)", ph["first"]),
        ("    blind HSET into empty hashes", ph["blind_first"]),
    ]
    for label, d in rows:
        print(f"  {label:<42} {d['server_cpu_us_per_market']:>10.3f} {d['command_us_per_market']:>9.3f}"
              f" {d['wall_us_per_market']:>8.3f}   {d['command_us_per_call']:>15.1f}")
    print("  server CPU = Redis main thread (parsing, execution, replies, socket I/O); command = INFO commandstats")
    print("  (EVALSHA's includes loading ARGV into Lua, HSET's excludes parsing its arguments); wall = client")
    print(f"  round trips minus Python validation + encoding, which apply_batch adds: "
          f"{ph['steady']['python_prepare_us_per_market']:.2f} µs/market")
    c = ph["steady"].get("outcomes", {})
    total = c.get("new", 0) + c.get("changed", 0) + c.get("unchanged", 0)
    if total:
        statuses = {k: v for k, v in c.items() if k in ("applied", "stale", "cold", "error", "invalid", "ignored_empty")}
        print(f"  steady profile: {c.get('changed', 0) / total:.1%} changed, {c.get('new', 0) / total:.1%} new, "
              f"{c.get('became_unavailable', 0)} stamped unavailable, {c.get('became_available', 0)} back "
              f"available; {statuses}")
    print()
    print(f"  {'ratio':<42} {'server CPU':>10} {'command':>9} {'wall':>8}")
    r = side["ratios"]
    for key, label in (("steady_over_blind", "(b)/(a) steady script / blind write"),
                       ("first_over_blind", "(c)/(a) first apply / blind write"),
                       ("first_over_blind_first", "(c) / blind write into empty hashes")):
        print(f"  {label:<42} {r['server_cpu'][key]:>9.2f}x {r['command'][key]:>8.2f}x {r['wall'][key]:>7.2f}x")
    goal = side["goal"]
    verdicts = "  ".join(f"{m}: {'PASS' if ok else 'FAIL'}" for m, ok in goal["by_measure"].items())
    print(f"  goal: script <= {GOAL_RATIO:g}x blind write, steady state, {MEASURES[goal['measure']][1]}: "
          f"{'PASS' if goal['pass'] else 'FAIL'}   ({verdicts})")
    tp = result.get("throughput")
    if tp:
        print()
        print(f"Client-side throughput, {tp['workers']} worker process(es), {tp['events']} events, "
              f"{tp['cycles']} steady cycles (validation + encoding + Redis):")
        print(f"  {tp['markets_per_s']:,} markets/s, {tp['scrapes_per_s']:,} scrapes/s "
              f"({tp['markets']:,} markets, {tp['scrapes']:,} scrapes in {tp['seconds']:.2f} s)")
        print(f"  a production cycle (~400,000 market observations) would take ~{tp['seconds_per_production_cycle']} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"),
                        help="use this server instead of a throwaway one (default: $REDIS_URL)")
    parser.add_argument("--events", type=int, default=200, help="events per cycle (x3 bookmakers)")
    parser.add_argument("--cycles", type=int, default=4, help="steady-state cycles after the first apply")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2,
                        help="worker processes for the throughput run (0 skips it)")
    parser.add_argument("--throughput-events", type=int, default=None,
                        help="events for the throughput run (default: --events)")
    parser.add_argument("--seed", type=int, default=20261128)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the ratio goal fails")
    args = parser.parse_args(argv)
    configure_logging("WARNING", stream=sys.stderr)
    if args.events < 1 or args.cycles < 1 or args.workers < 0:
        parser.error("--events and --cycles must be >= 1, --workers >= 0")

    def run(url: str, own: bool) -> dict[str, Any]:
        started = time.perf_counter()
        side = summarise(asyncio.run(measure_redis_side(url, args.events, args.cycles, args.seed, own)))
        result: dict[str, Any] = {"redis_side": side}
        if args.workers:
            result["throughput"] = measure_throughput(
                url, args.workers, args.throughput_events or args.events, args.cycles, args.seed, own)
        result["seconds"] = round(time.perf_counter() - started, 1)
        return result

    if args.redis_url:
        result = run(args.redis_url, False)
    else:
        from availability.servers import RedisServer

        with RedisServer() as server:
            result = run(server.url, True)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print_report(result)
        print(f"\n(total {result['seconds']} s)")
    return 1 if args.strict and not result["redis_side"]["goal"]["pass"] else 0


if __name__ == "__main__":
    sys.exit(main())
