"""The drawing model of a timeline: per market a row, per bookmaker a lane of
intervals (offered, unavailable, not recorded), built from what PostgreSQL holds.

Pure: :func:`build_timeline` takes the comparison, the transitions and the
first-seen times :meth:`~availability.reader.AvailabilityReader.timeline` read;
:mod:`availability.timeline.render` draws the result."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from availability.db.models import BECAME_AVAILABLE, BECAME_UNAVAILABLE
from availability.errors import AvailabilityError
from availability.model import MarketKey, format_ts, key_to_field
from availability.reader import (
    NEVER_OFFERED,
    UNAVAILABLE,
    BookmakerStatus,
    EventComparison,
    MarketFilter,
    MarketState,
    Transition,
)

__all__ = ["OFFERED", "GAP", "UNRECORDED", "Interval", "Lane", "TimelineRow", "EventTimeline", "TimelineError",
           "build_timeline"]

class TimelineError(AvailabilityError):
    """The timeline could not be rendered (no browser, the browser failed)."""


OFFERED = "offered"
GAP = "unavailable"
UNRECORDED = "unrecorded"


@dataclass(frozen=True)
class Interval:
    """One stretch of a lane: ``kind`` is ``offered`` (a bar), ``unavailable`` (a
    gap) or ``unrecorded`` (before the first time the market is known to have
    been offered: nothing stored says whether it was).

    ``latest`` marks the lane's last interval, the one that lasts until now;
    ``outcomes`` (current or last odds) are set on it only.
    """

    start: datetime
    end: datetime
    kind: str
    latest: bool = False
    outcomes: tuple[tuple[str, float, bool], ...] = ()

    @property
    def offered(self) -> bool:
        return self.kind == OFFERED


@dataclass(frozen=True)
class Lane:
    bookmaker: str
    state: MarketState
    intervals: tuple[Interval, ...]

    @property
    def had_gap(self) -> bool:
        return any(i.kind == GAP for i in self.intervals)


@dataclass(frozen=True)
class TimelineRow:
    key: MarketKey
    name: str
    lanes: tuple[Lane, ...]

    @property
    def field(self) -> str:
        return key_to_field(self.key)

    @property
    def has_gaps(self) -> bool:
        """Unavailable at some time at some bookmaker."""
        return any(lane.had_gap for lane in self.lanes)


@dataclass(frozen=True)
class EventTimeline:
    event_id: int
    start: datetime
    end: datetime
    bookmakers: tuple[BookmakerStatus, ...]
    rows: tuple[TimelineRow, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "start": format_ts(self.start),
            "end": format_ts(self.end),
            "bookmakers": [b.as_dict() for b in self.bookmakers],
            "rows": [
                {
                    "key": r.field,
                    "name": r.name,
                    "lanes": {
                        lane.bookmaker: [
                            {"start": format_ts(i.start), "end": format_ts(i.end),
                             "kind": i.kind}
                            for i in lane.intervals
                        ]
                        for lane in r.lanes
                    },
                }
                for r in self.rows
            ],
        }


# ---------------------------------------------------------------- intervals


def build_timeline(
    comparison: EventComparison,
    transitions: Iterable[Transition],
    first_seen: dict[tuple[str, MarketKey], datetime],
    *,
    markets: Sequence[MarketFilter] = (),
    gaps_only: bool = False,
) -> EventTimeline:
    """Intervals per market and bookmaker, from the history, the current state
    and ``first_seen`` (per ``(bookmaker, key)``: the row's ``captured_at``)."""
    per_lane: dict[tuple[str, MarketKey], list[Transition]] = {}
    times: list[datetime] = list(first_seen.values())
    for t in sorted(transitions, key=lambda t: t.at):
        per_lane.setdefault((t.bookmaker, t.key), []).append(t)
        times.append(t.at)
    for b in comparison.bookmakers:
        times += [x for x in (b.last_scraped_at, b.removed_at) if x is not None]
    for m in comparison.markets:
        times += [s.unavailable_since for s in m.states if s.unavailable_since is not None]
    if not times:
        raise TimelineError(f"event {comparison.event_id}: nothing recorded, no timeline to draw")
    start, end = min(times), max(times)
    lane_start: dict[str, datetime] = {}
    for (b, _), at in first_seen.items():
        lane_start[b] = min(at, lane_start.get(b, at))
    for (b, _), ts in per_lane.items():
        lane_start[b] = min(ts[0].at, lane_start.get(b, ts[0].at))

    rows = []
    for m in comparison.markets:
        if markets and not any(f.matches(m.key) for f in markets):
            continue
        lanes = tuple(
            Lane(s.bookmaker, s, _intervals(s, per_lane.get((s.bookmaker, m.key), []),
                                            first_seen.get((s.bookmaker, m.key)),
                                            lane_start.get(s.bookmaker, start), end))
            for s in m.states
        )
        row = TimelineRow(m.key, m.name, lanes)
        if gaps_only and not row.has_gaps:
            continue
        rows.append(row)
    return EventTimeline(comparison.event_id, start, end, comparison.bookmakers, tuple(rows))


def _intervals(state: MarketState, history: list[Transition], first_seen: datetime | None,
               lane_start: datetime, end: datetime) -> tuple[Interval, ...]:
    if state.status == NEVER_OFFERED and not history:
        return ()
    out: list[Interval] = []
    offered = not (history and history[0].transition == BECAME_AVAILABLE)
    first_at = history[0].at if history else None
    known = [x for x in (first_seen, first_at) if x is not None]
    cur_start = min(known) if known else (state.unavailable_since or lane_start)
    if cur_start > lane_start:
        out.append(Interval(lane_start, cur_start, UNRECORDED))

    def close(at: datetime) -> None:
        out.append(Interval(cur_start, max(at, cur_start), OFFERED if offered else GAP))

    for t in history:
        if t.transition == BECAME_UNAVAILABLE and offered:
            close(t.at)
            offered, cur_start = False, t.at
        elif t.transition == BECAME_AVAILABLE and not offered:
            close(t.at)
            offered, cur_start = True, t.at
    # the current state has the last word (history rows are written in the same
    # transactions, so this only matters where the history was cut short)
    since = state.unavailable_since
    if state.status == UNAVAILABLE and offered and since is not None and since >= cur_start:
        close(since)
        offered, cur_start = False, since
    out.append(Interval(cur_start, max(end, cur_start), OFFERED if offered else GAP, latest=True,
                        outcomes=state.outcomes))
    # zero-length bars (a market first known at the instant it went missing) say nothing
    return tuple(i for i in out if i.end > i.start or i.latest)
