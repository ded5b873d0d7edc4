"""The demo's child processes: scraper workers and flushers, and the parent's handle on them."""

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
from typing import Any, Iterable


from availability.coordinator import BatchSummary, EventCoordinator, ScrapeResult
from availability.demo.feed import Feed, FeedConfig
from availability.demo.options import DemoFailed, DemoOptions
from availability.demo.replay import Delivery, Expectation, delivery_plan, slow_worker
from availability.logs import get_logger
from availability.model import CachedMarket

log = get_logger("availability.demo")


# ---------------------------------------------------------------- the worker process


def _child_setup(options: DemoOptions) -> None:
    from availability.logs import configure_logging

    # Ctrl-C reaches the whole process group; the parent alone decides how to stop.
    # The parent spawned us with SIGINT blocked (see _Children.start), so a Ctrl-C
    # during our imports stayed pending: ignore it, then unblock (it is discarded).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
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
                if result.markets and not result.complete:
                    counts["partial_pages"] += 1
                if cross:
                    counts["observations"] += len(result.markets or ())
                    now.append(result)  # the owner's replay counts this copy
                    continue
                copies = 2 if plan.retry else 1
                counts["observations"] += len(result.markets or ()) * copies  # rows delivered, retries too
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
        """Start every child with SIGINT blocked: a spawned child inherits the
        mask through exec, so a Ctrl-C while it still imports (before
        :func:`_child_setup` ignores SIGINT) cannot print its own
        ``KeyboardInterrupt`` traceback. The parent gets a Ctrl-C of that
        moment as soon as the mask is restored."""
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            for p in self.flushers + self.workers:
                p.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

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
