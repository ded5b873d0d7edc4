"""The availability rules, once, in plain Python with no I/O.

This is the readable reference. The Lua script behind
:meth:`availability.cache.MarketCache.apply_scrape` implements the same rules
atomically in Redis, and property-based tests check it against this module.

Pure: no I/O, and importing it configures nothing. It logs through
:func:`availability.logs.get_logger`, which stays off stdout until the
application configures structlog.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from collections.abc import Iterable, Mapping
from typing import Any

from availability.errors import InvalidMarketKey, InvalidScrape
from availability.logs import get_logger
from availability.model import CachedMarket, MarketKey, market_key, to_utc

__all__ = ["get_market_key", "detect_availability_changes"]

log = get_logger("availability.detection")


def get_market_key(market: Any) -> MarketKey:
    """The normalised ``(betpawa_market_id, line)`` of a ``CachedMarket``, a
    mapping, or any object with ``betpawa_market_id`` and ``line`` attributes.

    A missing ``line`` means a market without a line (``None``), never ``0.0``.
    """
    if isinstance(market, Mapping):
        if "betpawa_market_id" not in market:
            raise InvalidMarketKey(f"betpawa_market_id: missing from {market!r}")
        return market_key(market["betpawa_market_id"], market.get("line"))
    try:
        market_id = market.betpawa_market_id
    except AttributeError:
        raise InvalidMarketKey(
            f"betpawa_market_id: {type(market).__name__} object has no such attribute"
        ) from None
    return market_key(market_id, getattr(market, "line", None))


def _previous(previous_markets: Any) -> list[CachedMarket]:
    """The cached markets of ``previous_markets``: the values of a mapping
    (``{market_key: CachedMarket}``, as the coordinator keeps them; its keys
    are not used) or the items of any other iterable."""
    if isinstance(previous_markets, Mapping):
        markets, where = list(previous_markets.values()), "previous_markets values"
    elif isinstance(previous_markets, (str, bytes)) or not isinstance(previous_markets, Iterable):
        raise TypeError(
            "previous_markets: expected a dict {market_key: CachedMarket} or an iterable of "
            f"CachedMarket, got {type(previous_markets).__name__}"
        )
    else:
        markets, where = list(previous_markets), "previous_markets"
    for i, market in enumerate(markets):
        if not isinstance(market, CachedMarket):
            raise TypeError(f"{where}[{i}]: expected a CachedMarket, got {type(market).__name__}")
    return markets


def _stamp(timestamp: Any) -> datetime:
    """``timestamp`` in UTC; a naive datetime is taken as UTC already."""
    if not isinstance(timestamp, datetime):
        raise InvalidScrape(f"timestamp: expected a datetime, got {timestamp!r} ({type(timestamp).__name__})")
    if timestamp.tzinfo is None or timestamp.utcoffset() is None:
        return timestamp.replace(tzinfo=timezone.utc)
    return to_utc(timestamp, "timestamp")


def detect_availability_changes(
    previous_markets: Mapping[Any, CachedMarket] | Iterable[CachedMarket],
    new_market_data: Iterable[Any],
    timestamp: datetime,
) -> tuple[list[CachedMarket], list[CachedMarket], list[MarketKey]]:
    """Compare the cached markets with a complete scrape.

    ``previous_markets`` is a dict ``{market_key: CachedMarket}`` (its values
    are compared; the keys are not used) or any iterable of ``CachedMarket``;
    anything else raises ``TypeError``. ``new_market_data`` is a list of
    ``CachedMarket``, dicts, or objects with ``betpawa_market_id`` and ``line``
    attributes (ORM rows); only their keys matter. ``timestamp`` may be
    timezone-aware (converted to UTC) or naive, which is taken as UTC
    (``datetime.utcnow()``); the stamps returned are always aware UTC.
    (:class:`MarketCache` itself still refuses naive times.)

    Returns ``(became_unavailable, became_available, disappeared_keys)``:

    - ``became_unavailable``: previous markets missing from ``new_market_data``
      that were available, stamped ``unavailable_at=timestamp``. A market
      already stamped keeps its first stamp and is not reported again.
    - ``became_available``: previously unavailable markets present again,
      with ``unavailable_at`` cleared.
    - ``disappeared_keys``: every previous key missing from the new data,
      already-unavailable ones included, in the order of ``previous_markets``.

    When anything became unavailable or available, logs the structlog event
    ``availability_detection.changes`` with ``became_unavailable``,
    ``became_available`` and ``disappeared_keys_count``.

    The caller decides whether the scrape is complete: an empty or partial
    scrape says nothing about what disappeared and must not be passed here
    (:meth:`MarketCache.apply_scrape` enforces that).
    """
    previous = _previous(previous_markets)
    if isinstance(new_market_data, (str, bytes, Mapping)) or not isinstance(new_market_data, Iterable):
        raise TypeError(
            f"new_market_data: expected a list of markets (dicts, CachedMarket or objects with "
            f"betpawa_market_id and line), got {type(new_market_data).__name__}"
        )
    stamp = _stamp(timestamp)
    present = {get_market_key(m) for m in new_market_data}
    became_unavailable: list[CachedMarket] = []
    became_available: list[CachedMarket] = []
    disappeared: list[MarketKey] = []
    for market in previous:
        key = get_market_key(market)
        if key in present:
            if market.unavailable_at is not None:
                became_available.append(dataclasses.replace(market, unavailable_at=None))
            continue
        disappeared.append(key)
        if market.unavailable_at is None:
            became_unavailable.append(dataclasses.replace(market, unavailable_at=stamp))
    if became_unavailable or became_available:
        log.info(
            "availability_detection.changes",
            became_unavailable=len(became_unavailable),
            became_available=len(became_available),
            disappeared_keys_count=len(disappeared),
        )
    return became_unavailable, became_available, disappeared
