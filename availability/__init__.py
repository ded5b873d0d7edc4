"""availability: a Redis-backed shared cache of betting-market availability.

Workers call :meth:`MarketCache.apply_scrape` (or
:meth:`EventCoordinator.store_batch_results`); flushers persist every change
to PostgreSQL. :func:`detect_availability_changes` is the readable reference
of the rules the Lua script implements.
"""

from availability.cache import MarketCache, Scrape, ScrapeOutcome
from availability.coordinator import BatchSummary, EventCoordinator, ScrapeResult
from availability.detection import detect_availability_changes, get_market_key
from availability.errors import (
    AvailabilityError,
    CacheNotReady,
    ConfigurationError,
    InvalidMarketKey,
    InvalidRead,
    InvalidScrape,
    KeyCollision,
)
from availability.model import CachedMarket, CachedSnapshot, MarketKey, RejectedMarket, market_key

__all__ = [
    "AvailabilityError",
    "BatchSummary",
    "CacheNotReady",
    "CachedMarket",
    "CachedSnapshot",
    "ConfigurationError",
    "EventCoordinator",
    "InvalidMarketKey",
    "InvalidRead",
    "InvalidScrape",
    "KeyCollision",
    "MarketCache",
    "MarketKey",
    "RejectedMarket",
    "Scrape",
    "ScrapeOutcome",
    "ScrapeResult",
    "detect_availability_changes",
    "get_market_key",
    "market_key",
]

__version__ = "0.1.0"
