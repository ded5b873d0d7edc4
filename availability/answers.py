"""What :class:`~availability.reader.AvailabilityReader` answers: the states of a
market at each bookmaker, a comparison of one event, a recorded transition, and
the query arguments (market filters, times, sources) -- plain values, no I/O.

:func:`build_comparison` turns what one store holds of an event (a
:class:`_Side` per bookmaker) into an :class:`EventComparison`; Redis and
PostgreSQL build theirs through it, so both give equal answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from availability.db.convert import HOME_BOOKMAKER
from availability.errors import AvailabilityError
from availability.model import (
    CachedMarket,
    MarketKey,
    format_ts,
    key_sort_order,
    field_to_key,
    key_to_field,
    market_key,
    normalize_market_id,
    to_utc,
)

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
