"""PostgreSQL: every statement the package runs on the availability tables.

The pure layers decide *what* to write (:mod:`availability.rows`); this module
decides *how*: the set-based upserts of a flusher batch, the warm-up fence on
``availability_fences``, and the reads of warm-up and ``verify``. The market
columns are declared once, in :data:`MARKET_COLUMNS`; a test checks them
against :mod:`availability.db.models`.

Per batch, the writes are set-based: one ``INSERT ... SELECT FROM unnest(...)
ON CONFLICT DO UPDATE`` per table, all sent in one pipeline, after a check of
the warm-up fence (:func:`write_batch`). Only markets whose state changed are
written: a complete scrape's confirmation of the rest is one snapshot column,
``last_complete_at``, and a market's last confirmation is derived from it
(:data:`~availability.db.models.LAST_CONFIRMED_SQL`, revision 0006).

The warm-up fence: ``availability warm`` bumps its prefix's generation
(:data:`FENCE_BUMP_SQL`, a row lock) before it reads PostgreSQL. A flusher reads
the generation (:func:`read_generation`) before every read from Redis and, in
the transaction that writes a batch, checks it under a share lock: a batch
read before a warm-up can never commit after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, AsyncIterator, Iterable, Sequence

import psycopg
import psycopg.rows
from psycopg_pool import AsyncConnectionPool

from availability import metrics, retention
from availability.db import rejections
from availability.db.convert import HOME_BOOKMAKER
from availability.db.models import LAST_CONFIRMED_SQL
from availability.db.engine import libpq_url
from availability.logs import get_logger, redact_url
from availability.rows import BatchRows, MarketRowKey, without_events
from availability.rules import SnapshotState, meta_hash

_log = get_logger("availability.flusher")

__all__ = [
    "MARKET_COLUMNS",
    "JSON_COLUMNS",
    "FENCE_ENSURE_SQL",
    "FENCE_READ_SQL",
    "FENCE_CHECK_SQL",
    "FENCE_BUMP_SQL",
    "Database",
    "Fenced",
    "Written",
    "PgSnapshot",
    "statements",
    "write_batch",
    "read_generation",
    "bump_generation",
    "load_snapshots",
    "is_transient_pg",
]

_LOCK_CLASS = 0x6176  # "av": our own space of two-key advisory locks

# SQLSTATEs worth waiting out: the server is unreachable, overloaded, shutting
# down or restarting (classes 08, 53, 57P), a standby that is not writable yet
# after a failover (25006), or a transaction that lost a race and will pass when
# run again (40001 serialization failure, 40P01 deadlock). Anything else the
# statement raises is about the data, and no retry will ever fix it.
_TRANSIENT_CLASSES = ("08", "53", "57P")
_TRANSIENT_STATES = ("25006", "40001", "40P01")

# ---------------------------------------------------------------- connections


class Database:
    """A PostgreSQL URL (one connection, kept and reopened as needed) or a
    ``psycopg_pool.AsyncConnectionPool``, behind one ``connection()``."""

    def __init__(self, database: str | AsyncConnectionPool) -> None:
        self.database = database
        self._conn: psycopg.AsyncConnection | None = None

    @property
    def label(self) -> str:
        """The database URL with its password masked (for logs)."""
        if isinstance(self.database, str):
            return redact_url(self.database)
        return redact_url(getattr(self.database, "conninfo", "") or "postgresql://(pool)")

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """An autocommit connection: from the pool, or our own (reconnected when broken)."""
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

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


# ---------------------------------------------------------------- the market columns

# Every column of ``market_odds`` but ``id``, in the order the flusher sends them,
# with the array type it sends them as (``competitor_market_odds`` adds ``source``).
MARKET_COLUMNS: tuple[tuple[str, str], ...] = (
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
    ("seen_at", "timestamptz"),
    ("scraped_at", "timestamptz"),
    ("unavailable_at", "timestamptz"),
)
SOURCE_COLUMN = ("source", "text")
JSON_COLUMNS = ("outcomes", "market_groups")  # sent as text, stored as jsonb
# the key, and the times that move on their own rules; every other column follows the newest scrape
_NOT_STATE = ("event_id", "betpawa_market_id", "line", "captured_at", "seen_at", "scraped_at")
_STATE_COLUMNS = tuple(name for name, _ in MARKET_COLUMNS if name not in _NOT_STATE)

# ---------------------------------------------------------------- the warm-up fence (revision 0003)

FENCE_ENSURE_SQL = "INSERT INTO availability_fences (prefix) VALUES (%s) ON CONFLICT DO NOTHING"
FENCE_READ_SQL = "SELECT generation FROM availability_fences WHERE prefix = %s"
FENCE_CHECK_SQL = "SELECT generation FROM availability_fences WHERE prefix = %s FOR SHARE"
# creates the row if needed; the row lock waits for flusher commits holding the share lock
FENCE_BUMP_SQL = """
INSERT INTO availability_fences AS f (prefix, generation) VALUES (%s, 1)
ON CONFLICT (prefix) DO UPDATE SET generation = f.generation + 1, updated_at = now()
RETURNING generation
"""


class Fenced(Exception):
    """``availability warm`` reloaded Redis from PostgreSQL after this batch was read:
    committing it now could undo what warm-up loaded, so the batch is not written."""


async def read_generation(conn: psycopg.AsyncConnection, prefix: str, *, ensure: bool) -> int:
    """The prefix's warm-up generation (0 before the first warm-up); ``ensure``
    creates its row first."""
    if ensure:
        await conn.execute(FENCE_ENSURE_SQL, (prefix,))
    cur = await conn.execute(FENCE_READ_SQL, (prefix,))
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def bump_generation(conn: psycopg.AsyncConnection, prefix: str) -> int:
    """Fence out every flusher batch read before now; returns the new generation.
    The caller commits."""
    cur = await conn.execute(FENCE_BUMP_SQL, (prefix,))
    return int((await cur.fetchone())[0])  # type: ignore[index]


# ---------------------------------------------------------------- a flusher batch

def _upsert_sql(competitor: bool) -> str:
    """Upsert of market rows. The state follows the newest scrape; ``captured_at`` and
    ``seen_at`` keep the newer of the row's and the batch's (a NULL, "not known from
    this batch", never moves them), so the commit order of records never matters."""
    table = "competitor_market_odds" if competitor else "market_odds"
    constraint = "uq_competitor_market_odds_key" if competitor else "uq_market_odds_key"
    typed = ([("source", "text")] if competitor else []) + list(MARKET_COLUMNS)
    columns = ", ".join(name for name, _ in typed)
    arrays = ", ".join(f"%b::{kind}[]" for _, kind in typed)
    select = ", ".join(f"s.{name}::jsonb" if name in JSON_COLUMNS else f"s.{name}" for name, _ in typed)
    newer = "excluded.scraped_at > t.scraped_at"
    sets = [f"{c} = CASE WHEN {newer} THEN excluded.{c} ELSE t.{c} END" for c in _STATE_COLUMNS]
    sets.append("scraped_at = GREATEST(t.scraped_at, excluded.scraped_at)")
    changed = [newer]
    for c in ("captured_at", "seen_at"):
        sets.append(f"{c} = GREATEST(t.{c}, excluded.{c})")
        changed.append(f"GREATEST(t.{c}, excluded.{c}) IS DISTINCT FROM t.{c}")
    return (
        f"INSERT INTO {table} AS t ({columns})\n"
        f"SELECT {select} FROM unnest({arrays}) AS s({columns})\n"
        f"ON CONFLICT ON CONSTRAINT {constraint} DO UPDATE SET\n    "
        + ",\n    ".join(sets)
        + "\nWHERE "
        + " OR ".join(changed)
    )


_HISTORY_SQL = """
INSERT INTO market_availability_history (event_id, bookmaker, betpawa_market_id, line, transition, at)
SELECT * FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::float8[], %b::text[], %b::timestamptz[])
ON CONFLICT DO NOTHING
"""

# removed_at: the first removal after the newest scrape that saw markets (apply_scrape.lua
# keeps the first one with HSETNX and clears it when a scrape lists markets again).
_SNAPSHOT_NEW = {
    "last_scraped_at": "GREATEST(t.last_scraped_at, excluded.last_scraped_at)",
    "captured_at": "GREATEST(t.captured_at, excluded.captured_at)",
    "last_confirmed_at": "GREATEST(t.last_confirmed_at, excluded.last_confirmed_at)",
    "last_complete_at": "GREATEST(t.last_complete_at, excluded.last_complete_at)",
    "removed_at": (
        "(SELECT min(r) FROM (VALUES (t.removed_at), (excluded.removed_at)) AS v(r)"
        " WHERE r > COALESCE(GREATEST(t.last_confirmed_at, excluded.last_confirmed_at), '-infinity'))"
    ),
    # the kickoff of the newest scrape that gave one (revision 0005)
    "kickoff": (
        "CASE WHEN excluded.kickoff IS NOT NULL AND excluded.last_scraped_at >= t.last_scraped_at"
        " THEN excluded.kickoff ELSE COALESCE(t.kickoff, excluded.kickoff) END"
    ),
}
# A replay changes nothing, so it writes nothing; RETURNING tells which confirmations moved.
_SNAPSHOT_SQL = f"""
INSERT INTO availability_snapshots AS t
    (event_id, bookmaker, last_scraped_at, captured_at, last_confirmed_at, last_complete_at, removed_at, kickoff)
SELECT * FROM unnest(%b::bigint[], %b::text[], %b::timestamptz[], %b::timestamptz[], %b::timestamptz[],
                     %b::timestamptz[], %b::timestamptz[], %b::timestamptz[])
ON CONFLICT (event_id, bookmaker) DO UPDATE SET
    {", ".join(f"{c} = {e}" for c, e in _SNAPSHOT_NEW.items())}, updated_at = now()
WHERE ROW({", ".join(f"t.{c}" for c in _SNAPSHOT_NEW)}) IS DISTINCT FROM ROW({", ".join(_SNAPSHOT_NEW.values())})
RETURNING event_id, bookmaker, last_complete_at
"""


# Two flushers writing records of one snapshot serialise on it, in a fixed order:
# no deadlocks between their row locks.
_LOCK_SQL = "SELECT pg_advisory_xact_lock(%s, k) FROM unnest(%b::int[]) AS k"

_UPSERTS = {competitor: _upsert_sql(competitor) for competitor in (False, True)}

# The insert-heavy case (a first cycle: every market new): binary COPY of the batch's market
# rows into a temporary table, then the same upserts from it. psycopg dumps COPY rows in C,
# while the arrays of unnest(...) are built value by value in Python.
STAGE_MIN_ROWS = 2_000  # market rows in a batch from which COPY pays for its extra round trips
_STAGE = "availability_market_stage"
_STAGE_COLUMNS = (("ord", "bigint"), SOURCE_COLUMN, *MARKET_COLUMNS)
_STAGE_CREATE = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} ("
    + ", ".join(f"{name} {kind}" for name, kind in _STAGE_COLUMNS)
    + ") ON COMMIT DELETE ROWS"
)
_STAGE_COPY = f"COPY {_STAGE} ({', '.join(name for name, _ in _STAGE_COLUMNS)}) FROM STDIN (FORMAT BINARY)"


def _staged_upsert_sql(competitor: bool) -> str:
    """:func:`_upsert_sql` reading the staged rows (in key order: the lock order) instead of arrays."""
    unnest = _upsert_sql(competitor)
    head, _, rest = unnest.partition(" FROM unnest(")
    _, _, conflict = rest.partition("\n")
    source = "s.source IS NOT NULL" if competitor else "s.source IS NULL"
    return f"{head} FROM {_STAGE} AS s WHERE {source} ORDER BY s.ord\n{conflict}"


_STAGED_UPSERTS = {competitor: _staged_upsert_sql(competitor) for competitor in (False, True)}


def _lock_id(event_id: int, bookmaker: str) -> int:
    digest = hashlib.blake2b(f"{event_id}:{bookmaker}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


def _columns(rows: Sequence[tuple]) -> list[list]:
    return [list(col) for col in zip(*rows)] if rows else []


def _sort_key(key: MarketRowKey) -> tuple:
    source, event, market, line = key
    return (source or "", event, market, line is not None, line or 0.0)


def _market_values(rows: BatchRows) -> dict[bool, list[tuple]]:
    """The market rows' column values (``source`` first for competitors), sorted by key."""
    groups: dict[bool, list[tuple]] = {False: [], True: []}
    for key in sorted(rows.markets, key=_sort_key):
        r = rows.markets[key]
        values = (r.event_id, r.betpawa_market_id, r.line, *r.values, r.captured, r.seen, r.scraped_at, r.unavailable_at)
        if r.source is not None:
            values = (r.source, *values)
        groups[r.source is not None].append(values)
    return groups


def statements(rows: BatchRows, *, staged: bool = False) -> list[tuple[str, str, list]]:
    """``(label, sql, params)`` of one batch, rows sorted by key (a stable lock order);
    ``staged``: the market rows are in the staging table (:func:`stage_markets`)."""
    out: list[tuple[str, str, list]] = []
    locks = sorted({_lock_id(e, b) for e, b in rows.snapshots})
    out.append(("locks", _LOCK_SQL, [_LOCK_CLASS, locks]))

    if staged:
        for competitor in (False, True):
            if any((key[0] is not None) == competitor for key in rows.markets):
                label = "competitor_market_odds" if competitor else "market_odds"
                out.append((label, _STAGED_UPSERTS[competitor], []))
    else:
        for competitor, values in _market_values(rows).items():
            if values:
                label = "competitor_market_odds" if competitor else "market_odds"
                out.append((label, _UPSERTS[competitor], _columns(values)))
    if rows.history:
        history = sorted(rows.history, key=lambda h: (h[0], h[1], h[2], h[3] is not None, h[3] or 0.0, h[5], h[4]))
        out.append(("history", _HISTORY_SQL, _columns(history)))
    snaps = [
        (s.event_id, s.bookmaker, s.last_scraped_at, s.captured_at, s.last_confirmed_at, s.last_complete_at,
         s.removed_at, s.kickoff)
        for s in (rows.snapshots[k] for k in rows.snapshot_keys)
    ]
    if snaps:
        out.append(("availability_snapshots", _SNAPSHOT_SQL, _columns(snaps)))
    if rows.rejections:
        out.append(("market_rejections", rejections.UPSERT_SQL,
                    _columns(sorted(rows.rejections, key=rejections.sort_key))))
    return out


@dataclass
class Written:
    """What one batch's statements changed (replays change nothing)."""

    rows: int = 0
    confirmed: int = 0  # snapshots whose complete-scrape confirmation (last_complete_at) moved
    transitions: int = 0
    snapshots: int = 0
    rejections: int = 0  # market_rejections rows inserted or advanced
    pruned_events: int = 0  # events of the batch left out: a prune removed them

    def add(self, other: "Written") -> None:
        self.pruned_events += other.pruned_events
        self.rows += other.rows
        self.confirmed += other.confirmed
        self.transitions += other.transitions
        self.snapshots += other.snapshots
        self.rejections += other.rejections


async def stage_markets(conn: psycopg.AsyncConnection, rows: BatchRows) -> None:
    """COPY the batch's market rows into the session's staging table (emptied at commit)."""
    await conn.execute(_STAGE_CREATE)
    async with conn.cursor() as cur:
        async with cur.copy(_STAGE_COPY) as copy:
            copy.set_types([kind for _, kind in _STAGE_COLUMNS])
            ordinal = 0
            for competitor, values in _market_values(rows).items():
                for v in values:
                    ordinal += 1
                    await copy.write_row((ordinal, *v) if competitor else (ordinal, None, *v))


async def write_batch(
    conn: psycopg.AsyncConnection, rows: BatchRows, prefix: str, generation: int, *, pipeline: bool = True
) -> Written:
    """Write one batch in one transaction, unless a warm-up bumped the fence past
    ``generation`` since the batch was read (then raise :class:`Fenced`)."""
    staged = len(rows.markets) >= STAGE_MIN_ROWS
    planned = statements(rows, staged=staged)
    written = Written()
    cursors: list[tuple[str, psycopg.AsyncCursor]] = []
    pipe = conn.pipeline() if pipeline and not staged else contextlib.nullcontext()  # no COPY in a pipeline
    async with pipe:
        async with conn.transaction():
            # The share lock makes warm-up's bump wait for this commit (or this
            # commit see the bump): never both "read before" and "committed after".
            checked = await conn.execute(FENCE_CHECK_SQL, (prefix,))
            current = await checked.fetchone()
            if current is None or current[0] != generation:
                raise Fenced(
                    f"warm-up generation is {current[0] if current else None}, the batch was read "
                    f"under {generation}"
                )
            # events `availability prune` removed stay removed (see availability.retention)
            pruned = await retention.pruned_among(conn, (e for e, _ in rows.snapshots))
            if pruned:
                rows = without_events(rows, pruned)
                planned = statements(rows, staged=staged)
                written.pruned_events += len(pruned)
                _log.info("flusher.pruned_events_skipped", events=sorted(pruned))
            if staged:
                await stage_markets(conn, rows)
            for label, sql, params in planned:
                cur = conn.cursor()
                await cur.execute(sql, params)
                cursors.append((label, cur))
    for label, cur in cursors:
        count = max(cur.rowcount, 0)
        if label in ("market_odds", "competitor_market_odds"):
            written.rows += count
            metrics.ROWS.labels(label).inc(count)
        elif label == "history":
            written.transitions += count
        elif label == "availability_snapshots":
            written.snapshots += count
            metrics.ROWS.labels(label).inc(count)
            for event_id, bookmaker, complete in await cur.fetchall():  # a confirmation that moved
                written.confirmed += complete is not None and complete == rows.snapshots[(event_id, bookmaker)].last_complete_at
        elif label == "market_rejections":
            written.rejections += count
    metrics.CONFIRMED.inc(written.confirmed)
    metrics.TRANSITIONS.inc(written.transitions)
    metrics.REJECTIONS.inc(written.rejections)
    return written


# ---------------------------------------------------------------- reading snapshots back (warm-up, verify)

@dataclass
class PgSnapshot:
    """One (event, bookmaker) as PostgreSQL holds it."""

    event_id: int
    bookmaker: str
    last_scraped_at: datetime | None
    captured_at: datetime | None
    last_confirmed_at: datetime | None
    removed_at: datetime | None
    rows: list[dict[str, Any]]  # market rows; ``last_confirmed_at`` derived (LAST_CONFIRMED_SQL)
    last_complete_at: datetime | None = None
    kickoff: datetime | None = None

    def meta(self) -> dict[str, str]:
        """The meta hash as ``apply_scrape.lua`` writes it; times missing from the
        snapshot row (written before it existed) are taken from the market rows."""
        times = SnapshotState(
            last_scraped_at=self.last_scraped_at or max(r["scraped_at"] for r in self.rows),
            captured_at=self.captured_at or max((r["captured_at"] for r in self.rows if r["captured_at"]),
                                                default=None),
            last_confirmed_at=self.last_confirmed_at or max(
                (r["last_confirmed_at"] for r in self.rows if r["last_confirmed_at"]), default=None),
            removed_at=self.removed_at,
            # the next stamp's change record says the market was last seen no earlier
            last_complete_at=self.last_complete_at,
        )
        unavailable = sum(1 for r in self.rows if r["unavailable_at"] is not None)
        return meta_hash(
            self.event_id, self.bookmaker, times, markets=len(self.rows), unavailable=unavailable, kickoff=self.kickoff
        )


_SNAPSHOTS_SQL = """
SELECT event_id, bookmaker, last_scraped_at, captured_at, last_confirmed_at, last_complete_at, removed_at, kickoff
FROM availability_snapshots {where}
"""
# every market column after event_id but seen_at, then the market's last confirmation, derived
_READ_COLUMNS = ", ".join(f"m.{name}" for name, _ in MARKET_COLUMNS[1:] if name != "seen_at")
_MARKETS_SQL = f"""
SELECT * FROM (
    SELECT m.event_id, %(home)s::text AS bookmaker, {_READ_COLUMNS}, {LAST_CONFIRMED_SQL} AS last_confirmed_at
    FROM market_odds m
    LEFT JOIN availability_snapshots s ON s.event_id = m.event_id AND s.bookmaker = %(home)s {{where}}
    UNION ALL
    SELECT m.event_id, m.source, {_READ_COLUMNS}, {LAST_CONFIRMED_SQL}
    FROM competitor_market_odds m
    LEFT JOIN availability_snapshots s ON s.event_id = m.event_id AND s.bookmaker = m.source {{where}}
) AS x ORDER BY event_id, bookmaker
"""


async def load_snapshots(
    conn: psycopg.AsyncConnection,
    event_ids: Iterable[int] | None = None,
    *,
    home_bookmaker: str = HOME_BOOKMAKER,
    past_retention: datetime | None = None,
) -> AsyncIterator[PgSnapshot]:
    """Every snapshot PostgreSQL holds (or those of ``event_ids``), in
    ``(event_id, bookmaker)`` order, each with its market rows.

    ``past_retention``: leave out events whose kickoff is before it (see
    :mod:`availability.retention`; events without a kickoff are kept)."""
    params: dict[str, Any] = {"home": home_bookmaker}
    conditions = []
    if event_ids is not None:
        params["events"] = sorted(set(event_ids))
        conditions.append("event_id = ANY(%(events)s::bigint[])")
    if past_retention is not None:
        params["cutoff"] = past_retention
        conditions.append(
            "event_id NOT IN (SELECT event_id FROM availability_snapshots WHERE kickoff IS NOT NULL"
            " GROUP BY event_id HAVING max(kickoff) < %(cutoff)s)"
        )
    where = ("WHERE " + " AND ".join(conditions)) if conditions else ""
    async with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        await cur.execute(_SNAPSHOTS_SQL.format(where=where), params)
        where = where.replace("event_id", "m.event_id", 1)
        heads = {(r["event_id"], r["bookmaker"]): r for r in await cur.fetchall()}

    def snapshot(key: tuple[int, str], rows: list[dict[str, Any]]) -> PgSnapshot:
        head = heads.pop(key, None) or {}
        return PgSnapshot(key[0], key[1], head.get("last_scraped_at"), head.get("captured_at"),
                          head.get("last_confirmed_at"), head.get("removed_at"), rows, head.get("last_complete_at"),
                          head.get("kickoff"))

    # a server-side cursor: the market tables are streamed, not loaded whole
    async with conn.transaction():
        async with conn.cursor(name="availability_warm", row_factory=psycopg.rows.dict_row) as cur:
            await cur.execute(_MARKETS_SQL.format(where=where), params)
            current: tuple[int, str] | None = None
            rows: list[dict[str, Any]] = []
            async for row in cur:
                key = (row["event_id"], row["bookmaker"])
                if key != current:
                    if current is not None:
                        yield snapshot(current, rows)
                    current, rows = key, []
                rows.append(row)
            if current is not None:
                yield snapshot(current, rows)
    for key in sorted(heads):  # snapshots without market rows
        yield snapshot(key, [])


# ---------------------------------------------------------------- errors


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


# ================================================================ operator and demo reads
# Kept at the end of the module, apart from the flusher's and warm-up's statements
# above: the read-only questions the command line and ``availability demo`` ask
# PostgreSQL, and the demo's claim on a database.

#: The tables of the availability schema, in the order reports list them.
TABLES = ("market_odds", "competitor_market_odds", "market_availability_history", "availability_snapshots")

_STORED_EVENTS_SQL = "SELECT DISTINCT event_id FROM availability_snapshots WHERE event_id = ANY(%s)"
_SNAPSHOTS_BETWEEN_SQL = "SELECT count(*) FROM availability_snapshots WHERE event_id BETWEEN %s AND %s"
_TRANSITION_COUNTS_SQL = "SELECT transition, count(*) FROM market_availability_history GROUP BY transition ORDER BY 1"
_BUSIEST_EVENT_SQL = (
    "SELECT event_id FROM market_availability_history WHERE event_id = ANY(%s) "
    "GROUP BY event_id ORDER BY count(*) DESC, event_id LIMIT 1"
)
_TRY_SESSION_LOCK_SQL = "SELECT pg_try_advisory_lock(%s)"


async def stored_events(conn: psycopg.AsyncConnection, events: Iterable[int]) -> set[int]:
    """Those of ``events`` that have a snapshot row (``availability verify --event``)."""
    cur = await conn.execute(_STORED_EVENTS_SQL, (list(events),))
    return {int(row[0]) for row in await cur.fetchall()}


async def count_snapshots_between(conn: psycopg.AsyncConnection, first: int, last: int) -> int:
    """Snapshot rows of the events ``first``..``last`` (a demo refuses a database holding its events)."""
    cur = await conn.execute(_SNAPSHOTS_BETWEEN_SQL, (first, last))
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def table_counts(conn: psycopg.AsyncConnection) -> dict[str, int]:
    """Rows per table of :data:`TABLES`, and history rows per transition
    (``history_became_unavailable``, ``history_became_available``)."""
    out: dict[str, int] = {}
    for table in TABLES:
        cur = await conn.execute(f"SELECT count(*) FROM {table}")  # noqa: S608 - fixed names
        row = await cur.fetchone()
        out[table] = int(row[0]) if row else 0
    cur = await conn.execute(_TRANSITION_COUNTS_SQL)
    for transition, n in await cur.fetchall():
        out[f"history_{transition}"] = int(n)
    return out


async def busiest_event(conn: psycopg.AsyncConnection, events: Sequence[int]) -> int | None:
    """Of ``events``, the one with the most availability transitions (the lowest id
    on a tie); ``None`` when none has any."""
    cur = await conn.execute(_BUSIEST_EVENT_SQL, (list(events),))
    row = await cur.fetchone()
    return int(row[0]) if row else None


async def try_session_lock(conn: psycopg.AsyncConnection, key: int) -> bool:
    """Take the session advisory lock ``key`` if free: held until ``conn`` closes."""
    cur = await conn.execute(_TRY_SESSION_LOCK_SQL, (key,))
    row = await cur.fetchone()
    return bool(row and row[0])
