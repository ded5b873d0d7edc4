"""Reading snapshots back from PostgreSQL: what warm-up reloads into Redis and what
``verify`` and the reader compare, with each market's derived last confirmation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, AsyncIterator, Iterable

import psycopg
import psycopg.rows

from availability.db.convert import HOME_BOOKMAKER
from availability.db.models import LAST_CONFIRMED_SQL
from availability.rules import SnapshotState, meta_hash
from availability.storage.columns import MARKET_COLUMNS


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
