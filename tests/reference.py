"""A pure, in-memory reference of :class:`availability.cache.MarketCache`.

A thin user of the package's one Python statement of the rules,
:func:`availability.rules.apply_to_snapshot`, with no I/O, so the Lua script
can be checked against it (``test_cache_differential.py``,
``test_cache_race.py``). It adds what the cache decides before the rules run,
in the same order:

1. an empty list without ``confirmed_empty`` (or a partial one) is
   ``ignored_empty`` before anything else: nothing changes, the clock does not
   move;
2. a scrape not newer than the last applied one is ``stale``: nothing
   changes; but the exact re-delivery of the last applied scrape (same
   time, same content) is ``duplicate``, told what its application did;
3. an event removal with nothing cached is ``applied`` and moves the clock
   like any other scrape;
4. rows sharing a key are merged; present markets are stored and cleared if
   they were unavailable; only a complete (or confirmed-empty) scrape stamps
   the missing ones, each once;
5. quarantine: a bad market whose key can be read is *held* -- present (never
   stamped, cleared if it was unavailable) with its stored market kept, and
   nothing at all when none is stored; a market whose key cannot be read makes
   the scrape partial (nothing stamped). A scrape whose every market was
   rejected unreadable is still applied (partial, no market): the clock moves.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

from availability.cache import APPLIED, DUPLICATE, IGNORED_EMPTY, STALE, Scrape, ScrapeOutcome
from availability.errors import InvalidScrape
from availability.keys import validate_bookmaker, validate_event_id
from availability.model import (
    CachedMarket,
    CachedSnapshot,
    MarketKey,
    encode_market,
    key_sort_order,
    merge_markets,
    screen_markets,
    to_utc,
)
from availability.rules import SnapshotState, apply_to_snapshot

__all__ = ["Expected", "ReferenceCache", "RefState", "outcome_of"]


@dataclass(frozen=True)
class Expected:
    """What an outcome must say: compare with :func:`outcome_of`."""

    status: str
    became_unavailable: tuple[MarketKey, ...] = ()
    became_available: tuple[MarketKey, ...] = ()
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    rejected: int = 0  # markets quarantined
    partial: bool = False  # applied without stamping


def outcome_of(outcome: ScrapeOutcome) -> Expected:
    """The part of a real outcome the reference predicts."""
    return Expected(
        outcome.status,
        tuple(outcome.became_unavailable),
        tuple(outcome.became_available),
        outcome.new,
        outcome.changed,
        outcome.unchanged,
        len(outcome.rejected),
        outcome.partial,
    )


@dataclass
class RefState(SnapshotState):
    """One event at one bookmaker, and what makes its last scrape's re-delivery exact."""

    last_identity: tuple | None = None  # what makes a re-delivery of the last scrape exact
    last_result: Expected | None = None


class ReferenceCache:
    """State per ``(event_id, bookmaker)``; a missing entry is an event never applied."""

    def __init__(self) -> None:
        self.states: dict[tuple[int, str], RefState] = {}

    # ------------------------------------------------------------ writes

    def apply(self, scrape: Scrape) -> Expected:
        """Mirror :meth:`MarketCache.apply_scrape` (raises ``InvalidScrape`` like it)."""
        event_id = validate_event_id(scrape.event_id)
        bookmaker = validate_bookmaker(scrape.bookmaker)
        at = to_utc(scrape.scraped_at, "scraped_at")
        where = f"event {event_id} at {bookmaker}"
        screened = screen_markets(scrape.markets, where)
        if scrape.confirmed_empty and screened.rows:
            raise InvalidScrape(f"confirmed_empty: True but {screened.rows} markets were given for {where}")
        if not screened.rows and not (scrape.confirmed_empty and scrape.complete):
            return Expected(IGNORED_EMPTY)
        complete = scrape.complete and not screened.key_unreadable and (
            not screened.rows or bool(screened.markets or screened.held))
        return self._apply(event_id, bookmaker, at, list(screened.markets.values()), complete=complete,
                           removed=False, expires_at=scrape.expires_at, held=screened.held,
                           rejected=screened.rejected)

    def mark_event_removed(self, event_id: int, bookmaker: str, at: datetime) -> Expected:
        """Mirror :meth:`MarketCache.mark_event_removed`."""
        return self._apply(validate_event_id(event_id), validate_bookmaker(bookmaker),
                           to_utc(at, "at"), [], complete=True, removed=True)

    def _apply(
        self,
        event_id: int,
        bookmaker: str,
        at: datetime,
        markets: list[CachedMarket],
        *,
        complete: bool,
        removed: bool,
        expires_at: datetime | None = None,
        held: tuple[MarketKey, ...] = (),
        rejected: tuple = (),
    ) -> Expected:
        state = self.states.get((event_id, bookmaker))
        merged = merge_markets(markets)
        identity = (removed, complete, expires_at,
                    tuple((key, encode_market(m)) for key, m in merged.items()), held, rejected)
        if state is not None and state.last_scraped_at is not None and at <= state.last_scraped_at:
            if at == state.last_scraped_at and identity == state.last_identity and state.last_result:
                return dataclasses.replace(state.last_result, status=DUPLICATE)
            return Expected(STALE, rejected=len(rejected))
        if state is None:
            state = self.states[(event_id, bookmaker)] = RefState()

        applied = apply_to_snapshot(state, at, merged, complete=complete, removed=removed, held=held)
        result = Expected(APPLIED, applied.became_unavailable, applied.became_available,
                          applied.new, applied.changed, applied.unchanged, len(rejected), not complete)
        state.last_identity, state.last_result = identity, result
        return result

    # ------------------------------------------------------------ reads

    def snapshot(self, event_id: int, bookmaker: str) -> CachedSnapshot | None:
        """What :meth:`MarketCache.get_snapshot` must return."""
        state = self.states.get((event_id, bookmaker))
        if state is None:
            return None
        return CachedSnapshot(
            event_id=event_id,
            bookmaker=bookmaker,
            captured_at=state.captured_at,
            last_confirmed_at=state.last_confirmed_at,
            markets=tuple(sorted(state.markets.values(), key=lambda m: key_sort_order(m.key))),
            last_scraped_at=state.last_scraped_at,
            removed_at=state.removed_at,
            last_complete_at=state.last_complete_at,
        )

    def pairs(self) -> list[tuple[int, str]]:
        return sorted(self.states)


def replay(scrapes: Iterable[Any]) -> ReferenceCache:
    """A reference with ``scrapes`` applied in order (``("removed", event, bookmaker, at)``
    tuples stand for :meth:`ReferenceCache.mark_event_removed`)."""
    ref = ReferenceCache()
    for s in scrapes:
        if isinstance(s, tuple) and s and s[0] == "removed":
            ref.mark_event_removed(*s[1:])
        else:
            ref.apply(s)
    return ref
