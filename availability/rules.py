"""The availability rules of one scrape, once, in plain Python.

``lua/apply_scrape.lua`` applies these rules atomically in Redis; this module
is their one Python statement, pure (no I/O), for everything that has to
predict or replay them:

* :func:`apply_to_snapshot` -- what one (valid, not stale) scrape does to one
  (event, bookmaker): markets stored or changed, returning markets cleared,
  missing ones stamped once (:func:`availability.detection.detect_availability_changes`),
  and the snapshot's times moved (:func:`advance_meta`). The test suite's
  reference cache is a thin user of it;
* :func:`advance_meta` -- how a scrape moves ``last_scraped_at``,
  ``captured_at``, ``last_confirmed_at`` and ``removed_at``; the flusher
  replays it to build ``availability_snapshots`` rows;
* :func:`meta_hash` -- the meta hash exactly as the script writes it (field
  names from :data:`availability.keys.META_SNAPSHOT_FIELDS`); warm-up restores
  it from PostgreSQL.

Validation, staleness and exact re-delivery (``duplicate``) are decided
before these rules run, by :class:`~availability.cache.MarketCache` and the script.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable, Mapping, Protocol

from availability.detection import detect_availability_changes
from availability.keys import META_SNAPSHOT_FIELDS
from availability.model import CachedMarket, MarketKey, decode_market, encode_market, format_ts, key_sort_order, to_micros

__all__ = ["SnapshotTimes", "SnapshotState", "Applied", "advance_meta", "apply_to_snapshot", "meta_hash"]


class SnapshotTimes(Protocol):
    """Anything holding a snapshot's four times (a state, a PostgreSQL row being built)."""

    last_scraped_at: datetime | None
    captured_at: datetime | None
    last_confirmed_at: datetime | None
    removed_at: datetime | None
    last_complete_at: datetime | None


@dataclass
class SnapshotState:
    """One event at one bookmaker, as the cache holds it."""

    markets: dict[MarketKey, CachedMarket] = field(default_factory=dict)
    last_scraped_at: datetime | None = None
    captured_at: datetime | None = None
    last_confirmed_at: datetime | None = None
    removed_at: datetime | None = None
    last_complete_at: datetime | None = None  # newest complete scrape: it listed every market it left available


@dataclass(frozen=True)
class Applied:
    """What one applied scrape did (the counts and keys of an ``applied`` outcome)."""

    became_unavailable: tuple[MarketKey, ...] = ()
    became_available: tuple[MarketKey, ...] = ()
    new: int = 0
    changed: int = 0
    unchanged: int = 0


def advance_meta(
    times: SnapshotTimes, at: datetime, *, odds_changed: bool, listed_markets: bool, removed: bool,
    complete: bool = False,
) -> None:
    """Move a snapshot's times for a scrape at ``at``, as the script does.

    ``odds_changed``: a market was new or its odds changed (``captured_at``);
    ``listed_markets``: the scrape listed markets (``last_confirmed_at``, and the
    event is listed again: ``removed_at`` cleared); ``removed``: the event was
    seen gone from the listing (``removed_at``, only the first time); ``complete``:
    a complete scrape (``last_complete_at``: it listed every market it left available)."""
    times.last_scraped_at = at
    if odds_changed:
        times.captured_at = at
    if listed_markets:
        times.last_confirmed_at = at
        times.removed_at = None
    if removed and times.removed_at is None:
        times.removed_at = at
    if complete and listed_markets:
        times.last_complete_at = at


def _sorted(keys: list[MarketKey]) -> tuple[MarketKey, ...]:
    return tuple(sorted(keys, key=key_sort_order))


def apply_to_snapshot(
    state: SnapshotState,
    at: datetime,
    merged: Mapping[MarketKey, CachedMarket],
    *,
    complete: bool,
    removed: bool = False,
    held: Iterable[MarketKey] = (),
) -> Applied:
    """Apply one scrape (its markets merged by key) to ``state``, in place.

    Present markets are stored in their canonical form and cleared if they
    were unavailable; only a ``complete`` scrape stamps the missing ones, each
    once (a stamp is never moved).

    ``held``: keys of quarantined markets whose key could be read (docs/rules.md):
    present with their stored market kept -- never stamped, cleared if they
    were unavailable, counted in none of new/changed/unchanged -- and nothing
    at all when none is stored (no market out of nothing)."""
    previous = list(state.markets.values())
    new = changed = unchanged = 0
    became_available: list[MarketKey] = []
    for key, market in merged.items():
        old = state.markets.get(key)
        if old is None:
            new += 1
        elif encode_market(old) != encode_market(market):
            changed += 1
        else:
            unchanged += 1
        if old is not None and old.unavailable_at is not None:
            became_available.append(key)
        state.markets[key] = decode_market(encode_market(market), None)  # as the cache stores it
    kept: list[CachedMarket] = []  # held markets with a stored market: present as stored
    held = tuple(held)
    for key in held:
        old = state.markets.get(key)
        if old is None:
            continue
        if old.unavailable_at is not None:
            became_available.append(key)
        state.markets[key] = dataclasses.replace(old, unavailable_at=None)
        kept.append(old)
    became_unavailable: list[MarketKey] = []
    if complete:
        stamped, cleared, _ = detect_availability_changes(previous, [*merged.values(), *kept], at)
        if _sorted([m.key for m in cleared]) != _sorted(became_available):  # pragma: no cover - one rule, two views
            raise AssertionError("detection and the merge disagree on which markets returned")
        for market in stamped:
            state.markets[market.key] = dataclasses.replace(market, unavailable_at=at)
            became_unavailable.append(market.key)
    advance_meta(state, at, odds_changed=bool(new or changed), listed_markets=bool(merged or held),
                 removed=removed, complete=complete and not removed)
    return Applied(_sorted(became_unavailable), _sorted(became_available), new, changed, unchanged)


def meta_hash(
    event_id: int,
    bookmaker: str,
    times: SnapshotTimes,
    *,
    markets: int,
    unavailable: int,
    kickoff: datetime | None = None,
) -> dict[str, str]:
    """The meta hash of a snapshot as ``apply_scrape.lua`` leaves it (without the
    expiry and re-delivery fields, which only the script keeps)."""
    if times.last_scraped_at is None:
        raise ValueError(f"last_scraped_at: event {event_id} at {bookmaker} was never scraped: no meta hash")
    values = {
        "event_id": str(event_id),
        "bookmaker": bookmaker,
        "last_scraped_us": str(to_micros(times.last_scraped_at)),
        "last_scraped_at": format_ts(times.last_scraped_at),
        "markets": str(markets),
        "unavailable": str(unavailable),
        "captured_at": format_ts(times.captured_at) if times.captured_at is not None else None,
        "last_confirmed_at": format_ts(times.last_confirmed_at) if times.last_confirmed_at is not None else None,
        "removed_at": format_ts(times.removed_at) if times.removed_at is not None else None,
        "kickoff_us": str(to_micros(kickoff)) if kickoff is not None else None,
        "last_complete_us": str(to_micros(times.last_complete_at)) if times.last_complete_at is not None else None,
    }
    return {name: values[name] for name in META_SNAPSHOT_FIELDS if values[name] is not None}
