"""Verify: does PostgreSQL hold what the cache holds?

Run after the flushers caught up (``availability flush --once``, or a
flusher lag of zero): every (event, bookmaker) snapshot and every market is
compared, field by field, between Redis and PostgreSQL. An empty list means
they agree::

    mismatches = await verify(cache, database_url)
    for m in mismatches:
        print(m)   # event 1234 at betpawa, market 18@2.5: unavailable_at differs: redis=... postgres=None

Kinds of :class:`Mismatch`: ``snapshot_missing_in_postgres``,
``snapshot_missing_in_redis``, ``last_scraped_at``, ``missing_in_postgres``
(a cached market without a row), ``missing_in_redis`` (a row the cache does
not hold), ``payload`` (odds, name, handicap or groups differ) and
``unavailable_at``, ``captured_at`` and ``last_confirmed_at``.

The two times are compared as far as Redis holds them. Redis keeps them per
snapshot (its meta hash), so there they must be equal. Per market Redis keeps
no times, but it bounds them, and PostgreSQL must stay within the bounds: a
market's ``captured_at`` is set and no newer than its snapshot's (and some
market of the snapshot has exactly the snapshot's); its last confirmation
(derived, revision 0006) is exactly the snapshot's when the last scrape that
listed markets was complete (that scrape listed every market it left
available), otherwise between the last complete scrape and the snapshot's
last confirmation, and before ``unavailable_at`` for an unavailable market.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

import psycopg

from availability.cache import MarketCache
from availability.db.convert import HOME_BOOKMAKER, row_to_market
from availability.db.engine import is_schema_error, libpq_url, schema_not_ready
from availability.model import CachedMarket, CachedSnapshot, decode_market, encode_market, format_ts, key_to_field
from availability.storage import PgSnapshot, load_snapshots

__all__ = ["Mismatch", "verify", "KINDS"]

KINDS = (
    "snapshot_missing_in_postgres",
    "snapshot_missing_in_redis",
    "last_scraped_at",
    "missing_in_postgres",
    "missing_in_redis",
    "payload",
    "unavailable_at",
    "captured_at",
    "last_confirmed_at",
    "undecodable_in_redis",
    "undecodable_in_postgres",
)


@dataclass(frozen=True)
class Mismatch:
    """One difference between Redis and PostgreSQL."""

    kind: str
    event_id: int
    bookmaker: str
    market: str | None = None  # the market field, e.g. "18@2.5"
    redis: Any = None
    postgres: Any = None

    def __str__(self) -> str:
        where = f"event {self.event_id} at {self.bookmaker}"
        if self.market is not None:
            where += f", market {self.market}"
        what = {
            "snapshot_missing_in_postgres": "cached in Redis, no row in PostgreSQL",
            "snapshot_missing_in_redis": "in PostgreSQL, not cached in Redis",
            "missing_in_postgres": "cached in Redis, no row in PostgreSQL",
            "missing_in_redis": "row in PostgreSQL, not cached in Redis",
            "undecodable_in_redis": f"stored entry is not a market ({self.redis})",
            "undecodable_in_postgres": f"row cannot be read as a market ({self.postgres})",
        }.get(self.kind)
        if what is not None:
            return f"{where}: {what}"
        return f"{where}: {self.kind} differs: redis={_show(self.redis)} postgres={_show(self.postgres)}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "event_id": self.event_id,
            "bookmaker": self.bookmaker,
            "market": self.market,
            "redis": _show(self.redis),
            "postgres": _show(self.postgres),
        }


def _show(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, CachedMarket):
        return {"name": value.betpawa_market_name, "outcomes": value.outcomes, "market_groups": value.market_groups,
                "handicap": [value.handicap_type, value.handicap_home, value.handicap_away]}
    if hasattr(value, "tzinfo"):
        return format_ts(value)
    return value


def _compare(redis_snap: CachedSnapshot | None, pg: PgSnapshot | None, event_id: int, bookmaker: str) -> list[Mismatch]:
    if pg is None:
        return [Mismatch("snapshot_missing_in_postgres", event_id, bookmaker)]
    if redis_snap is None:
        return [Mismatch("snapshot_missing_in_redis", event_id, bookmaker)]
    out: list[Mismatch] = []
    pg_last = pg.last_scraped_at
    if pg_last != redis_snap.last_scraped_at:
        out.append(Mismatch("last_scraped_at", event_id, bookmaker, None, redis_snap.last_scraped_at, pg_last))
    cached = {key_to_field(m.key): m for m in redis_snap.markets}
    stored = {}
    times: dict[str, dict[str, Any]] = {}
    for row in pg.rows:
        try:
            market = row_to_market(row)
        except Exception as exc:  # report the row by key, compare the rest
            field = f"{row.get('betpawa_market_id')}@{row.get('line')}"
            out.append(Mismatch("undecodable_in_postgres", event_id, bookmaker, field,
                                postgres=f"{type(exc).__name__}: {exc}"[:300]))
            continue
        stored[key_to_field(market.key)] = market
        times[key_to_field(market.key)] = row
    out += _compare_snapshot_times(redis_snap, pg, event_id, bookmaker)
    for field in sorted(cached.keys() | stored.keys()):
        c, s = cached.get(field), stored.get(field)
        if s is None:
            out.append(Mismatch("missing_in_postgres", event_id, bookmaker, field))
        elif c is None:
            out.append(Mismatch("missing_in_redis", event_id, bookmaker, field))
        else:
            if encode_market(c) != encode_market(s):
                out.append(Mismatch("payload", event_id, bookmaker, field, c, decode_market(encode_market(s))))
            if c.unavailable_at != s.unavailable_at:
                out.append(Mismatch("unavailable_at", event_id, bookmaker, field, c.unavailable_at, s.unavailable_at))
            out += _compare_market_times(redis_snap, c, times[field], event_id, bookmaker, field)
    return out


def _compare_snapshot_times(redis_snap: CachedSnapshot, pg: PgSnapshot, event_id: int,
                            bookmaker: str) -> list[Mismatch]:
    out = []
    for kind in ("captured_at", "last_confirmed_at"):
        r, p = getattr(redis_snap, kind), getattr(pg, kind)
        if r != p:
            out.append(Mismatch(kind, event_id, bookmaker, None, r, p))
    captured = [row["captured_at"] for row in pg.rows if row.get("captured_at") is not None]
    if redis_snap.captured_at is not None and captured and redis_snap.captured_at not in captured:
        # the scrape that last changed odds changed some market's: that market says so
        out.append(Mismatch("captured_at", event_id, bookmaker, None, redis_snap.captured_at,
                            f"no market captured then (newest {format_ts(max(captured))})"))
    return out


def _between(value: datetime | None, low: datetime | None, high: datetime | None) -> bool:
    return value is not None and (low is None or value >= low) and (high is None or value <= high)


def _compare_market_times(redis_snap: CachedSnapshot, market: CachedMarket, row: dict[str, Any], event_id: int,
                          bookmaker: str, field: str) -> list[Mismatch]:
    out = []
    captured = row.get("captured_at")
    if not _between(captured, None, redis_snap.captured_at):
        out.append(Mismatch("captured_at", event_id, bookmaker, field,
                            f"at most {_show(redis_snap.captured_at)} (the snapshot's)", captured))
    confirmed = row.get("last_confirmed_at")
    last, complete = redis_snap.last_confirmed_at, redis_snap.last_complete_at
    if market.unavailable_at is not None:
        ok = confirmed is not None and confirmed < market.unavailable_at and _between(confirmed, None, last)
        expected: Any = f"before {_show(market.unavailable_at)} (unavailable since)"
    elif complete is not None and complete == last:
        ok, expected = confirmed == last, last
    else:
        ok = _between(confirmed, complete, last)
        expected = f"between {_show(complete)} and {_show(last)}"
    if not ok:
        out.append(Mismatch("last_confirmed_at", event_id, bookmaker, field, expected, confirmed))
    return out


async def verify(
    cache: MarketCache,
    database_url: str,
    event_ids: Iterable[int] | None = None,
    *,
    home_bookmaker: str = HOME_BOOKMAKER,
) -> list[Mismatch]:
    """Compare Redis with PostgreSQL for ``event_ids`` (default: every snapshot
    either side knows). Returns the differences, sorted by event and bookmaker."""
    wanted = None if event_ids is None else sorted(set(event_ids))
    try:
        async with await psycopg.AsyncConnection.connect(libpq_url(database_url)) as conn:
            stored = {
                (s.event_id, s.bookmaker): s async for s in load_snapshots(conn, wanted, home_bookmaker=home_bookmaker)
            }
    except psycopg.Error as exc:
        if is_schema_error(exc):
            raise schema_not_ready(exc) from None
        raise
    if wanted is None:
        pairs: set[tuple[int, str]] = set()
        for shard in cache.keys.all_shards():
            pairs.update(await cache.list_snapshots(shard))
        events = sorted({e for e, _ in pairs} | {e for e, _ in stored})
    else:
        events = wanted
    cached: dict[tuple[int, str], CachedSnapshot] = {}
    undecodable: list[tuple[int, str, str, str]] = []
    for i in range(0, len(events), 200):
        cached.update(await cache.get_snapshots(events[i : i + 200], undecodable=undecodable))
    out: list[Mismatch] = [
        Mismatch("undecodable_in_redis", e, b, field, redis=error) for e, b, field, error in undecodable
    ]
    for event_id, bookmaker in sorted(cached.keys() | stored.keys()):
        out += _compare(cached.get((event_id, bookmaker)), stored.get((event_id, bookmaker)), event_id, bookmaker)
    return out
