"""The read-only questions the command line and ``availability demo`` ask PostgreSQL,
and the demo's claim on a database."""

from __future__ import annotations

from typing import Iterable, Sequence

import psycopg
import psycopg.rows


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
