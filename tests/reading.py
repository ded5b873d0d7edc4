"""One event built the way production builds it, for the reading tests:
scrapes applied through MarketCache, flushed to PostgreSQL by the Flusher."""

from __future__ import annotations


from factory import at, cached_market

from availability.cache import MarketCache
from availability.flusher import Flusher
from availability.model import CachedMarket

SHARDS = 4


def market(market_id: str, line: float | None = None, odds: float = 1.85, name: str | None = None) -> CachedMarket:
    return cached_market(market_id, line, name=name, outcomes=[("Home", odds, True), ("Away", 2.05, True)],
                         handicap_type=None if line is None else "handicap", handicap_home=line,
                         handicap_away=None if line is None else -line)


async def flush(cache: MarketCache, database_url: str) -> None:
    flusher = Flusher(cache, database_url)
    try:
        await flusher.run_once()
    finally:
        await flusher.close()


async def build_event(cache: MarketCache, database_url: str) -> None:
    """Event 1: betpawa loses two markets at 12:05, one comes back at 12:10;
    sportybet lists it until the event leaves its listing at 12:12; bet9ja
    never lists it. Event 2 at bet9ja only, so the events stay apart."""
    await cache.mark_ready()
    await cache.apply_scrape(1, "betpawa", [market("1"), market("18", 2.5), market("18", 3.5), market("16", 0.0)], at(0))
    await cache.apply_scrape(1, "sportybet", [market("1", odds=1.8), market("18", 2.5)], at(1))
    await cache.apply_scrape(1, "betpawa", [market("1", odds=1.9), market("18", 2.5)], at(5))
    await cache.apply_scrape(1, "sportybet", [market("1", odds=1.8), market("18", 2.5), market("16")], at(6))
    await cache.apply_scrape(1, "betpawa", [market("1", odds=1.9), market("18", 2.5), market("18", 3.5)], at(10))
    await cache.mark_event_removed(1, "sportybet", at(12))
    await cache.apply_scrape(2, "bet9ja", [market("1")], at(3))
    await flush(cache, database_url)


