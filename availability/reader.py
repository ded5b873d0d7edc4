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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from availability.cache import MarketCache, snapshot_from_hashes
from availability.db.convert import HOME_BOOKMAKER, row_to_market
from availability.db.engine import libpq_url
from availability.errors import AvailabilityError, ConfigurationError
from availability.keys import validate_bookmaker, validate_event_id
from availability.model import (
    CachedMarket,
    MarketKey,
    field_to_key,
    format_ts,
    key_sort_order,
    key_to_field,
    market_key,
    normalize_line,
    normalize_market_id,
    parse_ts,
    to_utc,
)

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

AVAILABLE = "available"
UNAVAILABLE = "unavailable"
NEVER_OFFERED = "never_offered"
SOURCES = ("redis", "postgres")
# The bookmakers a comparison always shows, even those that never listed the event.
DEFAULT_BOOKMAKERS: tuple[str, ...] = (HOME_BOOKMAKER, "sportybet", "bet9ja")


class InvalidQuery(AvailabilityError, ValueError):
    """A reader was asked something it cannot answer (bad source, market, time)."""


def _ts(value: datetime | None) -> str | None:
    return format_ts(value) if value is not None else None


# ---------------------------------------------------------------- the answers


@dataclass(frozen=True)
class MarketState:
    """One market at one bookmaker.

    ``status`` is ``available``, ``unavailable`` (``unavailable_since`` is when
    it was first seen missing; ``outcomes`` are its last odds) or
    ``never_offered`` (the bookmaker never listed it: no row, no odds).
    """

    bookmaker: str
    status: str
    outcomes: tuple[tuple[str, float, bool], ...] = ()  # (name, odds, is_active)
    unavailable_since: datetime | None = None

    @property
    def offered(self) -> bool:
        return self.status != NEVER_OFFERED

    @property
    def suspended(self) -> bool:
        """Listed, but every outcome inactive (still *available*: it was not missing)."""
        return bool(self.outcomes) and not any(active for _, _, active in self.outcomes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "unavailable_since": _ts(self.unavailable_since),
            "outcomes": [{"name": n, "odds": o, "is_active": a} for n, o, a in self.outcomes],
        }


@dataclass(frozen=True)
class BookmakerStatus:
    """The event at one bookmaker: ``listed`` is false when nothing was ever stored
    for it; ``removed_at`` is when the event left the bookmaker's listing (``None``
    while it is listed, and again once a scrape sees markets)."""

    bookmaker: str
    listed: bool
    last_scraped_at: datetime | None = None
    last_confirmed_at: datetime | None = None
    removed_at: datetime | None = None
    markets: int = 0
    unavailable: int = 0

    @property
    def left_listing(self) -> bool:
        return self.removed_at is not None

    def as_dict(self) -> dict[str, Any]:
        return {
            "bookmaker": self.bookmaker,
            "listed": self.listed,
            "last_scraped_at": _ts(self.last_scraped_at),
            "last_confirmed_at": _ts(self.last_confirmed_at),
            "removed_at": _ts(self.removed_at),
            "left_listing": self.left_listing,
            "markets": self.markets,
            "unavailable": self.unavailable,
        }


@dataclass(frozen=True)
class MarketComparison:
    """One market key across bookmakers; ``states`` follows ``EventComparison.bookmakers``."""

    key: MarketKey
    name: str
    states: tuple[MarketState, ...]

    @property
    def field(self) -> str:
        """``18@2.5``, ``1@_`` (no line)."""
        return key_to_field(self.key)

    def state(self, bookmaker: str) -> MarketState:
        for s in self.states:
            if s.bookmaker == bookmaker:
                return s
        raise KeyError(f"bookmaker: {bookmaker!r} is not in this comparison")

    @property
    def everywhere_available(self) -> bool:
        return all(s.status == AVAILABLE for s in self.states)

    @property
    def unavailable_somewhere(self) -> bool:
        """Unavailable now at some bookmaker (never offered does not count)."""
        return any(s.status == UNAVAILABLE for s in self.states)

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.field,
            "betpawa_market_id": self.key.betpawa_market_id,
            "line": self.key.line,
            "name": self.name,
            "bookmakers": {s.bookmaker: s.as_dict() for s in self.states},
        }


@dataclass(frozen=True)
class EventComparison:
    """One event across bookmakers. Equality ignores ``source``: the same answer
    from Redis and from PostgreSQL compares equal."""

    event_id: int
    bookmakers: tuple[BookmakerStatus, ...]
    markets: tuple[MarketComparison, ...]
    source: str = field(default="redis", compare=False)

    def market(self, betpawa_market_id: Any, line: Any = None) -> MarketComparison | None:
        wanted = market_key(betpawa_market_id, line)
        return next((m for m in self.markets if m.key == wanted), None)

    def bookmaker(self, bookmaker: str) -> BookmakerStatus:
        for b in self.bookmakers:
            if b.bookmaker == bookmaker:
                return b
        raise KeyError(f"bookmaker: {bookmaker!r} is not in this comparison")

    @property
    def found(self) -> bool:
        """Anything at all is stored for the event."""
        return any(b.listed for b in self.bookmakers)

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "source": self.source,
            "bookmakers": [b.as_dict() for b in self.bookmakers],
            "markets": [m.as_dict() for m in self.markets],
        }


@dataclass(frozen=True)
class Transition:
    """One row of ``market_availability_history``."""

    event_id: int
    bookmaker: str
    key: MarketKey
    transition: str  # became_unavailable | became_available
    at: datetime
    recorded_at: datetime | None = field(default=None, compare=False)

    @property
    def field(self) -> str:
        return key_to_field(self.key)

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "bookmaker": self.bookmaker,
            "key": self.field,
            "betpawa_market_id": self.key.betpawa_market_id,
            "line": self.key.line,
            "transition": self.transition,
            "at": _ts(self.at),
            "recorded_at": _ts(self.recorded_at),
        }


# ---------------------------------------------------------------- query arguments


@dataclass(frozen=True)
class MarketFilter:
    """``18`` (every line of market 18), ``18@2.5`` (one line), ``1@_`` (the market without a line)."""

    betpawa_market_id: str
    line: float | None = None
    any_line: bool = True

    def matches(self, key: MarketKey) -> bool:
        return key.betpawa_market_id == self.betpawa_market_id and (self.any_line or key.line == self.line)

    def __str__(self) -> str:
        return self.betpawa_market_id if self.any_line else key_to_field(MarketKey(self.betpawa_market_id, self.line))


def parse_market_filter(value: Any) -> MarketFilter:
    """A market filter from ``"18"``, ``"18@2.5"``, ``"1@_"``, a :class:`MarketKey` or a filter."""
    if isinstance(value, MarketFilter):
        return value
    if isinstance(value, MarketKey):
        return MarketFilter(value.betpawa_market_id, value.line, any_line=False)
    if not isinstance(value, str) or not value.strip():
        raise InvalidQuery(f"market: expected ID or ID@LINE (e.g. 18, 18@2.5, 1@_), got {value!r}")
    try:
        if "@" not in value:
            return MarketFilter(normalize_market_id(value))
        key = field_to_key(value)
    except AvailabilityError:
        raise InvalidQuery(f"market: expected ID or ID@LINE (e.g. 18, 18@2.5, 1@_), got {value!r}") from None
    return MarketFilter(key.betpawa_market_id, key.line, any_line=False)


def _since(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        return to_utc(value, "since")
    except AvailabilityError as exc:
        raise InvalidQuery(str(exc)) from None


def _source(value: Any) -> str:
    if value not in SOURCES:
        raise InvalidQuery(f"source: expected one of {', '.join(SOURCES)}, got {value!r}")
    return value


# ---------------------------------------------------------------- building a comparison


@dataclass
class _Side:
    """What one store holds of the event at one bookmaker."""

    last_scraped_at: datetime | None
    last_confirmed_at: datetime | None
    removed_at: datetime | None
    markets: list[CachedMarket]


def _outcomes(market: CachedMarket) -> tuple[tuple[str, float, bool], ...]:
    return tuple((o["name"], float(o["odds"]), bool(o["is_active"])) for o in market.outcomes)


def build_comparison(event_id: int, bookmakers: Sequence[str], sides: dict[str, _Side], source: str) -> EventComparison:
    order = list(bookmakers) + sorted(b for b in sides if b not in bookmakers)
    statuses = []
    by_key: dict[MarketKey, dict[str, CachedMarket]] = {}
    for b in order:
        side = sides.get(b)
        if side is None:
            statuses.append(BookmakerStatus(b, listed=False))
            continue
        for m in side.markets:
            by_key.setdefault(m.key, {})[b] = m
        statuses.append(BookmakerStatus(
            b, True, side.last_scraped_at, side.last_confirmed_at, side.removed_at,
            markets=len(side.markets), unavailable=sum(1 for m in side.markets if not m.is_available),
        ))
    rows = []
    for key in sorted(by_key, key=key_sort_order):
        seen = by_key[key]
        name = next(seen[b].betpawa_market_name for b in order if b in seen)
        states = []
        for b in order:
            m = seen.get(b)
            if m is None:
                states.append(MarketState(b, NEVER_OFFERED))
            elif m.is_available:
                states.append(MarketState(b, AVAILABLE, _outcomes(m)))
            else:
                states.append(MarketState(b, UNAVAILABLE, _outcomes(m), m.unavailable_at))
        rows.append(MarketComparison(key, name, tuple(states)))
    return EventComparison(event_id, tuple(statuses), tuple(rows), source)


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


# ---------------------------------------------------------------- for humans (rich)


def _when(value: datetime | None, day: Any = None) -> str:
    """``12:05:11`` when on ``day``, else ``2026-11-28 12:05:11`` (full precision is in --json)."""
    if value is None:
        return "-"
    return value.strftime("%H:%M:%S" if value.date() == day else "%Y-%m-%d %H:%M:%S")


def _odds_text(outcomes: Sequence[tuple[str, float, bool]]) -> str:
    return " / ".join(f"{o:g}" if active else f"{o:g}\u2020" for _, o, active in outcomes)


def render_comparison(comparison: EventComparison, console: Any, *, gaps_only: bool = False) -> None:
    """Print the comparison to a ``rich`` console: the bookmakers, then one row per market
    (``gaps_only``: per market unavailable now at some bookmaker)."""
    from rich import box
    from rich.table import Table

    times = [b.last_scraped_at for b in comparison.bookmakers if b.last_scraped_at]
    day = max(times).date() if times else None
    heads = Table(title=f"event {comparison.event_id} from {comparison.source} (times UTC"
                        f"{', ' + day.isoformat() if day else ''})",
                  title_justify="left", box=box.SIMPLE_HEAD)
    for name in ("bookmaker", "markets", "unavailable", "last scrape", "listing"):
        heads.add_column(name)
    for b in comparison.bookmakers:
        if not b.listed:
            heads.add_row(b.bookmaker, "-", "-", "-", "[dim]never listed this event[/dim]")
            continue
        listing = f"[red]left at {_when(b.removed_at, day)}[/red]" if b.removed_at else "listed"
        heads.add_row(b.bookmaker, str(b.markets), str(b.unavailable), _when(b.last_scraped_at, day), listing)
    console.print(heads)

    rows = [m for m in comparison.markets if not gaps_only or m.unavailable_somewhere]
    table = Table(box=box.SIMPLE_HEAD, caption="odds in outcome order; \u2020 inactive outcome",
                  caption_justify="left")
    table.add_column("key", no_wrap=True)
    table.add_column("market", min_width=10)
    for b in comparison.bookmakers:
        table.add_column(b.bookmaker, min_width=12)
    for m in rows:
        cells = []
        for s in m.states:
            if s.status == AVAILABLE:
                cells.append(_odds_text(s.outcomes) + (" [yellow](suspended)[/yellow]" if s.suspended else ""))
            elif s.status == UNAVAILABLE:
                cells.append(f"[red]gone since {_when(s.unavailable_since, day)}[/red] (was {_odds_text(s.outcomes)})")
            else:
                cells.append("[dim]never offered[/dim]")
        table.add_row(m.field, m.name, *cells)
    console.print(table)
    shown = f"{len(rows)} of {len(comparison.markets)} markets" if gaps_only else f"{len(rows)} markets"
    console.print(f"{shown}; available everywhere: {sum(1 for m in comparison.markets if m.everywhere_available)}")


def render_history(event_id: int, transitions: Sequence[Transition], console: Any) -> None:
    from rich import box
    from rich.table import Table

    table = Table(title=f"event {event_id}: {len(transitions)} transitions (times UTC)", title_justify="left",
                  box=box.SIMPLE_HEAD)
    for name in ("at", "bookmaker", "market", "transition"):
        table.add_column(name, no_wrap=True)
    for t in transitions:
        what = "[red]became unavailable[/red]" if t.transition == "became_unavailable" else "[green]became available[/green]"
        table.add_row(t.at.strftime("%Y-%m-%d %H:%M:%S.%f"), t.bookmaker, t.field, what)
    console.print(table)
