"""What many test files build, defined once: the clock, markets, a warm cache.

* ``UTC``, ``T0`` (2026-11-28 12:00 UTC) and ``at(minutes)``: the suite's clock.
* :func:`cached_market`: a :class:`CachedMarket` with every field spelled out
  by keyword, so each test file's ``market()`` says only what makes its
  markets different (outcome names, groups, handicap fields).
* :func:`scraped_market`: a market as a scraper hands it over (a plain ``dict``),
  two active outcomes, for tests where only the key and the odds matter.
* :func:`availability`: the command line as a user runs it (``python -m availability``
  in a subprocess), with only the settings given.
* :func:`warm_cache`: the cache most tests start from, marked ready; the
  ``cache`` fixture of ``conftest.py`` builds it with the test module's
  ``SHARDS`` (16 when the module sets none).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from availability.cache import MarketCache
from availability.keys import DEFAULT_SHARDS
from availability.model import CachedMarket

__all__ = ["T0", "UTC", "Outcome", "at", "availability", "cached_market", "scraped_market", "warm_cache"]

UTC = timezone.utc
T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

Outcome = tuple[str, float, bool]
"""``(name, odds, is_active)``."""


def at(minutes: float) -> datetime:
    """``minutes`` after :data:`T0`."""
    return T0 + timedelta(minutes=minutes)


def availability(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
                 **settings: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m availability ARGS``; ``settings`` become environment
    variables (``REDIS_URL=...``); REDIS_URL/DATABASE_URL are unset otherwise."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("REDIS_URL", "DATABASE_URL") and not k.startswith("AVAILABILITY_")}
    base.update(env or {})
    base.update(settings)
    return subprocess.run([sys.executable, "-m", "availability", *args], capture_output=True, text=True,
                          env=base, timeout=timeout)


def scraped_market(market_id: str, line: float | None = None, odds: float = 1.85) -> dict:
    """``{"betpawa_market_id": ..., "line": ..., "outcomes": [1 @ odds, 2 @ 2.1]}``, named ``Market <id>``."""
    return {"betpawa_market_id": market_id, "betpawa_market_name": f"Market {market_id}", "line": line,
            "outcomes": [{"name": "1", "odds": odds, "is_active": True}, {"name": "2", "odds": 2.1, "is_active": True}]}


def cached_market(
    market_id: str,
    line: float | None = None,
    *,
    outcomes: Sequence[Outcome],
    name: str | None = None,
    handicap_type: str | None = None,
    handicap_home: float | None = None,
    handicap_away: float | None = None,
    groups: list[str] | None = None,
    unavailable_at: datetime | None = None,
) -> CachedMarket:
    """A market as the cache stores it; ``name`` defaults to ``"Market <id>"``."""
    return CachedMarket(
        betpawa_market_id=market_id,
        betpawa_market_name=name or f"Market {market_id}",
        line=line,
        handicap_type=handicap_type,
        handicap_home=handicap_home,
        handicap_away=handicap_away,
        outcomes=[{"name": n, "odds": odds, "is_active": active} for n, odds, active in outcomes],
        market_groups=groups,
        unavailable_at=unavailable_at,
    )


async def warm_cache(client: Any, prefix: str, shards: int = DEFAULT_SHARDS) -> MarketCache:
    """A :class:`MarketCache` on ``client`` under ``prefix``, every shard marked ready."""
    cache = MarketCache(client, prefix=prefix, shards=shards)
    await cache.mark_ready()
    return cache
