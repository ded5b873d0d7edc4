"""The availability rules, once, in plain Python with no I/O.

This is the readable reference. The Lua script behind
:meth:`availability.cache.MarketCache.apply_scrape` implements the same rules
atomically in Redis, and property-based tests check it against this module.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from collections.abc import Iterable, Mapping
from typing import Any

import structlog

from availability.errors import InvalidMarketKey
from availability.model import CachedMarket, MarketKey, market_key, to_utc

__all__ = ["get_market_key", "detect_availability_changes"]

log = structlog.get_logger("availability.detection")


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


def detect_availability_changes(
    previous_markets: Iterable[CachedMarket],
    new_market_data: Iterable[Any],
    timestamp: datetime,
) -> tuple[list[CachedMarket], list[CachedMarket], list[MarketKey]]:
    """Compare the cached markets with a complete scrape.

    Returns ``(became_unavailable, became_available, disappeared_keys)``:

    - ``became_unavailable``: previous markets missing from ``new_market_data``
      that were available, stamped ``unavailable_at=timestamp``. A market
      already stamped keeps its first stamp and is not reported again.
    - ``became_available``: previously unavailable markets present again,
      with ``unavailable_at`` cleared.
    - ``disappeared_keys``: every previous key missing from the new data,
      already-unavailable ones included, in the order of ``previous_markets``.

    The caller decides whether the scrape is complete: an empty or partial
    scrape says nothing about what disappeared and must not be passed here
    (:meth:`MarketCache.apply_scrape` enforces that).
    """
    stamp = to_utc(timestamp, "timestamp")
    present = {get_market_key(m) for m in new_market_data}
    became_unavailable: list[CachedMarket] = []
    became_available: list[CachedMarket] = []
    disappeared: list[MarketKey] = []
    for market in previous_markets:
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
            disappeared=len(disappeared),
        )
    return became_unavailable, became_available, disappeared
