"""Availability for the people who read it: one event across bookmakers, and its history.

:class:`AvailabilityReader` answers two questions about an event:

* :meth:`~AvailabilityReader.compare` -- per market key, for each bookmaker:
  *available* (with its odds), *unavailable since T* (with its last odds), or
  *never offered* (no row at all), plus, per bookmaker, whether the event left
  its listing (``removed_at``). From Redis by default, or from PostgreSQL
  (``source="postgres"``); once the flushers caught up both give equal answers
  (``==`` compares the content, not where it was read from).
* :meth:`~AvailabilityReader.history` -- the transitions recorded in
  ``market_availability_history`` (PostgreSQL only: Redis keeps no history).

::

    async with AvailabilityReader(cache=cache, database="postgresql://...") as reader:
        comparison = await reader.compare(1234)
        state = comparison.market("18", 2.5).state("sportybet")
        state.status, state.unavailable_since, state.outcomes
        for t in await reader.history(1234, bookmaker="sportybet", market="18@2.5"):
            print(t.at, t.transition)

Reads only; writes nothing to either store.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import psycopg

from availability.answers import (
    AVAILABLE,
    DEFAULT_BOOKMAKERS,
    NEVER_OFFERED,
    SOURCES,
    UNAVAILABLE,
    BookmakerStatus,
    EventComparison,
    InvalidQuery,
    MarketComparison,
    MarketFilter,
    MarketState,
    Transition,
    _Side,
    _since,
    _source,
    build_comparison,
    parse_market_filter,
)
from availability.cache import MarketCache, snapshot_from_hashes
from availability.db.convert import HOME_BOOKMAKER, row_to_market
from availability.db.engine import libpq_url
from availability.errors import ConfigurationError
from availability.keys import validate_bookmaker, validate_event_id
from availability.model import MarketKey, normalize_line, normalize_market_id, parse_ts, to_utc
from availability.render import render_comparison, render_history

__all__ = [
    "AVAILABLE",
    "UNAVAILABLE",
    "NEVER_OFFERED",
    "SOURCES",
    "DEFAULT_BOOKMAKERS",
    "InvalidQuery",
    "MarketFilter",
    "MarketState",
    "BookmakerStatus",
    "MarketComparison",
    "EventComparison",
    "Transition",
    "AvailabilityReader",
    "parse_market_filter",
    "build_comparison",
    "render_comparison",
    "render_history",
]

_HISTORY_SQL = """
SELECT event_id, bookmaker, betpawa_market_id, line, transition, at, recorded_at
FROM market_availability_history
WHERE event_id = %(event)s {where}
ORDER BY at, bookmaker COLLATE "C", betpawa_market_id COLLATE "C", line NULLS FIRST, transition
"""


class AvailabilityReader:
    """Reads an event's availability from Redis (``cache``) and/or PostgreSQL (``database``).

    ``cache`` is a :class:`~availability.cache.MarketCache` (needed for
    ``source="redis"``); ``database`` a ``postgresql://`` URL or an open
    ``psycopg.AsyncConnection`` (needed for ``source="postgres"``, history and
    timelines). The reader closes only what it opened itself (the connection
    it made from a URL), never the cache. ``bookmakers`` are shown in every
    comparison, in this order, even when they never listed the event; any
    other bookmaker found follows.
    """

    def __init__(
        self,
        cache: MarketCache | None = None,
        database: str | psycopg.AsyncConnection | None = None,
        *,
        home_bookmaker: str = HOME_BOOKMAKER,
        bookmakers: Iterable[str] | None = None,
    ) -> None:
        if cache is None and database is None:
            raise ConfigurationError("AvailabilityReader: expected a cache, a database (URL or connection), or both")
        self.cache = cache
        self._url: str | None = None
        self._conn: psycopg.AsyncConnection | None = None
        self._owns_conn = False
        if isinstance(database, str):
            self._url = libpq_url(database)
        elif database is not None:
            if not isinstance(database, psycopg.AsyncConnection):
                raise ConfigurationError(
                    f"database: expected a postgresql:// URL or a psycopg.AsyncConnection, got {type(database).__name__}"
                )
            self._conn = database
        self.home_bookmaker = validate_bookmaker(home_bookmaker)
        wanted = DEFAULT_BOOKMAKERS if bookmakers is None else tuple(bookmakers)
        self.bookmakers = tuple(dict.fromkeys(validate_bookmaker(b) for b in (self.home_bookmaker, *wanted)))

    async def close(self) -> None:
        if self._owns_conn and self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None
            self._owns_conn = False

    async def __aenter__(self) -> "AvailabilityReader":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None:
            if self._url is None:
                raise ConfigurationError("database: this reader has no PostgreSQL (pass database=URL or a connection)")
            # autocommit: every read sees the latest committed state, and no
            # transaction is left open between calls
            self._conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
            self._owns_conn = True
        return self._conn

    # ------------------------------------------------------------ compare

    async def compare(self, event_id: int, *, source: str = "redis") -> EventComparison:
        """The event across bookmakers, from Redis (``source="redis"``) or PostgreSQL."""
        validate_event_id(event_id)
        if _source(source) == "redis":
            sides = await self._redis_sides(event_id)
        else:
            sides = {b: s for b, (s, _) in (await self._postgres_sides(event_id)).items()}
        return build_comparison(event_id, self.bookmakers, sides, source)

    async def _redis_sides(self, event_id: int) -> dict[str, _Side]:
        if self.cache is None:
            raise ConfigurationError("source 'redis': this reader has no MarketCache (pass cache=...)")
        cache = self.cache
        found = await cache.bookmakers_of(event_id)
        bookmakers = list(dict.fromkeys([*self.bookmakers, *found]))
        keys = cache.keys
        replies: list[Any] = []
        if cache.is_cluster:
            for b in bookmakers:
                replies += [await cache.client.hgetall(keys.meta(event_id, b)),
                            await cache.client.hgetall(keys.markets(event_id, b)),
                            await cache.client.hgetall(keys.unavailable(event_id, b))]
        else:
            # MULTI/EXEC: every bookmaker's three hashes as of one instant
            pipe = cache.client.pipeline(transaction=True)
            for b in bookmakers:
                pipe.hgetall(keys.meta(event_id, b))
                pipe.hgetall(keys.markets(event_id, b))
                pipe.hgetall(keys.unavailable(event_id, b))
            replies = await pipe.execute()
        sides: dict[str, _Side] = {}
        for i, b in enumerate(bookmakers):
            meta, markets, stamps = replies[3 * i : 3 * i + 3]
            if not meta and not markets:
                continue
            snap = snapshot_from_hashes(event_id, b, meta, markets, stamps)
            removed = meta.get(b"removed_at")
            sides[b] = _Side(snap.last_scraped_at, snap.last_confirmed_at,
                             parse_ts(removed) if removed else None, list(snap.markets))
        return sides

    async def _postgres_sides(self, event_id: int) -> dict[str, tuple[_Side, dict[MarketKey, datetime]]]:
        """Per bookmaker, the side and each market's ``captured_at`` (odds last changed)."""
        from availability.storage import load_snapshots

        conn = await self._connection()
        out: dict[str, tuple[_Side, dict[MarketKey, datetime]]] = {}
        async for snap in load_snapshots(conn, [event_id], home_bookmaker=self.home_bookmaker):
            markets = [row_to_market(r) for r in snap.rows]
            captured = {m.key: r["captured_at"] for m, r in zip(markets, snap.rows)}
            last_scraped = snap.last_scraped_at or max((r["scraped_at"] for r in snap.rows), default=None)
            out[snap.bookmaker] = (
                _Side(last_scraped, snap.last_confirmed_at, snap.removed_at, markets),
                captured,
            )
        return out

    # ------------------------------------------------------------ alerts

    async def events_with_unavailable(
        self,
        bookmaker: str | None = None,
        upcoming_only: bool = True,
        *,
        source: str = "redis",
        now: datetime | None = None,
    ) -> list[Any]:
        """Events with an unavailable market (at ``bookmaker``, or at any), as
        :class:`~availability.alerts.EventAlert`, by kickoff. ``upcoming_only``:
        kickoff after ``now`` (default: the current time) or not known. From an
        index on either side (see :mod:`availability.alerts`), never a scan."""
        from availability.alerts import postgres_alerts, redis_alerts

        if _source(source) == "redis":
            if self.cache is None:
                raise ConfigurationError("source 'redis': this reader has no MarketCache (pass cache=...)")
            return await redis_alerts(self.cache, bookmaker, upcoming_only, now=now)
        return await postgres_alerts(await self._connection(), bookmaker, upcoming_only, now=now,
                                     home_bookmaker=self.home_bookmaker)

    async def count_events_with_unavailable(
        self,
        bookmaker: str | None = None,
        upcoming_only: bool = True,
        *,
        source: str = "redis",
        now: datetime | None = None,
    ) -> int:
        """How many events :meth:`events_with_unavailable` lists: the app's
        "N events with unavailable markets" (also what the demo report can show)."""
        if _source(source) == "redis" and self.cache is not None:
            from availability.alerts import count_events_with_unavailable

            return await count_events_with_unavailable(self.cache, bookmaker, upcoming_only, now=now)
        return len(await self.events_with_unavailable(bookmaker, upcoming_only, source=source, now=now))

    # ------------------------------------------------------------ history

    async def history(
        self,
        event_id: int,
        bookmaker: str | None = None,
        market: Any = None,
        since: datetime | None = None,
    ) -> list[Transition]:
        """Transitions of the event from ``market_availability_history``, oldest first.

        ``bookmaker`` limits them to one bookmaker; ``market`` to a market id
        (``"18"``: every line), one line (``"18@2.5"``, a ``MarketKey``) or the
        market without a line (``"1@_"``); ``since`` (tz-aware) to those at or after it.
        """
        validate_event_id(event_id)
        params: dict[str, Any] = {"event": event_id}
        where = []
        if bookmaker is not None:
            params["bookmaker"] = validate_bookmaker(bookmaker)
            where.append("bookmaker = %(bookmaker)s")
        if market is not None:
            f = parse_market_filter(market)
            params["market_id"] = f.betpawa_market_id
            where.append("betpawa_market_id = %(market_id)s")
            if not f.any_line:
                params["line"] = f.line
                where.append("line IS NOT DISTINCT FROM %(line)s::float8")
        since_utc = _since(since)
        if since_utc is not None:
            params["since"] = since_utc
            where.append("at >= %(since)s")
        sql = _HISTORY_SQL.format(where="".join(f" AND {w}" for w in where))
        conn = await self._connection()
        async with conn.cursor() as cur:
            await cur.execute(sql, params)
            rows = await cur.fetchall()
        out = []
        for event, bm, market_id, line, transition, at, recorded in rows:
            key = MarketKey(normalize_market_id(market_id), normalize_line(line))
            out.append(Transition(event, bm, key, transition, to_utc(at), to_utc(recorded) if recorded else None))
        return out

    # ------------------------------------------------------------ timeline

    async def timeline(self, event_id: int, *, markets: Iterable[Any] = (), gaps_only: bool = False) -> Any:
        """The event's :class:`~availability.timeline.EventTimeline`, from PostgreSQL:
        the transitions, the market rows (current state, odds, ``captured_at``)
        and the snapshots (``removed_at``). ``markets`` (filters as in
        :meth:`history`) and ``gaps_only`` (markets unavailable at some time at
        some bookmaker) choose the rows."""
        from availability.timeline import build_timeline

        validate_event_id(event_id)
        filters = [parse_market_filter(m) for m in markets]
        pg = await self._postgres_sides(event_id)
        comparison = build_comparison(event_id, self.bookmakers, {b: s for b, (s, _) in pg.items()}, "postgres")
        # (captured_at is NULL only while a market's first record is still pending)
        first_seen = {(b, key): at for b, (_, captured) in pg.items() for key, at in captured.items()
                      if at is not None}
        transitions = await self.history(event_id)
        return build_timeline(comparison, transitions, first_seen, markets=filters, gaps_only=gaps_only)
