"""Write-behind flusher: the shards' change streams -> PostgreSQL, losing nothing.

Every applied scrape leaves one record on its shard's stream
(``{av:2}:changes``, see :mod:`availability.records`). Any number of
:class:`Flusher` processes read those streams through one consumer group,
``flushers``, and write each batch of records to PostgreSQL in one
transaction. The guarantees:

* **At least once.** A record is acknowledged (``XACK``) only after the
  transaction holding it committed. A flusher that dies leaves its records
  pending; the others claim them with ``XAUTOCLAIM`` once they have been idle
  for ``claim_idle_ms``.
* **Idempotent and order-free.** Every row carries the scrape time it reflects
  (``scraped_at``) and refuses older versions; ``captured_at`` and ``seen_at``
  keep the newest time any record gave them (``GREATEST``); history rows are
  ``INSERT ... ON CONFLICT DO NOTHING`` on the whole transition. Replaying a
  record, or two flushers committing in either order, leaves the same state,
  times included: once every record is written, a market's ``captured_at``
  is the last scrape that changed its odds and its derived
  ``last_confirmed_at`` the last scrape that listed it, exactly.
* **Only changes are written.** A market row is written only when something
  about the market changed; a complete scrape's confirmation of the rest is
  recorded once, for its (event, bookmaker) (``last_complete_at``), and each
  market's last confirmation is derived from it (revision 0006).
* **Never dropped.** While PostgreSQL is unreachable the flusher retries for
  ever with bounded exponential backoff, keeps its records pending (and keeps
  them claimed, so the others do not pile up on them), and logs the lag.
  Only a record that can never be written -- it cannot be decoded, or
  PostgreSQL rejects its data, found by bisecting the failing batch -- goes
  to the shard's dead-letter stream (``{av:2}:dead``) with the error, and is
  then acknowledged.
* **Bounded streams.** :meth:`Flusher.trim` drops only entries every consumer
  group has acknowledged, and never touches a stream without a group.

The layers: :mod:`availability.rows` turns records into rows (pure;
:mod:`availability.fast_rows` in one pass), :mod:`availability.storage` writes
them (every SQL statement), :mod:`availability.streams` reads and acknowledges
the streams; this module is the loop that ties them together, with its retry
policy, and :mod:`availability.flush_batch` one batch. The Python work of the
next batch (decode, convert, merge, lay out) runs in a worker thread while the
current one is written; batches are still written, and acknowledged, one after
the other.

While a market's first record (``n``) is still pending and a later one for it
(``u``, ``a``, ``p``) commits first -- only possible with several flushers and
a backlog -- its row exists with ``captured_at`` NULL (not known yet) until
the first record commits.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, fields
from typing import Any

from psycopg_pool import AsyncConnectionPool
from redis.exceptions import ResponseError

from availability import metrics, storage
from availability.db.convert import HOME_BOOKMAKER
from availability.errors import SchemaNotReady
from availability.keys import DEFAULT_PREFIX, DEFAULT_SHARDS, KeySchema
from availability.flush_batch import BatchWriting, _Stopped
from availability.logs import get_logger
from availability.rows import BatchRows, build_rows
from availability.storage import Fenced as _Fenced
from availability.storage import is_transient_pg
from availability.streams import GROUP, REDIS_DOWN as _REDIS_DOWN
from availability.streams import ChangeStreams, StreamEntry, backoff_delay, default_consumer_name

__all__ = [
    "GROUP",
    "Flusher",
    "FlushStats",
    "StreamEntry",
    "BatchRows",
    "build_rows",
    "default_consumer_name",
    "is_transient_pg",
]

log = get_logger("availability.flusher")


@dataclass
class FlushStats:
    """What the flusher did; :meth:`Flusher.run_once` returns one, ``Flusher.stats`` sums them."""

    records: int = 0  # records written and acknowledged
    batches: int = 0
    rows: int = 0  # market rows inserted or changed
    confirmed: int = 0  # snapshots whose complete-scrape confirmation moved (one per complete scrape)
    transitions: int = 0  # history rows inserted (replays insert none)
    snapshots: int = 0  # availability_snapshots rows upserted
    dead_letters: int = 0
    retries: int = 0  # attempts failed on an unreachable server
    claimed: int = 0  # records claimed from idle consumers
    rejections: int = 0  # market_rejections rows inserted or advanced

    def add(self, other: "FlushStats") -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


class Flusher(BatchWriting):
    """Reads the change streams through the ``flushers`` group and writes PostgreSQL.

    ``redis`` is a :class:`~availability.cache.MarketCache` (its client, prefix
    and shards are used) or a ``redis.asyncio`` client with ``decode_responses``
    off. ``database`` is a PostgreSQL URL (the flusher keeps one connection
    and reconnects as needed) or a ``psycopg_pool.AsyncConnectionPool``.

    ``batch_size`` records at most go in one transaction; ``block_ms`` is how
    long :meth:`run` waits for new records; records another consumer left
    pending for ``claim_idle_ms`` are taken over. Give every process its own
    ``consumer`` name (the default is unique); a restarted process with the
    same name finds its own pending records first.
    """

    def __init__(
        self,
        redis: Any,
        database: str | AsyncConnectionPool,
        *,
        prefix: str = DEFAULT_PREFIX,
        shards: int = DEFAULT_SHARDS,
        home_bookmaker: str = HOME_BOOKMAKER,
        batch_size: int = 500,
        block_ms: int = 1000,
        claim_idle_ms: int = 60_000,
        consumer: str | None = None,
        group: str = GROUP,
        trim_interval_s: float = 10.0,
        max_backoff_s: float = 10.0,
        pipeline: bool = True,
        stop_grace_s: float = 10.0,
    ) -> None:
        keys = getattr(redis, "keys", None)
        is_cache = isinstance(keys, KeySchema)  # a MarketCache
        client = redis.client if is_cache else redis
        self.keys = keys if is_cache else KeySchema(prefix, shards)
        if batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
        self.database = database
        self.home_bookmaker = home_bookmaker
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.consumer = consumer or default_consumer_name()
        self.group = group
        self.trim_interval_s = trim_interval_s
        self.max_backoff_s = max_backoff_s
        self.pipeline = pipeline
        self.stop_grace_s = stop_grace_s
        self.stats = FlushStats()
        self.streams = ChangeStreams(client, self.keys, self.group, self.consumer, batch_size)
        self._streams = self.streams.streams  # stream key -> shard
        self._groups_ready = False
        self._db = storage.Database(database)
        self._stop = asyncio.Event()
        self._log = log.bind(consumer=self.consumer)
        self._generation = 0  # warm-up fence generation, read before every read from Redis
        self._fence_ready = False
        self._fenced = False  # a batch was fenced out: re-read our own pending records
        self.maintenance_failures = 0

    @property
    def client(self) -> Any:
        """The ``redis.asyncio`` client the streams are read with."""
        return self.streams.client

    @client.setter
    def client(self, client: Any) -> None:
        self.streams.client = client

    @property
    def database_label(self) -> str:
        """The database URL with its password masked (for logs)."""
        return self._db.label

    async def close(self) -> None:
        await self._db.close()

    async def __aenter__(self) -> "Flusher":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------ consumer groups

    async def ensure_groups(self, *, force: bool = False) -> None:
        """Create the group on every shard stream (``MKSTREAM``, from id 0): after a
        Redis restart that lost the data, the group is created again."""
        if self._groups_ready and not force:
            return
        await self.streams.create_groups()
        self._groups_ready = True

    # ------------------------------------------------------------ reading

    async def _read(self, start: str, block_ms: int | None) -> list[StreamEntry]:
        """``XREADGROUP`` from every shard: ``>`` new records, ``0`` our own pending ones."""
        await self._refresh_generation()
        try:
            return await self.streams.read(start, block_ms, self._generation, self._sleep)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._log.warning("flusher.group_missing", hint="Redis lost its data; recreating the consumer group")
            await self.ensure_groups(force=True)
            return []

    async def _claim(self, stream: str, cursor: str) -> tuple[str, list[StreamEntry]]:
        try:
            return await self.streams.claim(stream, cursor, self.claim_idle_ms, self._generation)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_groups(force=True)
            return "0-0", []

    # ------------------------------------------------------------ the loop

    async def run(self, stop: asyncio.Event | None = None) -> FlushStats:
        """Flush until ``stop`` is set; returns the totals. Survives Redis and
        PostgreSQL outages (retries for ever); stopping mid-outage leaves the
        current batch pending for the next flusher.

        A stop is bounded: if the loop has not ended ``stop_grace_s`` after
        ``stop`` was set (a call blocked on a Redis that stopped answering, say),
        it is cancelled. Nothing is lost: a batch not committed stays pending,
        and one committed but not acknowledged is redelivered (writes are
        idempotent)."""
        self._stop = stop or asyncio.Event()
        loop_task = asyncio.ensure_future(self._loop())
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({loop_task, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not loop_task.done():
                done, _ = await asyncio.wait({loop_task}, timeout=self.stop_grace_s)
                if not done:
                    self._log.warning("flusher.stop_forced", grace_s=self.stop_grace_s)
                    loop_task.cancel()
            return await loop_task
        finally:
            stopped.cancel()
            if not loop_task.done():
                loop_task.cancel()

    async def _loop(self) -> FlushStats:
        self._log.info("flusher.start", database=self.database_label, streams=len(self._streams),
                       batch_size=self.batch_size, claim_idle_ms=self.claim_idle_ms)
        next_claim = next_trim = 0.0
        own_pending_done = False
        failures = 0
        while not self._stop.is_set():
            try:
                await self.ensure_groups()
                if not own_pending_done:
                    await self._drain(lambda: self._read("0", None))
                    own_pending_done = True
                await self._reread_if_fenced()
                now = time.monotonic()
                if now >= next_claim:
                    next_claim = now + max(self.claim_idle_ms / 2000, 0.1)
                    await self._maintain("claim", self.claim_idle)
                if now >= next_trim:
                    next_trim = now + self.trim_interval_s
                    await self._maintain("trim", self.trim)
                entries = await self._read(">", self.block_ms)
                if entries:
                    await self._flush(entries)
                failures = 0
            except (_Stopped, asyncio.CancelledError):
                break
            except _REDIS_DOWN as exc:
                failures += 1
                metrics.RETRIES.labels("redis").inc()
                self.stats.retries += 1
                delay = backoff_delay(failures, self.max_backoff_s)
                self._log.warning("flusher.redis_unavailable", attempt=failures, retry_in_s=round(delay, 2),
                                  error=f"{type(exc).__name__}: {exc}")
                await self._sleep(delay)
        self._log.info("flusher.stop", **vars(self.stats))
        return self.stats

    async def _reread_if_fenced(self) -> None:
        """A batch was fenced out by a warm-up: read our own pending records again,
        under the new generation (those Redis lost are simply gone)."""
        if self._fenced:
            self._fenced = False
            await self._drain(lambda: self._read("0", None))

    async def _maintain(self, task: str, call: Any) -> None:
        """Run one maintenance task (claiming, trimming, gauges): an unexpected error is
        logged and counted, never the end of the flush loop. Outages and a missing
        schema still go to the loop, which waits them out or stops."""
        try:
            await call()
        except (_Stopped, _Fenced, SchemaNotReady, asyncio.CancelledError, *_REDIS_DOWN):
            raise
        except Exception as exc:
            if is_transient_pg(exc):
                raise
            self.maintenance_failures += 1
            metrics.MAINTENANCE_FAILURES.labels(task).inc()
            self._log.error("flusher.maintenance_failed", task=task, error=f"{type(exc).__name__}: {exc}")

    async def run_once(self) -> FlushStats:
        """Flush everything there is now: our own pending records, records other
        consumers left idle for ``claim_idle_ms``, then every new record. Returns
        what this call did."""
        before = FlushStats(**vars(self.stats))
        await self.ensure_groups()
        await self._drain(lambda: self._read("0", None))
        await self.claim_idle()
        await self._drain(lambda: self._read(">", None))
        for _ in range(3):  # each pass may be fenced out by yet another warm-up
            await self._reread_if_fenced()
        # a cron-style deployment must stay bounded too: trim, and leave no consumer behind
        await self._maintain("trim", self.trim)
        await self._maintain("consumer", self.remove_consumer_if_idle)
        done = FlushStats(**vars(self.stats))
        for f in fields(done):
            setattr(done, f.name, getattr(done, f.name) - getattr(before, f.name))
        return done

    async def _drain(self, read: Any) -> None:
        seen: set[tuple[str, str]] = set()
        while True:
            entries = [e for e in await read() if (e.stream, e.id) not in seen]
            if not entries:  # nothing new (an entry seen twice would mean its ack was lost)
                return
            seen.update((e.stream, e.id) for e in entries)
            await self._flush(entries)

    async def claim_idle(self) -> int:
        """Take over, and flush, records other consumers left pending for ``claim_idle_ms``."""
        claimed = 0
        await self._refresh_generation()  # once, before any claim of this pass (see _write)
        for stream in self._streams:
            cursor = "0-0"
            while True:
                cursor, entries = await self._claim(stream, cursor)
                if entries:
                    claimed += len(entries)
                    self.stats.claimed += len(entries)
                    self._log.info("flusher.claimed", stream=stream, records=len(entries))
                    await self._flush(entries)
                if cursor == "0-0":
                    break
        return claimed

    # ------------------------------------------------------------ bounded streams

    async def remove_consumer_if_idle(self) -> int:
        """Delete this flusher's consumer from every shard's group where it holds
        nothing pending (``XGROUP DELCONSUMER``); returns how many were removed."""
        return await self.streams.remove_consumer_if_idle()

    async def refresh_gauges(self) -> None:
        """Set the per-shard lag (undelivered) and pending (unacknowledged) gauges."""
        await self.streams.refresh_gauges()

    async def trim(self) -> int:
        """Trim every shard stream below the oldest entry some group still needs
        (its oldest pending entry, or the entry after its last delivered one).
        Streams without a group are left alone. Also refreshes the gauges."""
        trimmed = await self.streams.trim()
        await self.refresh_gauges()
        if trimmed:
            self._log.info("flusher.trim", entries=trimmed)
        return trimmed
