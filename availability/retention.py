"""Retention: events end, and their rows should not stay for ever.

An event's *kickoff* is the latest kickoff any bookmaker's scrape gave for it
(``ScrapeResult.kickoff``, stored in Redis meta ``kickoff_us`` and in
``availability_snapshots.kickoff``). An event is *past retention* when that
kickoff is older than ``now - retention`` (default 14 days,
``AVAILABILITY_RETENTION``). **An event for which no kickoff was ever given is
never past retention**: nothing says it ended, so it is kept (prune it by hand
if needed).

:func:`prune` removes the PostgreSQL rows of events past retention --
``market_odds``, ``competitor_market_odds``, ``market_availability_history``
and ``availability_snapshots`` -- in bounded batches (``batch_size`` events
per transaction), and writes one tombstone per event into
``availability_pruned_events``. It is safe against running flushers:

* a prune transaction takes an exclusive advisory lock per event
  (:data:`EVENT_LOCK_CLASS`), a flusher transaction a shared one per event of
  its batch (:func:`pruned_among`), both in lock-id order;
* a flusher that got its locks first commits first, and the prune's deletes
  (statements that start after its locks are granted) see and remove its rows;
* a flusher that waits for a prune's locks then reads the tombstones and
  leaves every row of those events out (:func:`availability.rows.without_events`), so a late
  record never brings half an event back. Its records are still acknowledged:
  for a pruned event there is nothing left to write.

:func:`prune_redis` drops the event's keys from Redis too (the three hashes of
each bookmaker, its members of the ``snapshots`` and ``alerts`` indexes).
Keys expire by themselves only when the scraper's coordinator was given a
``retention`` (``expires_at = kickoff + retention``); otherwise nothing else
removes them. A scrape of a pruned event arriving later is cached again (it
is just a new event to Redis) but its change record is refused by the
tombstone in PostgreSQL; the next prune removes it from Redis again.

``warm`` loads only events not past retention by default (``--all``: all).
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

import psycopg

from availability.db.engine import is_schema_error, libpq_url, schema_not_ready
from availability.errors import ConfigurationError
from availability.logs import get_logger
from availability.model import from_micros, to_micros

__all__ = [
    "DEFAULT_RETENTION",
    "EVENT_LOCK_CLASS",
    "PruneStats",
    "parse_duration",
    "cutoff",
    "prune",
    "prune_redis",
    "pruned_among",
    "PAST_RETENTION_SQL",
]

log = get_logger("availability.retention")

DEFAULT_RETENTION = "14d"
EVENT_LOCK_CLASS = 0x6177  # "aw": per-event advisory locks shared by prune and the flushers

_DURATION = re.compile(r"\s*(\d+)\s*([dhms])\s*")
_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def parse_duration(value: Any, field_name: str = "retention") -> timedelta:
    """``"14d"``, ``"36h"``, ``"90m"``, ``"30s"`` (or a :class:`timedelta`) as a positive timedelta."""
    if isinstance(value, timedelta):
        delta = value
    else:
        m = _DURATION.fullmatch(value) if isinstance(value, str) else None
        if m is None:
            raise ConfigurationError(
                f"{field_name}: expected a duration like 14d, 36h, 90m or 30s, got {value!r}"
            )
        delta = timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    if delta <= timedelta(0):
        raise ConfigurationError(f"{field_name}: expected a positive duration, got {value!r}")
    return delta


def cutoff(retention: Any, now: datetime | None = None) -> datetime:
    """Events whose kickoff is before this instant are past retention."""
    return (now or datetime.now(timezone.utc)) - parse_duration(retention)


def event_lock_id(event_id: int) -> int:
    digest = hashlib.blake2b(f"event:{event_id}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


def _lock_ids(events: Iterable[int]) -> list[int]:
    return sorted({event_lock_id(e) for e in events})


# ---------------------------------------------------------------- SQL

# Events whose latest known kickoff is before %(cutoff)s (NULL kickoffs are ignored by max:
# an event with no kickoff at all never qualifies).
PAST_RETENTION_SQL = """
SELECT event_id, max(kickoff) FROM availability_snapshots
WHERE kickoff IS NOT NULL {and_where}
GROUP BY event_id HAVING max(kickoff) < %(cutoff)s
ORDER BY event_id {limit}
"""
_LOCK_EXCLUSIVE_SQL = "SELECT pg_advisory_xact_lock(%s, k) FROM unnest(%s::int[]) AS k"
_LOCK_SHARED_SQL = "SELECT pg_advisory_xact_lock_shared(%s, k) FROM unnest(%s::int[]) AS k"
_TOMBSTONES_AMONG_SQL = "SELECT event_id FROM availability_pruned_events WHERE event_id = ANY(%s::bigint[])"
_TOMBSTONE_SQL = """
INSERT INTO availability_pruned_events (event_id, kickoff)
SELECT * FROM unnest(%s::bigint[], %s::timestamptz[])
ON CONFLICT (event_id) DO UPDATE SET kickoff = excluded.kickoff, pruned_at = now()
"""
_DELETES = (
    ("market_odds", "DELETE FROM market_odds WHERE event_id = ANY(%s::bigint[])"),
    ("competitor_market_odds", "DELETE FROM competitor_market_odds WHERE event_id = ANY(%s::bigint[])"),
    ("market_availability_history", "DELETE FROM market_availability_history WHERE event_id = ANY(%s::bigint[])"),
    ("availability_snapshots", "DELETE FROM availability_snapshots WHERE event_id = ANY(%s::bigint[])"),
)


# ---------------------------------------------------------------- the flusher's side


async def pruned_among(conn: psycopg.AsyncConnection, events: Iterable[int]) -> set[int]:
    """Inside a flusher's write transaction: lock ``events`` (shared) against a
    running prune, then return those a prune has already removed."""
    events = sorted(set(events))
    if not events:
        return set()
    await conn.execute(_LOCK_SHARED_SQL, (EVENT_LOCK_CLASS, _lock_ids(events)))
    cur = await conn.execute(_TOMBSTONES_AMONG_SQL, (events,))
    return {int(r[0]) for r in await cur.fetchall()}


# ---------------------------------------------------------------- prune


@dataclass
class PruneStats:
    cutoff: datetime | None = None
    events: int = 0  # events removed from PostgreSQL
    batches: int = 0
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows deleted
    redis_events: int = 0  # events whose keys were removed from Redis
    redis_keys: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "cutoff": self.cutoff.isoformat() if self.cutoff else None,
            "events": self.events,
            "batches": self.batches,
            "rows": dict(self.rows),
            "redis_events": self.redis_events,
            "redis_keys": self.redis_keys,
            "seconds": round(self.seconds, 3),
        }


async def _prune_batch(conn: psycopg.AsyncConnection, before: datetime, batch_size: int, after: int | None,
                       stats: PruneStats) -> list[int]:
    """One transaction: up to ``batch_size`` events past retention, locked, re-checked, removed."""
    and_where = "" if after is None else "AND event_id > %(after)s"
    async with conn.transaction():
        cur = await conn.execute(
            PAST_RETENTION_SQL.format(and_where=and_where, limit="LIMIT %(limit)s"),
            {"cutoff": before, "after": after, "limit": batch_size},
        )
        candidates = [int(r[0]) for r in await cur.fetchall()]
        if not candidates:
            return []
        await conn.execute(_LOCK_EXCLUSIVE_SQL, (EVENT_LOCK_CLASS, _lock_ids(candidates)))
        # under the locks: a flusher may have given an event a later kickoff meanwhile
        cur = await conn.execute(
            PAST_RETENTION_SQL.format(and_where="AND event_id = ANY(%(events)s::bigint[])", limit=""),
            {"cutoff": before, "events": candidates},
        )
        rows = await cur.fetchall()
        events = [int(r[0]) for r in rows]
        if events:
            await conn.execute(_TOMBSTONE_SQL, (events, [r[1] for r in rows]))
            for table, sql in _DELETES:
                cur = await conn.execute(sql, (events,))
                stats.rows[table] = stats.rows.get(table, 0) + max(cur.rowcount, 0)
    stats.events += len(events)
    stats.batches += 1
    log.info("retention.pruned_batch", events=len(events), first=candidates[0], last=candidates[-1])
    return candidates


async def prune(
    database_url: str,
    older_than: Any = DEFAULT_RETENTION,
    *,
    batch_size: int = 500,
    now: datetime | None = None,
    cache: Any = None,
) -> PruneStats:
    """Remove PostgreSQL rows (and, given ``cache``, Redis keys) of events whose
    kickoff is older than ``now - older_than``; ``batch_size`` events per transaction."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigurationError(f"batch_size: expected a positive integer, got {batch_size!r}")
    started = time.perf_counter()
    stats = PruneStats(cutoff=cutoff(older_than, now))
    try:
        async with await psycopg.AsyncConnection.connect(libpq_url(database_url), autocommit=True) as conn:
            after: int | None = None
            while True:
                seen = await _prune_batch(conn, stats.cutoff, batch_size, after, stats)
                if len(seen) < batch_size:
                    break
                after = seen[-1]
    except psycopg.Error as exc:
        if is_schema_error(exc):
            raise schema_not_ready(exc) from None
        raise
    if cache is not None:
        await prune_redis(cache, older_than, now=now, stats=stats)
    stats.seconds = time.perf_counter() - started
    log.info("retention.pruned", **stats.as_dict())
    return stats


async def prune_redis(cache: Any, older_than: Any = DEFAULT_RETENTION, *, now: datetime | None = None,
                      stats: PruneStats | None = None) -> PruneStats:
    """Drop the Redis keys of events past retention, by the kickoff in their meta hashes.

    Per shard: the ``snapshots`` index, each snapshot's ``kickoff_us``; an event
    goes when its latest kickoff is before the cutoff (none known: it stays)."""
    stats = stats or PruneStats(cutoff=cutoff(older_than, now))
    limit = to_micros(stats.cutoff or cutoff(older_than, now))
    keys = cache.keys
    client = cache.client
    for shard in keys.all_shards():
        members = await client.zrange(keys.snapshots(shard), 0, -1)
        if not members:
            continue
        pairs = [keys.parse_snapshot_member(m) for m in members]
        pipe = client.pipeline(transaction=False)
        for e, b in pairs:
            pipe.hget(keys.meta(e, b), "kickoff_us")
        kickoffs = await pipe.execute()
        latest: dict[int, int | None] = {}
        for (e, _), k in zip(pairs, kickoffs):
            if k:
                latest[e] = max(latest.get(e) or 0, int(k))
            else:
                latest.setdefault(e, None)
        gone = {e for e, k in latest.items() if k is not None and k < limit}
        if not gone:
            continue
        doomed = [(e, b) for e, b in pairs if e in gone]
        names = [n for e, b in doomed for n in (keys.markets(e, b), keys.unavailable(e, b), keys.meta(e, b))]
        members_gone = [keys.snapshot_member(e, b) for e, b in doomed]
        pipe = client.pipeline(transaction=False)
        for i in range(0, len(names), 300):
            pipe.delete(*names[i:i + 300])
        pipe.zrem(keys.snapshots(shard), *members_gone)
        pipe.zrem(keys.alerts(shard), *members_gone)
        replies = await pipe.execute()
        stats.redis_keys += sum(int(r) for r in replies[:-2])
        stats.redis_events += len(gone)
    return stats


def kickoff_from_meta(meta: dict) -> datetime | None:
    """The kickoff stored in a snapshot's meta hash, or ``None``."""
    value = meta.get(b"kickoff_us") or meta.get("kickoff_us")
    return from_micros(value) if value else None
