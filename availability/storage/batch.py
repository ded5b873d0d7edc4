"""A flusher batch: set-based upserts (one ``INSERT ... SELECT FROM unnest(...) ON
CONFLICT DO UPDATE`` per table, or COPY into a staging table when the batch is
insert-heavy), sent in one pipeline after a check of the warm-up fence. A big
batch whose markets are all new (a first cycle) is first COPYed straight into
its tables, in a savepoint; a key already there refuses it, and the upserts run
(:func:`copy_new_markets`)."""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from typing import Sequence

import psycopg
import psycopg.rows

from availability import metrics, retention
from availability.db import rejections
from availability.logs import get_logger
from availability.rows import BatchRows, MarketRowKey, without_events
from availability.storage.columns import _STATE_COLUMNS, JSON_COLUMNS, MARKET_COLUMNS, SOURCE_COLUMN
from availability.storage.connection import is_transient_pg
from availability.storage.copy_data import encode_copy
from availability.storage.fence import FENCE_CHECK_SQL, Fenced


_log = get_logger("availability.flusher")

_LOCK_CLASS = 0x6176  # "av": our own space of two-key advisory locks

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

# All new (a first cycle): binary COPY straight into the tables, in a savepoint, tried before
# the staged upserts. For a row whose key is not in its table yet the upsert inserts exactly
# the row COPY inserts; a key that is there already (a replayed batch, say) makes the unique
# constraint refuse the COPY, and the upserts run instead. COPY inserts rows in bulk, which
# the upsert's row-by-row conflict check cannot: it takes ~2/3 of the staged path's time.
# The payload is built ahead (storage.copy_data, see prepare), off the event loop.


def _copy_sql(competitor: bool) -> str:
    table = "competitor_market_odds" if competitor else "market_odds"
    names = (["source"] if competitor else []) + [name for name, _ in MARKET_COLUMNS]
    return f"COPY {table} ({', '.join(names)}) FROM STDIN (FORMAT BINARY)"


_COPY_SQL = {competitor: _copy_sql(competitor) for competitor in (False, True)}
_COPY_TYPES = {
    competitor: ([SOURCE_COLUMN[1]] if competitor else [])
    + ["jsonb" if name in JSON_COLUMNS else kind for name, kind in MARKET_COLUMNS]
    for competitor in (False, True)
}


def _lock_id(event_id: int, bookmaker: str) -> int:
    digest = hashlib.blake2b(f"{event_id}:{bookmaker}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


def _columns(rows: Sequence[tuple]) -> list[list]:
    return [list(col) for col in zip(*rows)] if rows else []


def _sort_key(key: MarketRowKey) -> tuple:
    source, event, market, line = key
    return (source or "", event, market, line is not None, line or 0.0)


@dataclass
class _Layout:
    """A batch's market rows laid out for writing (:func:`prepare`)."""

    values: dict[bool, list[tuple]]  # competitor? -> column values sorted by key
    copy: dict[bool, bytes] | None = None  # competitor? -> binary COPY payload (all-new batches)


def _layout(rows: BatchRows) -> _Layout:
    if rows.layout is None:
        rows.layout = _Layout(_market_values(rows))
    return rows.layout


def market_values(rows: BatchRows) -> dict[bool, list[tuple]]:
    """The market rows' column values (``source`` first for competitors), sorted by key;
    computed once per :class:`BatchRows`."""
    return _layout(rows).values


def _copy_payloads(rows: BatchRows) -> dict[bool, bytes]:
    layout = _layout(rows)
    if layout.copy is None:
        layout.copy = {c: encode_copy(v, _COPY_TYPES[c]) for c, v in layout.values.items() if v}
    return layout.copy


def prepare(rows: BatchRows) -> None:
    """Do ahead the Python work :func:`write_batch` would do on the event loop: lay the
    market rows out, and build the COPY payload of an all-new batch. Pure; the flusher
    runs it in a worker thread while the previous batch is written. A value COPY
    cannot hold is left for the write to refuse (and the upserts to decide)."""
    _layout(rows)
    if rows.all_new and len(rows.markets) >= STAGE_MIN_ROWS:
        with contextlib.suppress(Exception):
            _copy_payloads(rows)


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


def statements(rows: BatchRows, *, staged: bool = False, copied: bool = False) -> list[tuple[str, str, list]]:
    """``(label, sql, params)`` of one batch, rows sorted by key (a stable lock order);
    ``staged``: the market rows are in the staging table (:func:`stage_markets`);
    ``copied``: they are written already (:func:`copy_new_markets`)."""
    out: list[tuple[str, str, list]] = []
    locks = sorted({_lock_id(e, b) for e, b in rows.snapshots})
    out.append(("locks", _LOCK_SQL, [_LOCK_CLASS, locks]))

    if copied:
        pass
    elif staged:
        for competitor in (False, True):
            if any((key[0] is not None) == competitor for key in rows.markets):
                label = "competitor_market_odds" if competitor else "market_odds"
                out.append((label, _STAGED_UPSERTS[competitor], []))
    else:
        for competitor, values in market_values(rows).items():
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
            for competitor, values in market_values(rows).items():
                for v in values:
                    ordinal += 1
                    await copy.write_row((ordinal, *v) if competitor else (ordinal, None, *v))


async def copy_new_markets(conn: psycopg.AsyncConnection, rows: BatchRows) -> dict[str, int] | None:
    """COPY the batch's market rows straight into their tables, in key order, in a savepoint
    of the caller's transaction. Returns the rows written per table, or ``None`` when
    PostgreSQL refused them (a key already there) or a value cannot be sent: then nothing
    was written, and the caller upserts. A connection that failed is raised (the caller's
    retries wait it out)."""
    try:
        payloads = _copy_payloads(rows)
    except Exception as exc:  # a value binary COPY cannot carry: the upserts decide
        _log.info("flusher.copy_refused", rows=len(rows.markets), error=f"{type(exc).__name__}: {exc}"[:300])
        return None
    copied: dict[str, int] = {}
    try:
        async with conn.transaction():  # a savepoint: a refusal undoes only the COPY
            for competitor, payload in payloads.items():
                async with conn.cursor() as cur:
                    async with cur.copy(_COPY_SQL[competitor]) as copy:
                        await copy.write(payload)  # the whole binary format: signature to trailer
                copied["competitor_market_odds" if competitor else "market_odds"] = len(market_values(rows)[competitor])
    except psycopg.Error as exc:
        if is_transient_pg(exc) or conn.broken:
            raise
        _log.info("flusher.copy_refused", rows=len(rows.markets), error=f"{type(exc).__name__}: {exc}"[:300])
        return None
    return copied


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
            copied = await copy_new_markets(conn, rows) if staged and rows.all_new else None
            if copied is not None:
                planned = statements(rows, copied=True)
                for label, count in copied.items():
                    written.rows += count
                    metrics.ROWS.labels(label).inc(count)
            elif staged:
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
