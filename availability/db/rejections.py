"""``market_rejections``: which markets did we refuse, when and why (revision 0004).

A scrape quarantines a bad market (``ScrapeOutcome.rejected``, docs/rules.md)
and its change record carries the rejection to the flusher, which upserts one
row per ``(event_id, bookmaker, betpawa_market_id, line, field, reason)`` with
:data:`UPSERT_SQL`:

* ``first_rejected_at`` / ``last_rejected_at``: the oldest and newest scrape
  that rejected it; ``value`` and ``message`` are the newest scrape's;
* ``times``: the distinct rejecting scrapes, each counted once. Only scrapes
  newer than the row's ``last_rejected_at`` add to it, so a record delivered
  twice (or a batch replayed) never double-counts; a record that arrives after
  a newer one was written only moves ``first_rejected_at`` back (it is not
  counted: an undercount, never an overcount).

The table is bounded by the number of distinct bad markets; rows not rejected
again for some days are deleted by :func:`prune_rejections`
(``availability prune-rejections --days N``).

Nothing in a rejection may wedge the flusher: :func:`rejection_rows` never
raises, bounds every text and strips NUL and lone surrogates, which
PostgreSQL's ``text`` cannot store.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from availability.records import ChangeRecord

__all__ = ["UPSERT_SQL", "PRUNE_SQL", "RejectionRow", "rejection_rows", "sort_key", "prune_rejections", "clean_text"]

#: ``(event_id, bookmaker, betpawa_market_id, line, field, reason, value, message, at)``
RejectionRow = tuple[int, str, "str | None", "float | None", "str | None", str, "str | None", "str | None", datetime]

# longest text stored per column
_LIMITS = {"field": 200, "reason": 40, "value": 200, "message": 1000}

UPSERT_SQL = """
WITH s AS (
    SELECT * FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::float8[], %b::text[], %b::text[],
                         %b::text[], %b::text[], %b::timestamptz[])
        AS s(event_id, bookmaker, betpawa_market_id, line, field, reason, value, message, at)
), agg AS (
    SELECT s.event_id, s.bookmaker, s.betpawa_market_id, s.line, s.field, s.reason,
           (array_agg(s.value ORDER BY s.at DESC))[1] AS value,
           (array_agg(s.message ORDER BY s.at DESC))[1] AS message,
           min(s.at) AS first_rejected_at,
           max(s.at) AS last_rejected_at,
           count(DISTINCT s.at) FILTER (WHERE r.last_rejected_at IS NULL OR s.at > r.last_rejected_at) AS times
    FROM s LEFT JOIN market_rejections AS r
      ON r.event_id = s.event_id AND r.bookmaker = s.bookmaker
     AND r.betpawa_market_id IS NOT DISTINCT FROM s.betpawa_market_id
     AND r.line IS NOT DISTINCT FROM s.line
     AND r.field IS NOT DISTINCT FROM s.field
     AND r.reason = s.reason
    GROUP BY s.event_id, s.bookmaker, s.betpawa_market_id, s.line, s.field, s.reason
)
INSERT INTO market_rejections AS t (event_id, bookmaker, betpawa_market_id, line, field, reason, value, message,
                                    first_rejected_at, last_rejected_at, times)
SELECT event_id, bookmaker, betpawa_market_id, line, field, reason, value, message,
       first_rejected_at, last_rejected_at, times
FROM agg
ON CONFLICT ON CONSTRAINT uq_market_rejections_key DO UPDATE SET
    times = t.times + excluded.times,
    value = CASE WHEN excluded.last_rejected_at > t.last_rejected_at THEN excluded.value ELSE t.value END,
    message = CASE WHEN excluded.last_rejected_at > t.last_rejected_at THEN excluded.message ELSE t.message END,
    first_rejected_at = LEAST(t.first_rejected_at, excluded.first_rejected_at),
    last_rejected_at = GREATEST(t.last_rejected_at, excluded.last_rejected_at)
WHERE excluded.last_rejected_at > t.last_rejected_at OR excluded.first_rejected_at < t.first_rejected_at
"""

#: Deletes the rows not rejected again for ``%s`` days.
PRUNE_SQL = "DELETE FROM market_rejections WHERE last_rejected_at < now() - make_interval(secs => %s * 86400)"


def clean_text(value: Any, limit: int) -> str | None:
    """``value`` as text PostgreSQL can store: at most ``limit`` characters, no
    NUL, lone surrogates replaced by ``?``; ``None`` stays ``None``."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    text = text[:limit].encode("utf-8", "replace").decode("utf-8")
    return text.replace("\x00", "")


def rejection_rows(record: ChangeRecord) -> tuple[RejectionRow, ...]:
    """The ``market_rejections`` rows of one record, cleaned; never raises."""
    rows = []
    for r in record.rejected:
        try:
            market_id = None if r.key is None else clean_text(r.key[0], 200)
            line = None if r.key is None else r.key[1]
            rows.append((
                record.event_id,
                record.bookmaker,
                market_id,
                None if line is None else float(line),
                clean_text(r.field, _LIMITS["field"]),
                clean_text(r.reason, _LIMITS["reason"]) or "invalid_value",
                clean_text(r.value, _LIMITS["value"]),
                clean_text(r.message, _LIMITS["message"]),
                record.scraped_at,
            ))
        except Exception:  # diagnostics only: never cost the record its markets
            continue
    return tuple(rows)


def sort_key(row: RejectionRow) -> tuple:
    """A total order over rows (a ``NULL`` id or line first), for a stable statement."""
    event_id, bookmaker, market_id, line, field, reason, _, _, at = row
    return (event_id, bookmaker, market_id is not None, market_id or "", line is not None, line or 0.0,
            field or "", reason, at)


def prune_rejections(database_url: str, days: float) -> int:
    """Delete the ``market_rejections`` rows not rejected again for ``days`` days; returns how many."""
    import psycopg

    from availability.db.engine import libpq_url

    if not days >= 0:
        raise ValueError(f"days: expected a number of days >= 0, got {days!r}")
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        return conn.execute(PRUNE_SQL, (float(days),)).rowcount
