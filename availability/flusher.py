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
  (``scraped_at``) and refuses older versions; ``captured_at`` and
  ``last_confirmed_at`` only move forward (``GREATEST``); history rows are
  ``INSERT ... ON CONFLICT DO NOTHING`` on the whole transition. Replaying a
  record, or two flushers committing in either order, leaves the same state.
* **Never dropped.** While PostgreSQL is unreachable the flusher retries for
  ever with bounded exponential backoff, keeps its records pending (and keeps
  them claimed, so the others do not pile up on them), and logs the lag.
  Only a record that can never be written -- it cannot be decoded, or
  PostgreSQL rejects its data, found by bisecting the failing batch -- goes
  to the shard's dead-letter stream (``{av:2}:dead``) with the error, and is
  then acknowledged.
* **Bounded streams.** :meth:`Flusher.trim` drops only entries every consumer
  group has acknowledged, and never touches a stream without a group.

Per batch, the writes are set-based: one ``INSERT ... SELECT FROM unnest(...)
ON CONFLICT DO UPDATE`` per table and kind of row, one ``UPDATE ... FROM
unnest(...)`` for markets a scrape only confirmed, all sent in one pipeline.

Known limit of order-free writes: when a market's first record (``n``) is
still pending while a later one for it (``u`` or ``a``) commits first -- only
possible with several flushers and a backlog -- the row is created from the
later record, and its ``captured_at`` is that scrape's time rather than the
earlier one (too new by at most one scrape interval).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import socket
import time
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, AsyncIterator, Iterable, Sequence

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_when_event_set,
    wait_exponential,
    wait_random,
)

from availability import metrics
from availability.db.convert import HOME_BOOKMAKER
from availability.db import fence
from availability import retention, subscribe
from availability.db.engine import is_schema_error, libpq_url, schema_not_ready
from availability.keys import DEFAULT_PREFIX, DEFAULT_SHARDS, KeySchema
from availability.logs import redact_url
from availability.errors import SchemaNotReady
from availability.records import ChangeRecord, RecordError, decode_record

__all__ = ["GROUP", "Flusher", "FlushStats", "StreamEntry", "BatchRows", "build_rows", "default_consumer_name"]

log = structlog.get_logger("availability.flusher")

GROUP = "flushers"
_REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)
_LOCK_CLASS = 0x6176  # "av": our own space of two-key advisory locks

# SQLSTATEs worth waiting out: the server is unreachable, overloaded, shutting
# down or restarting (classes 08, 53, 57P), a standby that is not writable yet
# after a failover (25006), or a transaction that lost a race and will pass when
# run again (40001 serialization failure, 40P01 deadlock). Anything else the
# statement raises is about the data, and no retry will ever fix it.
_TRANSIENT_CLASSES = ("08", "53", "57P")
_TRANSIENT_STATES = ("25006", "40001", "40P01")


def default_consumer_name() -> str:
    """``<host>-<pid>-<random>``: unique per process, readable in ``XINFO CONSUMERS``."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass
class FlushStats:
    """What the flusher did; :meth:`Flusher.run_once` returns one, ``Flusher.stats`` sums them."""

    records: int = 0  # records written and acknowledged
    batches: int = 0
    rows: int = 0  # market rows inserted or changed
    confirmed: int = 0  # market rows whose last_confirmed_at a confirming scrape moved
    transitions: int = 0  # history rows inserted (replays insert none)
    snapshots: int = 0  # availability_snapshots rows upserted
    dead_letters: int = 0
    retries: int = 0  # attempts failed on an unreachable server
    claimed: int = 0  # records claimed from idle consumers

    def add(self, other: "FlushStats") -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass(frozen=True)
class StreamEntry:
    """One entry read from a shard's stream; ``fields`` is ``None`` when it was trimmed away."""

    stream: str
    shard: int
    id: str
    fields: dict | None
    generation: int = 0  # the warm-up fence generation read just before this entry was

    @property
    def millis(self) -> int:
        return int(self.id.split("-", 1)[0])


def _id_tuple(stream_id: str | bytes) -> tuple[int, int]:
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# ---------------------------------------------------------------- records -> rows (pure)

MarketRowKey = tuple[str | None, int, str, float | None]  # (source or None for home, event, market id, line)


@dataclass
class _MarketRow:
    """A market row to upsert, merged over every record of the batch that changed it."""

    source: str | None
    event_id: int
    betpawa_market_id: str
    line: float | None
    values: tuple  # name, handicap_type, handicap_home, handicap_away, outcomes json, groups json
    scraped_at: datetime  # the version: the newest record's scrape
    unavailable_at: datetime | None
    captured: datetime | None  # newest scrape that changed the odds
    confirmed: datetime | None  # newest scrape that saw the market
    first: datetime  # oldest scrape: stands in for captured/confirmed on a brand-new row

    @property
    def category(self) -> tuple[bool, bool]:
        return self.captured is not None, self.confirmed is not None


@dataclass
class _SnapshotRow:
    event_id: int
    bookmaker: str
    last_scraped_at: datetime
    captured_at: datetime | None
    last_confirmed_at: datetime | None
    removed_at: datetime | None
    kickoff: datetime | None = None  # of the newest record that carries one


@dataclass
class BatchRows:
    """Everything one transaction writes, merged so each row appears once."""

    markets: dict[MarketRowKey, _MarketRow] = field(default_factory=dict)
    present: dict[MarketRowKey, datetime] = field(default_factory=dict)  # rows a scrape only confirmed
    history: set[tuple] = field(default_factory=set)
    snapshots: dict[tuple[int, str], _SnapshotRow] = field(default_factory=dict)

    @property
    def snapshot_keys(self) -> list[tuple[int, str]]:
        return sorted(self.snapshots)


@dataclass(frozen=True)
class _RecordRows:
    """One record's contribution, converted up front so a bad record fails alone."""

    record: ChangeRecord
    markets: tuple[tuple[MarketRowKey, tuple, bool, bool, bool], ...]  # key, values, odds_changed, present, unavailable
    present: tuple[MarketRowKey, ...]


_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode  # NaN: a bad record, not bad SQL


def _outcomes_json(outcomes: Any) -> str:
    for o in outcomes:
        if type(o["name"]) is not str or type(o["odds"]) is not float or type(o["is_active"]) is not bool:
            raise RecordError(f"outcome {o!r}: expected name str, odds float, is_active bool")
    return _dumps(outcomes)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def record_rows(record: ChangeRecord, home_bookmaker: str = HOME_BOOKMAKER) -> _RecordRows:
    """Convert one record into row values; raises on data that can never be written."""
    source = None if record.bookmaker == home_bookmaker else record.bookmaker
    event_id = record.event_id
    markets = []
    for change in record.changes:
        m = change.market
        groups = m.market_groups
        if groups is not None and not all(type(g) is str for g in groups):
            raise RecordError(f"market {change.key}: market_groups: expected strings, got {groups!r}")
        values = (
            m.betpawa_market_name,
            m.handicap_type,
            _optional_float(m.handicap_home),
            _optional_float(m.handicap_away),
            _outcomes_json(m.outcomes),
            None if groups is None else _dumps(groups),
        )
        key = (source, event_id, change.key.betpawa_market_id, change.key.line)
        unavailable = change.became_unavailable
        markets.append((key, values, change.odds_changed, not unavailable, unavailable))
    present = tuple((source, event_id, k.betpawa_market_id, k.line) for k in record.present)
    return _RecordRows(record, tuple(markets), present)


def build_rows(converted: Iterable[_RecordRows]) -> BatchRows:
    """Merge the rows of a batch: a row touched by several records appears once.

    The newest record gives a market row its state; ``captured_at`` is the
    newest scrape that changed the odds and ``last_confirmed_at`` the newest
    that saw the market, whichever record they come from.
    """
    rows = BatchRows()
    per_snapshot: dict[tuple[int, str], list[ChangeRecord]] = {}
    for rr in sorted(converted, key=lambda r: r.record.scraped_at):
        record, at = rr.record, rr.record.scraped_at
        per_snapshot.setdefault((record.event_id, record.bookmaker), []).append(record)
        for key, values, odds_changed, present, unavailable in rr.markets:
            row = rows.markets.get(key)
            if row is None:
                row = rows.markets[key] = _MarketRow(
                    key[0], key[1], key[2], key[3], values, at, at if unavailable else None, None, None, at
                )
            elif at >= row.scraped_at:  # records are sorted: this one is newer
                row.values, row.scraped_at = values, at
                row.unavailable_at = at if unavailable else None
            if odds_changed:
                row.captured = at
            if present:
                row.confirmed = at
        for key in rr.present:
            if key not in rows.present or rows.present[key] < at:
                rows.present[key] = at
        for market_key, transition in record.transitions:
            rows.history.add(
                (record.event_id, record.bookmaker, market_key.betpawa_market_id, market_key.line, transition, at)
            )
    # a confirmation of a row this batch upserts anyway rides along with the upsert
    for key in [k for k in rows.present if k in rows.markets]:
        at = rows.present.pop(key)
        row = rows.markets[key]
        if row.confirmed is None or row.confirmed < at:
            row.confirmed = at
    for (event_id, bookmaker), records in per_snapshot.items():
        snap = _SnapshotRow(event_id, bookmaker, records[-1].scraped_at, None, None, None)
        for record in records:  # oldest first, replaying apply_scrape.lua's meta rules
            if any(c.odds_changed for c in record.changes):
                snap.captured_at = record.scraped_at
            if record.present:
                snap.last_confirmed_at = record.scraped_at
                snap.removed_at = None
            if record.kind == "removed" and snap.removed_at is None:
                snap.removed_at = record.scraped_at
            if record.kickoff is not None:
                snap.kickoff = record.kickoff
        rows.snapshots[(event_id, bookmaker)] = snap
    return rows


# ---------------------------------------------------------------- SQL

_STATE_COLUMNS = (
    "betpawa_market_name",
    "handicap_type",
    "handicap_home",
    "handicap_away",
    "outcomes",
    "market_groups",
    "unavailable_at",
)
_UNNEST_TYPES = (
    ("event_id", "bigint"),
    ("betpawa_market_id", "text"),
    ("line", "float8"),
    ("betpawa_market_name", "text"),
    ("handicap_type", "text"),
    ("handicap_home", "float8"),
    ("handicap_away", "float8"),
    ("outcomes", "text"),
    ("market_groups", "text"),
    ("captured_at", "timestamptz"),
    ("last_confirmed_at", "timestamptz"),
    ("scraped_at", "timestamptz"),
    ("unavailable_at", "timestamptz"),
)


def _upsert_sql(competitor: bool, moves_captured: bool, moves_confirmed: bool) -> str:
    """Upsert of market rows; which of captured_at/last_confirmed_at the rows may move
    is fixed per statement, because ``excluded`` carries a value for both."""
    table = "competitor_market_odds" if competitor else "market_odds"
    constraint = "uq_competitor_market_odds_key" if competitor else "uq_market_odds_key"
    typed = ([("source", "text")] if competitor else []) + list(_UNNEST_TYPES)
    columns = ", ".join(name for name, _ in typed)
    arrays = ", ".join(f"%b::{kind}[]" for _, kind in typed)
    select = ", ".join(f"s.{name}::jsonb" if name in ("outcomes", "market_groups") else f"s.{name}" for name, _ in typed)
    newer = "excluded.scraped_at > t.scraped_at"
    sets = [f"{c} = CASE WHEN {newer} THEN excluded.{c} ELSE t.{c} END" for c in _STATE_COLUMNS]
    sets.append("scraped_at = GREATEST(t.scraped_at, excluded.scraped_at)")
    changed = [newer]
    if moves_captured:
        sets.append("captured_at = GREATEST(t.captured_at, excluded.captured_at)")
        changed.append("excluded.captured_at > t.captured_at")
    if moves_confirmed:
        sets.append("last_confirmed_at = GREATEST(t.last_confirmed_at, excluded.last_confirmed_at)")
        changed.append("excluded.last_confirmed_at > t.last_confirmed_at")
    return (
        f"INSERT INTO {table} AS t ({columns})\n"
        f"SELECT {select} FROM unnest({arrays}) AS s({columns})\n"
        f"ON CONFLICT ON CONSTRAINT {constraint} DO UPDATE SET\n    "
        + ",\n    ".join(sets)
        + "\nWHERE "
        + " OR ".join(changed)
    )


def _confirm_sql(competitor: bool) -> str:
    table = "competitor_market_odds" if competitor else "market_odds"
    source = ("%b::text[], ", "source, ", "t.source = s.source AND ") if competitor else ("", "", "")
    return (
        f"UPDATE {table} AS t SET last_confirmed_at = s.at\n"
        f"FROM unnest({source[0]}%b::bigint[], %b::text[], %b::float8[], %b::timestamptz[])"
        f" AS s({source[1]}event_id, betpawa_market_id, line, at)\n"
        f"WHERE {source[2]}t.event_id = s.event_id AND t.betpawa_market_id = s.betpawa_market_id"
        f" AND t.line IS NOT DISTINCT FROM s.line AND t.last_confirmed_at < s.at"
    )


_HISTORY_SQL = """
INSERT INTO market_availability_history (event_id, bookmaker, betpawa_market_id, line, transition, at)
SELECT * FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::float8[], %b::text[], %b::timestamptz[])
ON CONFLICT DO NOTHING
"""

# removed_at: the first removal after the newest scrape that saw markets (apply_scrape.lua
# keeps the first one with HSETNX and clears it when a scrape lists markets again).
_SNAPSHOT_SQL = """
INSERT INTO availability_snapshots AS t (event_id, bookmaker, last_scraped_at, captured_at, last_confirmed_at, removed_at,
                                         kickoff)
SELECT * FROM unnest(%b::bigint[], %b::text[], %b::timestamptz[], %b::timestamptz[], %b::timestamptz[], %b::timestamptz[],
                     %b::timestamptz[])
ON CONFLICT (event_id, bookmaker) DO UPDATE SET
    last_scraped_at = GREATEST(t.last_scraped_at, excluded.last_scraped_at),
    captured_at = GREATEST(t.captured_at, excluded.captured_at),
    last_confirmed_at = GREATEST(t.last_confirmed_at, excluded.last_confirmed_at),
    removed_at = (
        SELECT min(r) FROM (VALUES (t.removed_at), (excluded.removed_at)) AS v(r)
        WHERE r > COALESCE(GREATEST(t.last_confirmed_at, excluded.last_confirmed_at), '-infinity')
    ),
    -- the kickoff of the newest scrape that gave one (revision 0005)
    kickoff = CASE WHEN excluded.kickoff IS NOT NULL AND excluded.last_scraped_at >= t.last_scraped_at
                   THEN excluded.kickoff ELSE COALESCE(t.kickoff, excluded.kickoff) END,
    updated_at = now()
"""


# Two flushers writing records of one snapshot serialise on it, in a fixed order:
# no deadlocks between their row locks.
_LOCK_SQL = "SELECT pg_advisory_xact_lock(%s, k) FROM unnest(%b::int[]) AS k"

_UPSERTS = {
    (competitor, captured, confirmed): _upsert_sql(competitor, captured, confirmed)
    for competitor in (False, True)
    for captured, confirmed in ((True, True), (False, True), (False, False))
}
_CONFIRMS = {competitor: _confirm_sql(competitor) for competitor in (False, True)}


def _lock_id(event_id: int, bookmaker: str) -> int:
    digest = hashlib.blake2b(f"{event_id}:{bookmaker}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


def _columns(rows: Sequence[tuple]) -> list[list]:
    return [list(col) for col in zip(*rows)] if rows else []


def _statements(rows: BatchRows) -> list[tuple[str, str, list]]:
    """``(label, sql, params)`` of one batch, rows sorted by key (a stable lock order)."""
    out: list[tuple[str, str, list]] = []
    locks = sorted({_lock_id(e, b) for e, b in rows.snapshots})
    out.append(("locks", _LOCK_SQL, [_LOCK_CLASS, locks]))

    def sort_key(key: MarketRowKey) -> tuple:
        source, event, market, line = key
        return (source or "", event, market, line is not None, line or 0.0)

    groups: dict[tuple[bool, bool, bool], list[tuple]] = {}
    for key in sorted(rows.markets, key=sort_key):
        r = rows.markets[key]
        captured = r.captured or r.first
        confirmed = r.confirmed or r.first
        values = (r.event_id, r.betpawa_market_id, r.line, *r.values, captured, confirmed, r.scraped_at, r.unavailable_at)
        if r.source is not None:
            values = (r.source, *values)
        groups.setdefault((r.source is not None, *r.category), []).append(values)
    for (competitor, captured, confirmed), values in sorted(groups.items()):
        label = "competitor_market_odds" if competitor else "market_odds"
        out.append((label, _UPSERTS[(competitor, captured, confirmed)], _columns(values)))
    for competitor in (False, True):
        confirms = [
            ((k[0],) if competitor else ()) + (k[1], k[2], k[3], at)
            for k, at in sorted(rows.present.items(), key=lambda kv: sort_key(kv[0]))
            if (k[0] is not None) == competitor
        ]
        if confirms:
            out.append(("confirmed", _CONFIRMS[competitor], _columns(confirms)))
    if rows.history:
        history = sorted(rows.history, key=lambda h: (h[0], h[1], h[2], h[3] is not None, h[3] or 0.0, h[5], h[4]))
        out.append(("history", _HISTORY_SQL, _columns(history)))
    snaps = [
        (s.event_id, s.bookmaker, s.last_scraped_at, s.captured_at, s.last_confirmed_at, s.removed_at, s.kickoff)
        for s in (rows.snapshots[k] for k in rows.snapshot_keys)
    ]
    if snaps:
        out.append(("availability_snapshots", _SNAPSHOT_SQL, _columns(snaps)))
    return out


# ---------------------------------------------------------------- the flusher


class _Stopped(Exception):
    """Stopping while a server was unreachable: the batch stays pending, unacknowledged."""


class _Fenced(Exception):
    """``availability warm`` reloaded Redis from PostgreSQL after this batch was read:
    committing it now could undo what warm-up loaded, so the batch is not written."""


def _sqlstate(exc: BaseException) -> str | None:
    return getattr(exc, "sqlstate", None) if isinstance(exc, psycopg.Error) else None


def is_transient_pg(exc: BaseException) -> bool:
    """Worth waiting out: PostgreSQL is unreachable or briefly unable to serve,
    judged by SQLSTATE class, not by exception type (psycopg raises
    ``OperationalError`` for a too-large index row too). An error without a
    SQLSTATE is transient only when the connection itself failed."""
    state = _sqlstate(exc)
    if state is not None:
        return state.startswith(_TRANSIENT_CLASSES) or state in _TRANSIENT_STATES
    return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError, OSError, asyncio.TimeoutError))




class Flusher:
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
    ) -> None:
        keys = getattr(redis, "keys", None)
        if isinstance(keys, KeySchema):  # a MarketCache
            self.client = redis.client
            self.keys = keys
        else:
            self.client = redis
            self.keys = KeySchema(prefix, shards)
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
        self.stats = FlushStats()
        self._streams = {self.keys.changes(s): s for s in self.keys.all_shards()}
        self._groups_ready = False
        self._conn: psycopg.AsyncConnection | None = None
        self._stop = asyncio.Event()
        self._is_cluster = self.client.__class__.__name__ == "RedisCluster"
        self._log = log.bind(consumer=self.consumer)
        self._generation = 0  # warm-up fence generation, read before every read from Redis
        self._fence_ready = False
        self._fenced = False  # a batch was fenced out: re-read our own pending records
        self.maintenance_failures = 0

    @property
    def database_label(self) -> str:
        """The database URL with its password masked (for logs)."""
        if isinstance(self.database, str):
            return redact_url(self.database)
        return redact_url(getattr(self.database, "conninfo", "") or "postgresql://(pool)")

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

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
        for stream in self._streams:
            try:
                await self.client.xgroup_create(stream, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._groups_ready = True

    # ------------------------------------------------------------ reading

    def _entries(self, reply: Any) -> list[StreamEntry]:
        if not reply:
            return []
        out = []
        for stream, messages in reply.items() if isinstance(reply, dict) else reply:
            name = _text(stream)
            if len(messages) == 1 and isinstance(messages[0], list):
                messages = messages[0]  # RESP3 replies wrap the entries once more
            for message_id, data in messages:
                out.append(StreamEntry(name, self._streams[name], _text(message_id), data or None, self._generation))
        return out

    async def _read(self, start: str, block_ms: int | None) -> list[StreamEntry]:
        """``XREADGROUP`` from every shard: ``>`` new records, ``0`` our own pending ones."""
        await self._refresh_generation()
        try:
            if self._is_cluster:  # one slot per call
                entries = []
                for stream in self._streams:
                    reply = await self.client.xreadgroup(
                        self.group, self.consumer, {stream: start}, count=self.batch_size
                    )
                    entries += self._entries(reply)
                if not entries and block_ms:
                    await self._sleep(block_ms / 1000)
                return entries
            reply = await self.client.xreadgroup(
                self.group,
                self.consumer,
                {stream: start for stream in self._streams},
                count=self.batch_size,
                block=block_ms,
            )
            return self._entries(reply)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._log.warning("flusher.group_missing", hint="Redis lost its data; recreating the consumer group")
            await self.ensure_groups(force=True)
            return []

    async def _claim(self, stream: str, cursor: str) -> tuple[str, list[StreamEntry]]:
        try:
            reply = await self.client.xautoclaim(
                stream, self.group, self.consumer, self.claim_idle_ms, start_id=cursor, count=self.batch_size
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_groups(force=True)
            return "0-0", []
        entries = self._entries([(stream, [m for m in reply[1] if m and m[0] is not None])])
        return _text(reply[0]), entries

    # ------------------------------------------------------------ the loop

    async def run(self, stop: asyncio.Event | None = None) -> FlushStats:
        """Flush until ``stop`` is set; returns the totals. Survives Redis and
        PostgreSQL outages (retries for ever); stopping mid-outage leaves the
        current batch pending for the next flusher."""
        self._stop = stop or asyncio.Event()
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
                delay = min(self.max_backoff_s, 0.05 * 2 ** min(failures, 20))
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

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    # ------------------------------------------------------------ one batch

    async def _flush(self, entries: list[StreamEntry]) -> None:
        # While we work on these entries (several batches, a PostgreSQL outage, a long
        # bisection) a timer of their own keeps them claimed, so no other flusher
        # takes them over as idle; it is independent of any backoff.
        keeper = asyncio.create_task(self._keep_claimed_every(entries, max(self.claim_idle_ms / 4000, 0.05)))
        try:
            for i in range(0, len(entries), self.batch_size):
                try:
                    await self._flush_batch(entries[i : i + self.batch_size])
                except _Fenced as exc:
                    # Redis was reloaded from PostgreSQL after we read these: leave them
                    # pending; if they still exist they are read again under the new
                    # generation, if Redis lost them the next scrape re-derives them.
                    self._fenced = True
                    metrics.RECORDS.labels("fenced").inc(len(entries) - i)
                    self._log.warning("flusher.fenced", records=len(entries) - i, reason=str(exc))
                    return
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _keep_claimed_every(self, entries: list[StreamEntry], interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await self._keep_claimed(entries)

    async def _flush_batch(self, entries: list[StreamEntry]) -> None:
        started = time.perf_counter()
        retries_before = self.stats.retries
        converted: list[tuple[StreamEntry, _RecordRows]] = []
        dead: list[tuple[StreamEntry, Exception]] = []
        gone: list[StreamEntry] = []
        for entry in entries:
            if entry.fields is None:  # trimmed away while pending: nothing left to write
                gone.append(entry)
                continue
            try:
                record = decode_record(entry.id, entry.fields)
                converted.append((entry, record_rows(record, self.home_bookmaker)))
            except Exception as exc:  # RecordError, or a payload that cannot become a row
                dead.append((entry, exc))
        totals = _Written()
        if converted:
            dead += await self._write_bisecting(converted, totals)
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
        )

    async def _write_bisecting(
        self, items: list[tuple[StreamEntry, _RecordRows]], totals: "_Written"
    ) -> list[tuple[StreamEntry, Exception]]:
        """Write ``items`` in one transaction; when PostgreSQL rejects the data,
        split the batch until the record(s) it rejects stand alone. Returns them."""
        try:
            entries = [e for e, _ in items]
            totals.add(await self._write_retrying(build_rows(rr for _, rr in items), entries))
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
        by_stream: dict[str, list[str]] = {}
        for e in entries:
            by_stream.setdefault(e.stream, []).append(e.id)
        with contextlib.suppress(Exception):
            for stream, ids in by_stream.items():
                await self.client.xclaim(stream, self.group, self.consumer, 0, ids, justid=True)

    async def _refresh_generation(self) -> None:
        """Read the warm-up fence generation (waiting out a PostgreSQL outage).

        Called before every read from Redis, so a batch carries the generation
        under which it was read; see ``_write``."""

        async def read() -> int:
            async with self._connection() as conn:
                if not self._fence_ready:
                    await conn.execute(fence.ENSURE_SQL, (self.keys.prefix,))
                    self._fence_ready = True
                cur = await conn.execute(fence.READ_SQL, (self.keys.prefix,))
                row = await cur.fetchone()
                return int(row[0]) if row else 0

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
            wait=wait_exponential(multiplier=0.05, max=self.max_backoff_s) + wait_random(0, 0.05),
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

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        if isinstance(self.database, AsyncConnectionPool):
            async with self.database.connection() as conn:
                yield conn
            return
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    await self._conn.close()
            self._conn = None
            self._conn = await psycopg.AsyncConnection.connect(
                libpq_url(self.database), autocommit=True, connect_timeout=5
            )
        yield self._conn

    async def _write(self, rows: BatchRows, generation: int) -> "_Written":
        statements = _statements(rows)
        written = _Written()
        async with self._connection() as conn:
            cursors: list[tuple[str, psycopg.AsyncCursor]] = []
            pipeline = conn.pipeline() if self.pipeline else contextlib.nullcontext()
            async with pipeline:
                async with conn.transaction():
                    # The share lock makes warm-up's bump wait for this commit (or this
                    # commit see the bump): never both "read before" and "committed after".
                    checked = await conn.execute(fence.CHECK_SQL, (self.keys.prefix,))
                    current = await checked.fetchone()
                    if current is None or current[0] != generation:
                        raise _Fenced(
                            f"warm-up generation is {current[0] if current else None}, the batch was read "
                            f"under {generation}"
                        )
                    # events `availability prune` removed stay removed (see availability.retention)
                    pruned = await retention.pruned_among(conn, (e for e, _ in rows.snapshots))
                    if pruned:
                        statements = _statements(retention.without_events(rows, pruned))
                        written.pruned_events += len(pruned)
                        self._log.info("flusher.pruned_events_skipped", events=sorted(pruned))
                    for label, sql, params in statements:
                        cur = conn.cursor()
                        await cur.execute(sql, params)
                        cursors.append((label, cur))
            for label, cur in cursors:
                count = max(cur.rowcount, 0)
                if label in ("market_odds", "competitor_market_odds"):
                    written.rows += count
                    metrics.ROWS.labels(label).inc(count)
                elif label == "confirmed":
                    written.confirmed += count
                elif label == "history":
                    written.transitions += count
                elif label == "availability_snapshots":
                    written.snapshots += count
                    metrics.ROWS.labels(label).inc(count)
        metrics.CONFIRMED.inc(written.confirmed)
        metrics.TRANSITIONS.inc(written.transitions)
        return written

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
                if self._stop.is_set() and failures > 3:
                    raise _Stopped() from exc  # unacked records are simply redelivered
                delay = min(self.max_backoff_s, 0.05 * 2 ** min(failures, 20))
                self._log.warning("flusher.redis_unavailable", during=what, attempt=failures,
                                  retry_in_s=round(delay, 2), error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(delay)

    async def _ack(self, entries: list[StreamEntry]) -> None:
        by_stream: dict[str, list[str]] = {}
        for e in entries:
            by_stream.setdefault(e.stream, []).append(e.id)
        for stream, ids in by_stream.items():
            await self._retry_redis("ack", lambda: self.client.xack(stream, self.group, *ids))

    async def _dead_letter(self, entry: StreamEntry, exc: Exception) -> None:
        """Move one record to its shard's dead-letter stream and acknowledge it, atomically."""
        dead_stream = self.keys.dead_letters(entry.shard)
        data: dict[Any, Any] = dict(entry.fields or {})
        data.update(
            {
                b"error": f"{type(exc).__name__}: {exc}"[:2000],
                b"attempts": str(await self._deliveries(entry)),
                b"source_stream": entry.stream,
                b"source_id": entry.id,
                b"consumer": self.consumer,
                b"failed_at_ms": str(int(time.time() * 1000)),
            }
        )

        async def move() -> Any:
            pipe = self.client.pipeline(transaction=not self._is_cluster)
            pipe.xadd(dead_stream, data)
            pipe.xack(entry.stream, self.group, entry.id)
            return await pipe.execute()

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

    async def _deliveries(self, entry: StreamEntry) -> int:
        """How many times the record was delivered to a flusher (XPENDING), at least 1."""
        try:
            pending = await self.client.xpending_range(entry.stream, self.group, entry.id, entry.id, 1)
            return max(1, int(pending[0]["times_delivered"])) if pending else 1
        except Exception:
            return 1

    # ------------------------------------------------------------ bounded streams

    async def remove_consumer_if_idle(self) -> int:
        """Delete this flusher's consumer from every shard's group where it holds
        nothing pending (``XGROUP DELCONSUMER``); returns how many were removed."""
        removed = 0
        for stream in self._streams:
            try:
                consumers = await self.client.xinfo_consumers(stream, self.group)
            except ResponseError:  # no stream or no group
                continue
            for c in consumers:
                c = {_text(k): v for k, v in c.items()}
                if _text(c.get("name", b"")) == self.consumer and not int(c.get("pending") or 0):
                    await self.client.xgroup_delconsumer(stream, self.group, self.consumer)
                    removed += 1
        return removed

    async def _groups(self, stream: str) -> list[dict[str, Any]]:
        try:
            groups = await self.client.xinfo_groups(stream)
        except ResponseError:  # no such key
            return []
        return [{_text(k): v for k, v in g.items()} for g in groups]

    async def refresh_gauges(self) -> None:
        """Set the per-shard lag (undelivered) and pending (unacknowledged) gauges."""
        for stream, shard in self._streams.items():
            groups = await self._groups(stream)
            metrics.PENDING_RECORDS.labels(str(shard)).set(sum(int(g.get("pending") or 0) for g in groups))
            metrics.LAG_RECORDS.labels(str(shard)).set(sum(int(g.get("lag") or 0) for g in groups))

    async def trim(self) -> int:
        """Trim every shard stream below the oldest entry some group still needs
        (its oldest pending entry, or the entry after its last delivered one).
        Streams without a group are left alone. A registered subscriber group more
        than its max_lag behind is reported and no longer waited for
        (:func:`availability.subscribe.holds_trimming`). Also refreshes the gauges."""
        trimmed = 0
        registered = await subscribe.registered_groups(self.client, self.keys)
        for stream in self._streams:
            floor: tuple[int, int] | None = None
            length = int(await self.client.xlen(stream)) if registered else 0
            for group in await self._groups(stream):
                if registered and not subscribe.holds_trimming(group, registered, self._streams[stream], length):
                    continue
                ms, seq = _id_tuple(group["last-delivered-id"])
                low = (ms, seq + 1)
                if int(group.get("pending") or 0):
                    # the group may have acknowledged everything since XINFO said otherwise
                    summary = await self.client.xpending(stream, group["name"])
                    oldest = (summary or {}).get("min")
                    if oldest is not None:
                        low = min(low, _id_tuple(oldest))
                floor = low if floor is None or low < floor else floor
            if floor is not None and floor > (0, 1):
                trimmed += await self.client.xtrim(stream, minid=f"{floor[0]}-{floor[1]}", approximate=False)
        await self.refresh_gauges()
        if trimmed:
            self._log.info("flusher.trim", entries=trimmed)
        return trimmed


@dataclass
class _Written:
    rows: int = 0
    confirmed: int = 0
    transitions: int = 0
    snapshots: int = 0
    pruned_events: int = 0  # events of the batch left out: a prune removed them

    def add(self, other: "_Written") -> None:
        self.rows += other.rows
        self.confirmed += other.confirmed
        self.transitions += other.transitions
        self.snapshots += other.snapshots
