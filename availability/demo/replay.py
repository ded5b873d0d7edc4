"""Who delivers which scrape when, and the reference replay of what the cache must then hold.

Both are pure: the workers deliver by :func:`delivery_plan`, and each worker
replays its own deliveries through :func:`availability.detection.detect_availability_changes`
into an :class:`Expectation` the parent compares the cache with.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from availability.coordinator import ScrapeResult
from availability.detection import detect_availability_changes
from availability.model import CachedMarket, MarketKey, encode_market, format_ts, key_to_field

__all__ = ["Delivery", "Expectation", "delivery_plan", "slow_worker"]

_HOLD_BACK = 0.10  # of a slow worker's scrapes, delivered one cycle late
_RETRY = 0.03  # re-sent right away (a retry after a timeout)
_CROSS = 0.03  # also scraped by the neighbouring worker

# ---------------------------------------------------------------- who delivers what, when


@dataclass(frozen=True)
class Delivery:
    owner: int  # the worker that scrapes the event
    held_back: bool  # delivered one cycle late, after the owner's next batch
    retry: bool  # sent twice in a row by the owner
    cross: bool  # also delivered by worker (owner + 1) % workers, in the same cycle


def slow_worker(index: int, workers: int) -> bool:
    return workers == 1 or index % 2 == 1


def delivery_plan(seed: int, cycle: int, event_index: int, bookmaker: str, workers: int) -> Delivery:
    """How one scrape reaches the cache. Pure: the workers deliver by it and
    the reference replay follows it."""
    owner = event_index % workers
    rng = random.Random(f"{seed}:{cycle}:{event_index}:{bookmaker}")
    held, retry, cross = rng.random(), rng.random(), rng.random()
    is_cross = workers > 1 and cross < _CROSS
    # a held-back scrape is never also delivered by another worker: its arrival
    # order against the owner's next scrape would then depend on timing
    is_held = slow_worker(owner, workers) and held < _HOLD_BACK and not is_cross
    return Delivery(owner, is_held, retry < _RETRY, is_cross)


# ---------------------------------------------------------------- the reference replay


@dataclass
class _RefSnapshot:
    markets: dict[MarketKey, CachedMarket] = field(default_factory=dict)
    stamps: dict[MarketKey, datetime] = field(default_factory=dict)
    last: datetime | None = None
    cached: bool = False  # in the shard's snapshot index (any applied scrape)


@dataclass
class Expectation:
    """What the reference rules say the cache must hold for some events."""

    counts: Counter = field(default_factory=Counter)
    snapshots: dict[tuple[int, str], _RefSnapshot] = field(default_factory=dict)

    def _snap(self, event_id: int, bookmaker: str) -> _RefSnapshot:
        return self.snapshots.setdefault((event_id, bookmaker), _RefSnapshot())

    def scrape(self, result: ScrapeResult, shown: list[CachedMarket], copies: int = 1) -> None:
        """``copies`` deliveries of one scrape; ``shown`` is what it shows,
        merged (the feed's truth, so the cache's own merging is checked too)."""
        for _ in range(copies):
            self._scrape_once(result, shown)

    def _scrape_once(self, result: ScrapeResult, shown: list[CachedMarket]) -> None:
        c = self.counts
        c["results"] += 1
        if result.failed:
            c["failed_fetches"] += 1
            return
        if not result.markets:  # a flaky endpoint's empty page: says nothing
            c["ignored_empty"] += 1
            return
        snap = self._snap(result.event_id, result.bookmaker)
        if snap.last is not None and result.scraped_at <= snap.last:
            c["stale"] += 1
            c["rows_stale"] += len(result.markets)
            return
        merged = {m.key: m for m in shown}
        c["rows_merged"] += len(result.markets) - len(merged)  # split rows of one market, merged into one
        stamps = snap.stamps
        # Only markets that can change state go to the rules: the missing ones
        # (none for a partial page, which stamps nothing) and the stamped ones.
        if result.complete:
            keys = [k for k in snap.markets if k not in merged or k in stamps]
        else:
            keys = [k for k in snap.markets if k in merged and k in stamps]
        previous = [dataclasses.replace(snap.markets[k], unavailable_at=stamps[k]) if k in stamps
                    else snap.markets[k] for k in keys]
        gone, back, _ = detect_availability_changes(previous, [merged[k] for k in keys if k in merged],
                                                    result.scraped_at)
        c["applied"] += 1
        c["became_unavailable"] += len(gone)
        c["became_available"] += len(back)
        for key, market in merged.items():
            old = snap.markets.get(key)
            if old is None:
                c["new"] += 1
            elif old != market:
                c["changed"] += 1
            else:
                c["unchanged"] += 1
            snap.markets[key] = market
        for m in back:
            snap.stamps.pop(m.key, None)
        for m in gone:
            snap.stamps[m.key] = result.scraped_at
        snap.last = result.scraped_at
        snap.cached = True

    def removed(self, event_id: int, bookmaker: str, at: datetime) -> None:
        """The event left a listing that was fetched completely."""
        snap = self.snapshots.get((event_id, bookmaker))
        if snap is None or not snap.cached:
            return  # reconciliation only looks at cached events
        c = self.counts
        c["removals"] += 1
        if snap.last is not None and at <= snap.last:
            c["removals_stale"] += 1
            return
        if not snap.markets:
            return
        gone, _, _ = detect_availability_changes(
            [dataclasses.replace(m, unavailable_at=snap.stamps.get(k)) for k, m in snap.markets.items()], [], at
        )
        c["removal_stamped"] += len(gone)
        for m in gone:
            snap.stamps[m.key] = at
        snap.last = at

    def digest(self) -> dict[str, Any]:
        """The expected state in a form that pickles small: per snapshot, the
        last scrape, each market's canonical encoding and stamp."""
        return {
            f"{e}:{b}": {
                "last": format_ts(s.last) if s.last else None,
                "markets": {key_to_field(k): (encode_market(m), format_ts(s.stamps[k]) if k in s.stamps else None)
                            for k, m in s.markets.items()},
            }
            for (e, b), s in self.snapshots.items()
            if s.cached
        }
