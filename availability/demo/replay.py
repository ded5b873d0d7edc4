"""Who delivers which scrape when, and the reference replay of what the cache must then hold.

Both are pure: the workers deliver by :func:`delivery_plan`, and each worker
replays its own deliveries through the package's pure rules
(:func:`availability.rules.apply_to_snapshot`) into an :class:`Expectation`
the parent compares the cache with.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from availability.coordinator import ScrapeResult
from availability.model import CachedMarket, encode_market, format_ts, key_to_field
from availability.rules import SnapshotState, apply_to_snapshot

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
class Expectation:
    """What the reference rules say the cache must hold for some events.

    A thin user of :mod:`availability.rules`, the package's one pure statement
    of what a scrape does (the twin of ``apply_scrape.lua``): this class only
    adds what the rules leave to the cache -- failed fetches and empty pages
    say nothing, a scrape not newer than the last one is stale -- and counts."""

    counts: Counter = field(default_factory=Counter)
    snapshots: dict[tuple[int, str], SnapshotState] = field(default_factory=dict)

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
        state = self.snapshots.setdefault((result.event_id, result.bookmaker), SnapshotState())
        if state.last_scraped_at is not None and result.scraped_at <= state.last_scraped_at:
            c["stale"] += 1
            c["rows_stale"] += len(result.markets)
            return
        merged = {m.key: m for m in shown}
        c["rows_merged"] += len(result.markets) - len(merged)  # split rows of one market, merged into one
        applied = apply_to_snapshot(state, result.scraped_at, merged, complete=result.complete)
        c["applied"] += 1
        c["became_unavailable"] += len(applied.became_unavailable)
        c["became_available"] += len(applied.became_available)
        c["new"] += applied.new
        c["changed"] += applied.changed
        c["unchanged"] += applied.unchanged

    def removed(self, event_id: int, bookmaker: str, at: datetime) -> None:
        """The event left a listing that was fetched completely."""
        state = self.snapshots.get((event_id, bookmaker))
        if state is None or state.last_scraped_at is None:
            return  # reconciliation only looks at cached events
        c = self.counts
        c["removals"] += 1
        if at <= state.last_scraped_at:
            c["removals_stale"] += 1
            return
        if not state.markets:
            return
        applied = apply_to_snapshot(state, at, {}, complete=True, removed=True)
        c["removal_stamped"] += len(applied.became_unavailable)

    def digest(self) -> dict[str, Any]:
        """The expected state in a form that pickles small: per snapshot, the
        last scrape, each market's canonical encoding and stamp."""
        return {
            f"{e}:{b}": {
                "last": format_ts(s.last_scraped_at),
                "markets": {key_to_field(k): (encode_market(m), format_ts(m.unavailable_at) if m.unavailable_at else None)
                            for k, m in s.markets.items()},
            }
            for (e, b), s in self.snapshots.items()
            if s.last_scraped_at is not None
        }
