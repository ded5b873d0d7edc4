"""Converters between cached markets and PostgreSQL rows.

``CachedMarket`` (availability.model) is what the cache holds; ``MarketOdds``
/ ``CompetitorMarketOdds`` (availability.db.models) are the rows. A row adds
the event, the bookmaker (``source`` for competitors only: the home
bookmaker's rows live in their own table) and three scrape times.
``unavailable_at`` travels both ways.

Every function accepts what a caller naturally has: ``row_to_market`` takes an
ORM instance, a Core ``Row`` or a plain mapping; ``market_to_values`` builds
the plain dict a bulk ``INSERT ... ON CONFLICT`` wants.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping, Union

from availability.db.models import CompetitorMarketOdds, MarketOdds
from availability.errors import InvalidScrape
from availability.model import CachedMarket, normalize_line, normalize_market_id, to_utc

__all__ = [
    "HOME_BOOKMAKER",
    "MarketRow",
    "MARKET_FIELDS",
    "model_for",
    "market_to_values",
    "market_to_row",
    "row_to_market",
    "row_to_dict",
    "dict_to_row",
]

HOME_BOOKMAKER = "betpawa"

MarketRow = Union[MarketOdds, CompetitorMarketOdds]

# The CachedMarket fields, which are also column names of both tables.
MARKET_FIELDS: tuple[str, ...] = (
    "betpawa_market_id",
    "betpawa_market_name",
    "line",
    "handicap_type",
    "handicap_home",
    "handicap_away",
    "outcomes",
    "market_groups",
    "unavailable_at",
)


def _bookmaker(value: Any, name: str = "bookmaker") -> str:
    if not isinstance(value, str) or not value or value != value.strip():
        raise InvalidScrape(f"{name}: expected a non-empty bookmaker slug, got {value!r}")
    return value


def _event_id(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidScrape(f"event_id: expected an integer, got {value!r} ({type(value).__name__})")
    return int(value)


def model_for(bookmaker: str, home_bookmaker: str = HOME_BOOKMAKER) -> type[MarketOdds] | type[CompetitorMarketOdds]:
    """The ORM class holding ``bookmaker``'s markets: the home bookmaker's
    table ``market_odds``, everyone else's ``competitor_market_odds``."""
    if _bookmaker(bookmaker) == _bookmaker(home_bookmaker, "home_bookmaker"):
        return MarketOdds
    return CompetitorMarketOdds


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value) + 0.0


def _outcomes(outcomes: Any) -> list[dict[str, Any]]:
    return [
        {"name": o["name"], "odds": float(o["odds"]), "is_active": bool(o.get("is_active", True))}
        for o in outcomes
    ]


def _optional_utc(value: datetime | None, name: str) -> datetime | None:
    return None if value is None else to_utc(value, name)


def market_to_values(
    market: CachedMarket,
    *,
    event_id: int,
    bookmaker: str,
    captured_at: datetime,
    seen_at: datetime,
    scraped_at: datetime,
    home_bookmaker: str = HOME_BOOKMAKER,
) -> dict[str, Any]:
    """The column values of ``market``'s row (no ``id``), as a plain dict.

    Competitor rows carry ``source=bookmaker``; the home bookmaker's do not
    (their table has no ``source`` column). Lines are normalised
    (``-0.0`` -> ``0.0``, ``None`` stays ``None``), times must be tz-aware and
    are converted to UTC, outcomes are reduced to ``name, odds, is_active``.
    """
    values: dict[str, Any] = {}
    if model_for(bookmaker, home_bookmaker) is CompetitorMarketOdds:
        values["source"] = bookmaker
    values.update(
        event_id=_event_id(event_id),
        betpawa_market_id=normalize_market_id(market.betpawa_market_id),
        line=normalize_line(market.line),
        betpawa_market_name=market.betpawa_market_name,
        handicap_type=market.handicap_type,
        handicap_home=_optional_float(market.handicap_home),
        handicap_away=_optional_float(market.handicap_away),
        outcomes=_outcomes(market.outcomes),
        market_groups=None if market.market_groups is None else list(market.market_groups),
        captured_at=to_utc(captured_at, "captured_at"),
        seen_at=to_utc(seen_at, "seen_at"),
        scraped_at=to_utc(scraped_at, "scraped_at"),
        unavailable_at=_optional_utc(market.unavailable_at, "unavailable_at"),
    )
    return values


def market_to_row(
    market: CachedMarket,
    *,
    event_id: int,
    bookmaker: str,
    captured_at: datetime,
    seen_at: datetime,
    scraped_at: datetime,
    home_bookmaker: str = HOME_BOOKMAKER,
) -> MarketRow:
    """A new (transient) ORM row for ``market``: ``MarketOdds`` for the home
    bookmaker, ``CompetitorMarketOdds`` with ``source=bookmaker`` otherwise."""
    cls = model_for(bookmaker, home_bookmaker)
    return cls(
        **market_to_values(
            market,
            event_id=event_id,
            bookmaker=bookmaker,
            captured_at=captured_at,
            seen_at=seen_at,
            scraped_at=scraped_at,
            home_bookmaker=home_bookmaker,
        )
    )


def _getter(row: Any) -> Any:
    if isinstance(row, Mapping):
        return row.get
    mapping = getattr(row, "_mapping", None)  # a Core Row
    if mapping is not None:
        return mapping.get

    def get(name: str, default: Any = None) -> Any:
        return getattr(row, name, default)

    return get


def row_to_market(row: Any) -> CachedMarket:
    """The ``CachedMarket`` of a row: an ORM instance, a Core ``Row`` or a mapping.

    The line is normalised with :func:`availability.model.normalize_line`,
    outcomes become a list of ``{"name", "odds", "is_active"}`` dicts and
    ``unavailable_at`` a tz-aware UTC datetime (``None`` when available, or
    when the row predates revision 0002).
    """
    get = _getter(row)
    groups = get("market_groups")
    unavailable_at = get("unavailable_at")
    return CachedMarket(
        betpawa_market_id=normalize_market_id(get("betpawa_market_id")),
        betpawa_market_name=get("betpawa_market_name"),
        line=normalize_line(get("line")),
        handicap_type=get("handicap_type"),
        handicap_home=_optional_float(get("handicap_home")),
        handicap_away=_optional_float(get("handicap_away")),
        outcomes=_outcomes(get("outcomes") or []),
        market_groups=None if groups is None else list(groups),
        unavailable_at=_optional_utc(unavailable_at, "unavailable_at"),
    )


def row_to_dict(row: MarketRow) -> dict[str, Any]:
    """Every column of an ORM market row (``id`` and ``source`` included when set)."""
    table = type(row).__table__
    return {column.key: getattr(row, column.key) for column in table.columns}


def dict_to_row(data: Mapping[str, Any], *, home_bookmaker: str = HOME_BOOKMAKER) -> MarketRow:
    """An ORM row from a column dict such as :func:`row_to_dict` or
    :func:`market_to_values` produce.

    A dict with a ``source`` other than ``home_bookmaker`` becomes a
    ``CompetitorMarketOdds``; one without ``source`` (or with the home
    bookmaker's) a ``MarketOdds``. Unknown keys are rejected.
    """
    source = data.get("source")
    cls = MarketOdds if source is None else model_for(source, home_bookmaker)
    columns = {column.key for column in cls.__table__.columns}
    values = {k: v for k, v in data.items() if not (k == "source" and cls is MarketOdds)}
    unknown = sorted(set(values) - columns)
    if unknown:
        raise InvalidScrape(f"{cls.__tablename__}: unknown columns {unknown!r}")
    return cls(**values)
