"""One batch of a flusher: records to rows to one PostgreSQL transaction, with the
retry policy (wait out outages, judged by SQLSTATE; bisect a batch PostgreSQL refuses
down to the poison record, which goes to the dead-letter stream), the timer that keeps
a batch claimed while it is retried, and the acknowledgements. Mixed into
:class:`~availability.flusher.Flusher`, whose state it uses."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_when_event_set

from availability import metrics, storage
from availability.db.engine import is_schema_error, schema_not_ready
from availability.errors import SchemaNotReady
from availability.keys import KeySchema
from availability.logs import get_logger
from availability.fast_rows import entry_rows
from availability.rows import BatchRows, _RecordRows, build_rows
from availability.storage import Fenced as _Fenced
from availability.storage import Written as _Written
from availability.storage import is_transient_pg
from availability.streams import REDIS_DOWN as _REDIS_DOWN
from availability.streams import ChangeStreams, StreamEntry, backoff_delay


log = get_logger("availability.flusher")


class _Stopped(Exception):
    """Stopping while a server was unreachable: the batch stays pending, unacknowledged."""


@dataclass
class _Prepared:
    """One batch, its Python work done (:meth:`BatchWriting._prepare`), not written yet."""

    entries: list[StreamEntry]
    converted: list[tuple[StreamEntry, _RecordRows]] = field(default_factory=list)
    dead: list[tuple[StreamEntry, Exception]] = field(default_factory=list)  # cannot become rows
    gone: list[StreamEntry] = field(default_factory=list)  # trimmed away while pending
    rows: BatchRows | None = None  # build_rows of every converted record, laid out for writing
    prepare_s: float = 0.0


class BatchWriting:
    """The batch path of :class:`~availability.flusher.Flusher` (its attributes: ``streams``,
    ``stats``, ``keys``, ``_db``, ``_stop``, ``_log``, ``_generation``, ...)."""

    streams: ChangeStreams
    stats: Any
    keys: KeySchema
    batch_size: int
    claim_idle_ms: int
    max_backoff_s: float
    home_bookmaker: str
    pipeline: bool
    _db: Any
    _stop: asyncio.Event
    _log: Any
    _generation: int
    _fence_ready: bool
    _fenced: bool

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    # ------------------------------------------------------------ one batch

    async def _flush(self, entries: list[StreamEntry]) -> None:
        # While we work on these entries (several batches, a PostgreSQL outage, a long
        # bisection) a timer of their own keeps them claimed, so no other flusher
        # takes them over as idle; it is independent of any backoff.
        keeper = asyncio.create_task(self._keep_claimed_every(entries, max(self.claim_idle_ms / 4000, 0.05)))
        # Batch k+1 is prepared (decoded, converted, merged, laid out: Python work) in a
        # worker thread while batch k is written, so PostgreSQL and the flusher work at
        # once. Only writing a batch acknowledges it, one batch after the other, in order.
        batches = [entries[i : i + self.batch_size] for i in range(0, len(entries), self.batch_size)]
        ahead: asyncio.Future[_Prepared] | None = None
        try:
            ahead = self._prepare_ahead(batches[0]) if batches else None
            for k in range(len(batches)):
                assert ahead is not None
                prepared = await ahead
                ahead = self._prepare_ahead(batches[k + 1]) if k + 1 < len(batches) else None
                try:
                    await self._write_prepared(prepared)
                except _Fenced as exc:
                    # Redis was reloaded from PostgreSQL after we read these: leave them
                    # pending; if they still exist they are read again under the new
                    # generation, if Redis lost them the next scrape re-derives them.
                    self._fenced = True
                    left = sum(len(b) for b in batches[k:])
                    metrics.RECORDS.labels("fenced").inc(left)
                    self._log.warning("flusher.fenced", records=left, reason=str(exc))
                    return
        finally:
            if ahead is not None:  # stopping, or failed: the batch ahead stays pending, unwritten
                ahead.cancel()
                with contextlib.suppress(BaseException):
                    await ahead
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _keep_claimed_every(self, entries: list[StreamEntry], interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await self._keep_claimed(entries)

    def _prepare_ahead(self, entries: list[StreamEntry]) -> "asyncio.Future[_Prepared]":
        return asyncio.ensure_future(asyncio.to_thread(self._prepare, entries))

    def _prepare(self, entries: list[StreamEntry]) -> "_Prepared":
        """The Python work of a batch, pure (no I/O; run in a worker thread): decode and
        convert each record (one that cannot become rows is set aside for the dead
        letters), merge them into the batch's rows and lay those out for writing."""
        started = time.perf_counter()
        batch = _Prepared(entries)
        for entry in entries:
            if entry.fields is None:  # trimmed away while pending: nothing left to write
                batch.gone.append(entry)
                continue
            try:
                batch.converted.append((entry, entry_rows(entry.id, entry.fields, self.home_bookmaker)))
            except Exception as exc:  # RecordError, or a payload that cannot become a row
                batch.dead.append((entry, exc))
        if batch.converted:
            try:
                batch.rows = build_rows(rr for _, rr in batch.converted)
                storage.prepare(batch.rows)
            except Exception:  # the write builds them again, where a failure is bisected
                batch.rows = None
        batch.prepare_s = time.perf_counter() - started
        return batch

    async def _write_prepared(self, batch: "_Prepared") -> None:
        started = time.perf_counter()
        entries, converted, dead, gone = batch.entries, batch.converted, list(batch.dead), batch.gone
        retries_before = self.stats.retries
        totals = _Written()
        if converted:
            dead += await self._write_bisecting(converted, totals, batch.rows)
        for entry, exc in dead:
            await self._dead_letter(entry, exc)
        done = [e for e, _ in converted if all(e is not d for d, _ in dead)] + gone
        await self._ack(done)
        written = len(done) - len(gone)
        elapsed = time.perf_counter() - started
        lag_ms = max(0, int(time.time() * 1000) - min(e.millis for e in entries))
        self.stats.records += written
        self.stats.batches += 1
        self.stats.rows += totals.rows
        self.stats.confirmed += totals.confirmed
        self.stats.transitions += totals.transitions
        self.stats.snapshots += totals.snapshots
        self.stats.rejections += totals.rejections
        metrics.RECORDS.labels("flushed").inc(written)
        metrics.BATCH_SECONDS.observe(elapsed)
        metrics.LAG_SECONDS.set(lag_ms / 1000)
        self._log.info(
            "flusher.batch",
            records=written,
            rows=totals.rows,
            confirmed=totals.confirmed,
            transitions=totals.transitions,
            dead_letters=len(dead),
            lag_ms=lag_ms,
            retries=self.stats.retries - retries_before,
            ms=round(elapsed * 1000, 1),
            prepare_ms=round(batch.prepare_s * 1000, 1),
        )

    async def _write_bisecting(
        self, items: list[tuple[StreamEntry, _RecordRows]], totals: "_Written", rows: BatchRows | None = None
    ) -> list[tuple[StreamEntry, Exception]]:
        """Write ``items`` in one transaction (``rows``: theirs, built ahead); when PostgreSQL
        rejects the data, split the batch until the record(s) it rejects stand alone. Returns them."""
        try:
            entries = [e for e, _ in items]
            totals.add(await self._write_retrying(rows if rows is not None else build_rows(rr for _, rr in items), entries))
            return []
        except (_Stopped, _Fenced, SchemaNotReady):
            raise
        except Exception as exc:  # the statement itself refused the data: find the record(s)
            if is_transient_pg(exc):  # pragma: no cover - _write_retrying waits those out
                raise
            if len(items) == 1:
                return [(items[0][0], exc)]
            self._log.warning("flusher.bisect", records=len(items), error=f"{type(exc).__name__}: {exc}")
            middle = len(items) // 2
            return await self._write_bisecting(items[:middle], totals) + await self._write_bisecting(
                items[middle:], totals
            )

    async def _write_retrying(self, rows: BatchRows, entries: list[StreamEntry]) -> "_Written":
        generation = min(e.generation for e in entries)
        return await self._retry_pg("write", lambda: self._write(rows, generation), entries)

    async def _keep_claimed(self, entries: list[StreamEntry]) -> None:
        """Reset the idle time of records we are still working on, so other flushers
        do not take them over while we wait for PostgreSQL."""
        with contextlib.suppress(Exception):
            await self.streams.keep_claimed(entries)

    async def _refresh_generation(self) -> None:
        """Read the warm-up fence generation (waiting out a PostgreSQL outage).

        Called before every read from Redis, so a batch carries the generation
        under which it was read; see ``_write``."""

        async def read() -> int:
            async with self._db.connection() as conn:
                generation = await storage.read_generation(conn, self.keys.prefix, ensure=not self._fence_ready)
                self._fence_ready = True
                return generation

        self._generation = await self._retry_pg("fence", read, [])

    async def _retry_pg(self, what: str, call: Any, entries: list[StreamEntry]) -> Any:
        """Run ``call`` until it succeeds, waiting out PostgreSQL outages (by SQLSTATE);
        a missing schema raises :class:`SchemaNotReady`, stopping raises ``_Stopped``."""

        async def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            self.stats.retries += 1
            metrics.RETRIES.labels("postgres").inc()
            lag = {}
            if entries:
                oldest = min(e.millis for e in entries)
                lag = {"pending_records": len(entries), "oldest_lag_ms": max(0, int(time.time() * 1000) - oldest)}
                metrics.LAG_SECONDS.set(max(0, time.time() - oldest / 1000))
            self._log.warning(
                "flusher.postgres_unavailable",
                during=what,
                attempt=state.attempt_number,
                retry_in_s=round(state.upcoming_sleep, 2),
                database=self.database_label,
                error=f"{type(exc).__name__}: {exc}".strip(),
                **lag,
            )
            with contextlib.suppress(Exception):
                await self.refresh_gauges()

        retrying = AsyncRetrying(
            retry=retry_if_exception(is_transient_pg),
            wait=lambda state: backoff_delay(state.attempt_number - 1, self.max_backoff_s) + random.uniform(0, 0.05),
            stop=stop_when_event_set(self._stop),  # type: ignore[arg-type]
            before_sleep=before_sleep,
            sleep=self._sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await call()
        except Exception as exc:
            if self._stop.is_set() and is_transient_pg(exc):
                raise _Stopped() from exc
            if is_schema_error(exc):
                raise schema_not_ready(exc) from None
            raise
        raise AssertionError("unreachable")

    async def _write(self, rows: BatchRows, generation: int) -> _Written:
        async with self._db.connection() as conn:
            return await storage.write_batch(conn, rows, self.keys.prefix, generation, pipeline=self.pipeline)

    # ------------------------------------------------------------ acknowledging

    async def _retry_redis(self, what: str, call: Any) -> Any:
        """Redis calls that must happen (XACK after a commit): retried for ever."""
        failures = 0
        while True:
            try:
                return await call()
            except _REDIS_DOWN as exc:
                failures += 1
                self.stats.retries += 1
                metrics.RETRIES.labels("redis").inc()
                if self._stop.is_set():
                    raise _Stopped() from exc  # unacked records are simply redelivered
                delay = backoff_delay(failures, self.max_backoff_s)
                self._log.warning("flusher.redis_unavailable", during=what, attempt=failures,
                                  retry_in_s=round(delay, 2), error=f"{type(exc).__name__}: {exc}")
                await self._sleep(delay)

    async def _ack(self, entries: list[StreamEntry]) -> None:
        for stream, ids in self.streams.by_stream(entries).items():
            await self._retry_redis("ack", lambda: self.streams.ack(stream, ids))

    async def _dead_letter(self, entry: StreamEntry, exc: Exception) -> None:
        """Move one record to its shard's dead-letter stream and acknowledge it, atomically."""
        dead_stream = self.keys.dead_letters(entry.shard)
        data = await self.streams.dead_letter_fields(entry, exc)

        async def move() -> Any:
            return await self.streams.move_to_dead_letters(entry, data)

        await self._retry_redis("dead_letter", move)
        self.stats.dead_letters += 1
        metrics.RECORDS.labels("dead_letter").inc()
        metrics.DEAD_LETTERS.labels(str(entry.shard)).inc()
        self._log.error(
            "flusher.dead_letter",
            stream=entry.stream,
            id=entry.id,
            dead_letters=dead_stream,
            error=f"{type(exc).__name__}: {exc}"[:500],
        )
