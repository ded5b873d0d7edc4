"""Where scrapers hand their results to the cache.

A scraper fetches a batch of events from a bookmaker (50 at a time in
production), some of which fail. :meth:`EventCoordinator.store_batch_results`
applies the successful ones in one pipelined round trip and counts the rest;
:meth:`EventCoordinator.reconcile_listing` stamps events that vanished from a
bookmaker's listing, and refuses to when the listing itself was not fetched.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping, Sequence

from availability.cache import (
    APPLIED,
    COLD,
    DUPLICATE,
    ERROR,
    IGNORED_EMPTY,
    INVALID,
    STALE,
    MarketCache,
    Scrape,
    ScrapeOutcome,
)
from availability.errors import InvalidScrape
from availability.keys import validate_bookmaker
from availability.logs import get_logger
from availability.model import to_utc

__all__ = ["EventCoordinator", "ScrapeResult", "BatchSummary"]

log = get_logger("availability.coordinator")


@dataclass(frozen=True)
class ScrapeResult:
    """One fetch of one event at one bookmaker, successful or not.

    ``markets=None`` or ``error`` set means the fetch failed: it says nothing
    about which markets disappeared and is skipped (and counted).
    """

    event_id: int
    bookmaker: str
    markets: Sequence[Any] | None
    scraped_at: datetime
    error: BaseException | str | None = None
    complete: bool = True
    confirmed_empty: bool = False
    kickoff: datetime | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None or self.markets is None


@dataclass
class BatchSummary:
    """Counts over one batch; ``outcomes`` line up with the successful fetches."""

    results: int = 0
    failed_fetches: int = 0
    applied: int = 0
    stale: int = 0
    duplicates: int = 0  # re-deliveries of an applied scrape (a retry): counted once, by the application
    ignored_empty: int = 0
    invalid: int = 0
    errors: int = 0
    cold: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    became_unavailable: int = 0
    became_available: int = 0
    rejected_markets: int = 0  # markets quarantined by applied scrapes (ScrapeOutcome.rejected)
    partial: int = 0  # applied scrapes that stamped nothing: complete=False, or a market key unreadable
    outcomes: list[ScrapeOutcome] = field(default_factory=list)

    def add(self, outcome: ScrapeOutcome) -> None:
        self.outcomes.append(outcome)
        counter = {APPLIED: "applied", DUPLICATE: "duplicates", STALE: "stale", IGNORED_EMPTY: "ignored_empty",
                   INVALID: "invalid", ERROR: "errors", COLD: "cold"}[outcome.status]
        setattr(self, counter, getattr(self, counter) + 1)
        if outcome.status == DUPLICATE:  # what it did was counted when it was applied
            return
        self.new += outcome.new
        self.changed += outcome.changed
        self.unchanged += outcome.unchanged
        self.became_unavailable += len(outcome.became_unavailable)
        self.became_available += len(outcome.became_available)
        if outcome.status == APPLIED:
            self.rejected_markets += len(outcome.rejected)
            self.partial += outcome.partial

    def counts(self) -> dict[str, int]:
        return {k: v for k, v in self.__dict__.items() if isinstance(v, int)}


class EventCoordinator:
    """Feeds scrape results into a :class:`MarketCache`.

    ``retention``: when given, an event's keys expire ``retention`` after its
    kickoff (results without ``kickoff`` never expire).
    """

    def __init__(self, cache: MarketCache, *, retention: timedelta | None = None) -> None:
        self.cache = cache
        self.retention = retention

    def _scrape(self, result: ScrapeResult) -> Scrape:
        expires_at = None
        if self.retention is not None and result.kickoff is not None:
            if not isinstance(result.kickoff, datetime):
                raise InvalidScrape(f"kickoff: expected a datetime or None, got {result.kickoff!r}")
            expires_at = result.kickoff + self.retention
        return Scrape(
            event_id=result.event_id,
            bookmaker=result.bookmaker,
            markets=result.markets if result.markets is not None else [],
            scraped_at=result.scraped_at,
            complete=result.complete,
            confirmed_empty=result.confirmed_empty,
            expires_at=expires_at,
            kickoff=result.kickoff,
        )

    @staticmethod
    def _result(raw: Any, index: int) -> ScrapeResult:
        """``raw`` as a :class:`ScrapeResult`; a mapping must have exactly its field names."""
        if isinstance(raw, ScrapeResult):
            return raw
        if not isinstance(raw, Mapping):
            raise InvalidScrape(
                f"results[{index}]: expected a ScrapeResult or a mapping of its fields, got {raw!r}"
            )
        names = [f.name for f in dataclasses.fields(ScrapeResult)]
        required = [f.name for f in dataclasses.fields(ScrapeResult)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        unknown = [k for k in raw if k not in names]
        if unknown:
            raise InvalidScrape(
                f"results[{index}]: unknown key {unknown[0]!r} (expected {', '.join(names)})"
            )
        missing = [k for k in required if k not in raw]
        if missing:
            raise InvalidScrape(f"results[{index}]: missing key {missing[0]!r} (required: {', '.join(required)})")
        return ScrapeResult(**raw)

    async def store_batch_results(
        self, results: Iterable[ScrapeResult | Mapping[str, Any]], *, strict: bool = False
    ) -> BatchSummary:
        """Apply one batch of scrape results with :meth:`MarketCache.apply_batch`.

        Failed fetches are skipped for detection and counted; a bad market is
        quarantined (``outcome.rejected``, counted in ``rejected_markets``) and
        the rest of its scrape applies, unless ``strict=True`` makes it refuse
        the whole scrape. One invalid
        result is reported in its own outcome without blocking the others --
        including a mapping with a missing or unknown key, or anything that is
        neither a :class:`ScrapeResult` nor a mapping. ``outcomes`` follow the
        order of ``results``, failed fetches left out.
        Logs ``availability_detection.changes`` with the counts.
        """
        summary = BatchSummary()
        # per result: a Scrape to apply, or the invalid outcome it already has
        slots: list[Scrape | ScrapeOutcome] = []
        for index, raw in enumerate(results):
            summary.results += 1
            try:
                result = self._result(raw, index)
                if result.failed:
                    summary.failed_fetches += 1
                    continue
                slots.append(self._scrape(result))
            except InvalidScrape as exc:
                get = raw.get if isinstance(raw, Mapping) else (lambda name: getattr(raw, name, None))
                event_id, bookmaker = get("event_id"), get("bookmaker")
                slots.append(ScrapeOutcome(
                    event_id if isinstance(event_id, int) and not isinstance(event_id, bool) else None,
                    bookmaker if isinstance(bookmaker, str) else None,
                    None, INVALID, error=exc,
                ))
        applied = iter(await self.cache.apply_batch([s for s in slots if isinstance(s, Scrape)], strict=strict))
        for slot in slots:
            outcome = next(applied) if isinstance(slot, Scrape) else slot
            summary.add(outcome)
            if outcome.status in (INVALID, ERROR, COLD):
                log.warning(
                    "availability_detection.scrape_refused",
                    event_id=outcome.event_id,
                    bookmaker=outcome.bookmaker,
                    status=outcome.status,
                    error=str(outcome.error),
                )
        log.info(
            "availability_detection.changes",
            became_unavailable=summary.became_unavailable,
            became_available=summary.became_available,
            applied=summary.applied,
            stale=summary.stale,
            failed_fetches=summary.failed_fetches,
            invalid=summary.invalid,
            rejected_markets=summary.rejected_markets,
            new=summary.new,
            changed=summary.changed,
        )
        return summary

    async def cached_events(self, bookmaker: str) -> list[int]:
        """Every event cached for this bookmaker, across all shards."""
        validate_bookmaker(bookmaker)
        events: list[int] = []
        for shard in self.cache.keys.all_shards():
            events += [e for e, b in await self.cache.list_snapshots(shard) if b == bookmaker]
        return sorted(events)

    async def reconcile_listing(
        self,
        bookmaker: str,
        listed_event_ids: Iterable[int],
        at: datetime,
        *,
        listing_ok: bool = True,
    ) -> list[ScrapeOutcome]:
        """Stamp the markets of cached events that are no longer in the bookmaker's listing.

        Only a listing that was fetched completely says what vanished: with
        ``listing_ok=False``, or an empty listing (a failed discovery looks
        exactly like that), nothing is stamped (failure 8 of the old system).
        """
        at = to_utc(at, "at")
        listed = set(listed_event_ids)
        if not listing_ok or not listed:
            log.warning("availability_detection.listing_skipped", bookmaker=bookmaker,
                        listing_ok=listing_ok, listed=len(listed))
            return []
        gone = [e for e in await self.cached_events(bookmaker) if e not in listed]
        if not gone:
            return []
        outcomes = await self.cache.apply_batch(
            [], removed=[Scrape(e, bookmaker, [], at, True, True) for e in gone]
        )
        stamped = sum(len(o.became_unavailable) for o in outcomes)
        log.info("availability_detection.events_removed", bookmaker=bookmaker, events=len(gone),
                 became_unavailable=stamped)
        return outcomes
