"""Alerts: which events have unavailable markets, without looking at every event.

The app shows "N events with unavailable markets" and filters its event list
by them. Both answers come from an index, never from a scan of every event:

* **Redis** (the default): ``{av:N}:alerts``, one sorted set per shard, kept
  by ``apply_scrape.lua`` in the same atomic step that stamps or clears a
  market (and by warm-up): member ``<event_id>:<bookmaker>`` while that
  snapshot has at least one unavailable market, score its kickoff in
  microseconds (``inf`` when not known). "Upcoming" is one
  ``ZRANGEBYSCORE (now +inf`` per shard, pipelined.
* **PostgreSQL** (``source="postgres"``): the partial indexes
  ``ix_market_odds_unavailable`` and ``ix_competitor_market_odds_unavailable``
  (``WHERE unavailable_at IS NOT NULL``), joined to
  ``availability_snapshots.kickoff``.

``scripts/bench_alerts.py`` measures both at 20,000 events against a full
scan; the figures and the choice are in the README.

Semantics, the same on both sides: a snapshot (event, bookmaker) *alerts*
while it has an unavailable market; ``upcoming_only`` keeps those whose
kickoff is after ``now`` or not known (an event without a kickoff is never
taken for over); an event is listed with the bookmakers that alert and the
latest of their kickoffs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg

from availability.keys import validate_bookmaker
from availability.model import format_ts, from_micros, to_micros, to_utc

__all__ = ["EventAlert", "redis_alerts", "postgres_alerts", "count_events_with_unavailable", "render_alerts",
           "ALERTS_SQL"]


@dataclass(frozen=True, order=True)
class EventAlert:
    """An event with unavailable markets at ``bookmakers`` (sorted); ``kickoff``
    is the latest kickoff they gave, ``None`` when none did."""

    event_id: int
    bookmakers: tuple[str, ...]
    kickoff: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "kickoff": format_ts(self.kickoff) if self.kickoff else None,
            "bookmakers": list(self.bookmakers),
        }


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _now(now: datetime | None) -> datetime:
    return datetime.now(timezone.utc) if now is None else to_utc(now, "now")


def _group(found: list[tuple[int, str, datetime | None]]) -> list[EventAlert]:
    """(event, bookmaker, kickoff) triples -> alerts sorted by kickoff (unknown last), then event."""
    by_event: dict[int, tuple[set[str], datetime | None]] = {}
    for event_id, bookmaker, kickoff in found:
        bms, latest = by_event.get(event_id, (set(), None))
        bms.add(bookmaker)
        if kickoff is not None and (latest is None or kickoff > latest):
            latest = kickoff
        by_event[event_id] = (bms, latest)
    alerts = [EventAlert(e, tuple(sorted(bms)), k) for e, (bms, k) in by_event.items()]
    far = datetime.max.replace(tzinfo=timezone.utc)
    return sorted(alerts, key=lambda a: (a.kickoff or far, a.event_id))


async def redis_alerts(
    cache: Any,
    bookmaker: str | None = None,
    upcoming_only: bool = True,
    *,
    now: datetime | None = None,
) -> list[EventAlert]:
    """Events with unavailable markets, from the shards' ``alerts`` sorted sets."""
    if bookmaker is not None:
        validate_bookmaker(bookmaker)
    keys = cache.keys
    client = cache.client
    low = f"({to_micros(_now(now))}" if upcoming_only else "-inf"
    shards = list(keys.all_shards())
    if client.__class__.__name__ == "RedisCluster":
        replies = [await client.zrangebyscore(keys.alerts(s), low, "+inf", withscores=True) for s in shards]
    else:
        pipe = client.pipeline(transaction=False)
        for s in shards:
            pipe.zrangebyscore(keys.alerts(s), low, "+inf", withscores=True)
        replies = await pipe.execute()
    wanted = bookmaker.encode() if bookmaker is not None else None
    if upcoming_only:  # the common case: group the raw members, one datetime per event
        by_event: dict[int, tuple[list[str], float]] = {}
        for members in replies:
            for member, score in members:
                event, _, bm = member.partition(b":")
                if wanted is not None and bm != wanted:
                    continue
                e = int(event)
                entry = by_event.get(e)
                if entry is None:
                    by_event[e] = ([bm.decode()], score)
                else:
                    entry[0].append(bm.decode())
                    if not math.isinf(score) and (math.isinf(entry[1]) or score > entry[1]):
                        by_event[e] = (entry[0], score)
        far = datetime.max.replace(tzinfo=timezone.utc)
        alerts = [EventAlert(e, tuple(sorted(bms)), None if math.isinf(k) else _EPOCH + timedelta(microseconds=k))
                  for e, (bms, k) in by_event.items()]
        return sorted(alerts, key=lambda a: (a.kickoff or far, a.event_id))
    found: list[tuple[int, str, datetime | None]] = []
    for members in replies:
        for member, score in members:
            event_id, bm = keys.parse_snapshot_member(member)
            if bookmaker is None or bm == bookmaker:
                found.append((event_id, bm, None if math.isinf(score) else from_micros(int(score))))
    if found:
        found = await _alive(cache, found)
    return _group(found)


async def _alive(cache: Any, found: list[tuple[int, str, datetime | None]]) -> list[tuple[int, str, datetime | None]]:
    """Leave out (and unindex) members whose keys expired (``expires_at``): the script
    never ran for them. Only the past can hold such members (they expire after
    kickoff), so the upcoming query never needs this."""
    keys = cache.keys
    client = cache.client
    if client.__class__.__name__ == "RedisCluster":
        alive = [await client.exists(keys.meta(e, b)) for e, b, _ in found]
    else:
        pipe = client.pipeline(transaction=False)
        for e, b, _ in found:
            pipe.exists(keys.meta(e, b))
        alive = await pipe.execute()
    for (e, b, _), a in zip(found, alive):
        if not a:
            await client.zrem(keys.alerts(keys.shard_of(e)), keys.snapshot_member(e, b))
    return [f for f, a in zip(found, alive) if a]


async def count_events_with_unavailable(
    cache: Any, bookmaker: str | None = None, upcoming_only: bool = True, *, now: datetime | None = None
) -> int:
    """The app's "N events with unavailable markets", from Redis: what a report
    (the demo's) can call with the :class:`~availability.cache.MarketCache` it has.

    Upcoming only, it counts the index members without their scores (no
    per-event objects); otherwise it is ``len(redis_alerts(...))``."""
    if not upcoming_only:
        return len(await redis_alerts(cache, bookmaker, upcoming_only, now=now))
    if bookmaker is not None:
        validate_bookmaker(bookmaker)
    keys, client = cache.keys, cache.client
    low = f"({to_micros(_now(now))}"
    if client.__class__.__name__ == "RedisCluster":
        replies = [await client.zrangebyscore(keys.alerts(s), low, "+inf") for s in keys.all_shards()]
    else:
        pipe = client.pipeline(transaction=False)
        for s in keys.all_shards():
            pipe.zrangebyscore(keys.alerts(s), low, "+inf")
        replies = await pipe.execute()
    suffix = b":" + bookmaker.encode() if bookmaker is not None else None
    return len({m.partition(b":")[0] for members in replies for m in members
                if suffix is None or m.endswith(suffix)})


# The partial indexes give the (event, bookmaker) pairs with an unavailable market;
# only those are joined to their snapshot for the kickoff.
ALERTS_SQL = """
SELECT u.event_id, u.bookmaker, s.kickoff FROM (
    {parts}
) AS u
LEFT JOIN availability_snapshots AS s ON s.event_id = u.event_id AND s.bookmaker = u.bookmaker
WHERE %(all)s OR s.kickoff IS NULL OR s.kickoff > %(now)s
"""
_HOME_PART = "SELECT DISTINCT event_id, %(home)s::text AS bookmaker FROM market_odds WHERE unavailable_at IS NOT NULL"
_COMPETITOR_PART = (
    "SELECT DISTINCT event_id, source AS bookmaker FROM competitor_market_odds "
    "WHERE unavailable_at IS NOT NULL{source}"
)


def alerts_sql(bookmaker: str | None, home_bookmaker: str) -> str:
    """The query for one bookmaker (one partial index) or all of them (both)."""
    if bookmaker is None:
        parts = f"{_HOME_PART}\n    UNION ALL\n    {_COMPETITOR_PART.format(source='')}"
    elif bookmaker == home_bookmaker:
        parts = _HOME_PART
    else:
        parts = _COMPETITOR_PART.format(source=" AND source = %(bookmaker)s")
    return ALERTS_SQL.format(parts=parts)


async def postgres_alerts(
    conn: psycopg.AsyncConnection,
    bookmaker: str | None = None,
    upcoming_only: bool = True,
    *,
    now: datetime | None = None,
    home_bookmaker: str,
) -> list[EventAlert]:
    """Events with unavailable markets, from PostgreSQL's partial indexes."""
    if bookmaker is not None:
        validate_bookmaker(bookmaker)
    params = {"home": home_bookmaker, "bookmaker": bookmaker, "all": not upcoming_only, "now": _now(now)}
    async with conn.cursor() as cur:
        await cur.execute(alerts_sql(bookmaker, home_bookmaker), params)
        rows = await cur.fetchall()
    return _group([(int(e), b, to_utc(k) if k is not None else None) for e, b, k in rows])


def render_alerts(alerts: list[EventAlert], console: Any, *, source: str, upcoming_only: bool) -> None:
    """The count line the app shows, then one line per event."""
    from rich.table import Table

    scope = "upcoming " if upcoming_only else ""
    console.print(f"{len(alerts)} {scope}events with unavailable markets (from {source})")
    if not alerts:
        return
    table = Table(box=None, pad_edge=False, show_edge=False)
    for name in ("event", "kickoff (UTC)", "bookmakers"):
        table.add_column(name)
    for a in alerts:
        table.add_row(str(a.event_id), a.kickoff.strftime("%Y-%m-%d %H:%M") if a.kickoff else "not known",
                      " ".join(a.bookmakers))
    console.print(table)
