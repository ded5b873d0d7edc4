"""A synthetic bookmaker feed with the production profile of docs/domain.md.

Deterministic and pure: every answer is a function of ``(seed, cycle, event,
bookmaker)`` only, computed with a counter-based hash (no shared random
state), so any process can ask for any cycle in any order and get the same
scrape. The demo's workers use it to scrape, and the demo itself uses it to
compute what the cache must end up holding.

What a cycle looks like, per bookmaker:

* a **listing** (event discovery) that now and then fails (``ok=False``) and
  from which events leave for a few cycles and come back;
* one **scrape** per listed event: ~170 markets at BetPawa, ~72 at each
  competitor (``market_scale`` shrinks both), ~5% of them with new odds,
  ~0.05% suspended (every outcome ``is_active=False``: still listed, not
  unavailable), specialised markets (corners, bookings, ...) listed only
  15-30% of the time, correct-score rows split over two rows with the same
  key, and the failures the old system tripped over: failed fetches
  (``error`` set), empty pages from a flaky endpoint (``markets=[]``) and
  partial pages (``complete=False``).
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Iterable, Sequence

from availability.coordinator import ScrapeResult
from availability.model import CachedMarket, MarketKey, market_key, market_to_dict

__all__ = ["BOOKMAKERS", "CATALOG", "Feed", "FeedConfig", "Listing", "MarketSpec"]

UTC = timezone.utc
HOME = "betpawa"
BOOKMAKERS: tuple[str, ...] = ("betpawa", "sportybet", "bet9ja")

# Share of events each bookmaker lists (1,120 / 1,290 / 1,220 of ~1,300).
_LISTED_SHARE = {"betpawa": 0.86, "sportybet": 0.99, "bet9ja": 0.94}


# ---------------------------------------------------------------- counter-based hashing

_MASK = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64 finaliser: a cheap, well-spread 64-bit hash step."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _hash(*parts: int) -> int:
    # CPython hashes a tuple of ints the same in every process (PYTHONHASHSEED
    # only salts str and bytes); one splitmix step spreads it over 64 bits.
    return _mix(hash(parts) & _MASK)


def _unit(*parts: int) -> float:
    """A uniform float in [0, 1) determined by ``parts``."""
    return (_mix(hash(parts) & _MASK) >> 11) * (1.0 / (1 << 53))


def _sid(text: str) -> int:
    """A stable integer for a string (``hash()`` of a str changes per process)."""
    return zlib.crc32(text.encode())


# One stream per purpose, so e.g. the odds never correlate with the fetch failures.
(_S_EVENT, _S_LISTED, _S_DELIST, _S_DISCOVERY, _S_FETCH, _S_TIME, _S_OFFER, _S_WINDOW,
 _S_CHANGE, _S_ODDS, _S_SUSPEND, _S_SPLIT, _S_PARTIAL, _S_SCALE) = range(1, 15)


# ---------------------------------------------------------------- the market catalog


@dataclass(frozen=True)
class MarketSpec:
    """One market a bookmaker may offer: a market id at one line."""

    betpawa_market_id: str
    name: str
    line: float | None
    outcomes: tuple[str, ...]
    handicap_type: str | None
    groups: tuple[str, ...]
    specialised: bool
    competitors: bool  # offered by the competitors too (BetPawa offers everything)
    core: bool  # kept at any market_scale

    @property
    def key(self) -> MarketKey:
        return market_key(self.betpawa_market_id, self.line)


def _steps(first: float, last: float, step: float) -> list[float]:
    count = int(round((last - first) / step)) + 1
    return [round(first + i * step, 2) + 0.0 for i in range(count)]


def _family(
    market_id: str,
    name: str,
    outcomes: Sequence[str],
    lines: Sequence[float | None] = (None,),
    *,
    competitor_lines: Sequence[float | None] | None = None,
    handicap: str | None = None,
    groups: Sequence[str] = ("main",),
    specialised: bool = False,
    core_lines: Sequence[float | None] = (),
) -> list[MarketSpec]:
    shared = set(competitor_lines or ())
    return [
        MarketSpec(market_id, name, line, tuple(outcomes), handicap, tuple(groups), specialised,
                   line in shared, line in core_lines)
        for line in lines
    ]


_SCORES = [f"{h}:{a}" for h in range(5) for a in range(5)] + ["Other"]
_PLAYERS = ["Player A", "Player B", "Player C", "Player D", "Player E", "No goalscorer"]


def _catalog() -> tuple[MarketSpec, ...]:
    """~170 BetPawa markets per event, ~72 of them also at the competitors."""
    ou = _steps(0.5, 7.5, 1.0)
    ah = _steps(-4.0, 4.0, 0.25)  # includes the 0.0 handicap: a real line, not "no line"
    eh = [-3.0, -2.0, -1.0, 1.0, 2.0, 3.0]
    specs: list[MarketSpec] = []
    specs += _family("1", "1X2", ["1", "X", "2"], competitor_lines=[None], core_lines=[None])
    specs += _family("10", "Double Chance", ["1X", "12", "X2"], competitor_lines=[None])
    specs += _family("11", "Both Teams To Score", ["Yes", "No"], competitor_lines=[None], groups=["main", "goals"])
    specs += _family("12", "Draw No Bet", ["1", "2"], competitor_lines=[None])
    specs += _family("18", "Over/Under", ["Over", "Under"], ou, competitor_lines=ou,
                     groups=["main", "goals"], core_lines=[2.5])
    quarter = [x for x in _steps(0.75, 5.25, 0.25) if x % 1 != 0.5]
    specs += _family("17", "Asian Over/Under", ["Over", "Under"], quarter,
                     competitor_lines=[1.75, 2.25, 2.75], groups=["goals", "asian"])
    specs += _family("16", "Asian Handicap", ["1", "2"], ah, competitor_lines=_steps(-2.5, 2.5, 0.5),
                     handicap="asian", groups=["handicap", "asian"], core_lines=[0.0])
    specs += _family("14", "Handicap", ["1", "X", "2"], eh, competitor_lines=eh, handicap="european",
                     groups=["handicap"])
    specs += _family("60", "1st Half - 1X2", ["1", "X", "2"], competitor_lines=[None], groups=["half"])
    specs += _family("68", "1st Half - Over/Under", ["Over", "Under"], _steps(0.5, 3.5, 1.0),
                     competitor_lines=_steps(0.5, 3.5, 1.0), groups=["half", "goals"])
    specs += _family("66", "1st Half - Asian Handicap", ["1", "2"], _steps(-1.5, 1.5, 0.25),
                     competitor_lines=_steps(-1.5, 1.5, 0.5), handicap="asian", groups=["half", "handicap"])
    specs += _family("62", "1st Half - Both Teams To Score", ["Yes", "No"], groups=["half"])
    specs += _family("90", "2nd Half - 1X2", ["1", "X", "2"], competitor_lines=[None], groups=["half"])
    specs += _family("91", "2nd Half - Over/Under", ["Over", "Under"], _steps(0.5, 3.5, 1.0),
                     competitor_lines=_steps(0.5, 3.5, 1.0), groups=["half", "goals"])
    specs += _family("92", "2nd Half - Asian Handicap", ["1", "2"], _steps(-1.5, 1.5, 0.25),
                     handicap="asian", groups=["half", "handicap"])
    specs += _family("19", "Home Team Over/Under", ["Over", "Under"], _steps(0.5, 4.5, 1.0),
                     competitor_lines=_steps(0.5, 3.5, 1.0), groups=["goals"])
    specs += _family("20", "Away Team Over/Under", ["Over", "Under"], _steps(0.5, 4.5, 1.0),
                     competitor_lines=_steps(0.5, 3.5, 1.0), groups=["goals"])
    specs += _family("45", "Correct Score", _SCORES, competitor_lines=[None], groups=["score"])
    specs += _family("47", "Halftime/Fulltime", [f"{a}/{b}" for a in "1X2" for b in "1X2"],
                     competitor_lines=[None], groups=["half"])
    specs += _family("8", "Exact Goals", ["0", "1", "2", "3", "4", "5", "6+"], competitor_lines=[None],
                     groups=["goals"])
    specs += _family("29", "Odd/Even", ["Odd", "Even"], competitor_lines=[None], groups=["goals"])
    specs += _family("36", "Over/Under & Both Teams To Score", ["Over & Yes", "Over & No", "Under & Yes", "Under & No"],
                     _steps(1.5, 4.5, 1.0), groups=["combo"])
    specs += _family("37", "1X2 & Over/Under", ["1 & Over", "X & Over", "2 & Over", "1 & Under", "X & Under", "2 & Under"],
                     _steps(1.5, 4.5, 1.0), competitor_lines=[1.5, 2.5, 3.5], groups=["combo"])
    specs += _family("41", "First Goal", ["1", "None", "2"], competitor_lines=[None])
    specs += _family("52", "Clean Sheet - Home", ["Yes", "No"], competitor_lines=[None])
    specs += _family("53", "Clean Sheet - Away", ["Yes", "No"], competitor_lines=[None])
    specs += _family("58", "Winning Margin", ["1 by 1", "1 by 2", "1 by 3+", "X", "2 by 1", "2 by 2", "2 by 3+"])
    specs += _family("59", "Highest Scoring Half", ["1st", "2nd", "Equal"])
    specs += _family("184", "Multigoals", ["1-2", "1-3", "2-3", "2-4", "3-5", "4-6"], groups=["goals"])
    half_scores = [f"{h}:{a}" for h in range(3) for a in range(3)] + ["Other"]
    asian_half = [0.75, 1.0, 1.25, 1.75, 2.0, 2.25]
    specs += _family("63", "1st Half - Double Chance", ["1X", "12", "X2"], competitor_lines=[None], groups=["half"])
    specs += _family("93", "2nd Half - Double Chance", ["1X", "12", "X2"], competitor_lines=[None], groups=["half"])
    specs += _family("64", "1st Half - Correct Score", half_scores, competitor_lines=[None], groups=["half", "score"])
    specs += _family("69", "1st Half - Exact Goals", ["0", "1", "2", "3+"], competitor_lines=[None], groups=["half"])
    specs += _family("94", "2nd Half - Both Teams To Score", ["Yes", "No"], groups=["half"])
    specs += _family("65", "1st Half - Odd/Even", ["Odd", "Even"], groups=["half"])
    specs += _family("61", "1st Half - 1X2 & Over/Under", ["1 & Over", "X & Over", "2 & Over", "1 & Under", "X & Under", "2 & Under"],
                     _steps(0.5, 2.5, 1.0), groups=["half", "combo"])
    specs += _family("67", "1st Half - Asian Over/Under", ["Over", "Under"], asian_half, groups=["half", "asian"])
    specs += _family("97", "2nd Half - Asian Over/Under", ["Over", "Under"], asian_half, groups=["half", "asian"])
    specs += _family("70", "1st Half - Home Team Over/Under", ["Over", "Under"], [0.5, 1.5], groups=["half"])
    specs += _family("71", "1st Half - Away Team Over/Under", ["Over", "Under"], [0.5, 1.5], groups=["half"])
    specs += _family("21", "Home Team Exact Goals", ["0", "1", "2", "3+"], groups=["goals"])
    specs += _family("22", "Away Team Exact Goals", ["0", "1", "2", "3+"], groups=["goals"])
    specs += _family("54", "Home Win To Nil", ["Yes", "No"], competitor_lines=[None])
    specs += _family("55", "Away Win To Nil", ["Yes", "No"], competitor_lines=[None])
    specs += _family("56", "Home Team To Score In Both Halves", ["Yes", "No"])
    specs += _family("57", "Away Team To Score In Both Halves", ["Yes", "No"])
    specs += _family("38", "Double Chance & Over/Under", ["1X & Over", "12 & Over", "X2 & Over", "1X & Under", "12 & Under", "X2 & Under"],
                     _steps(1.5, 4.5, 1.0), competitor_lines=[2.5], groups=["combo"])
    specs += _family("39", "1X2 & Both Teams To Score", ["1 & Yes", "X & Yes", "2 & Yes", "1 & No", "X & No", "2 & No"],
                     competitor_lines=[None], groups=["combo"])
    specs += _family("40", "Double Chance & Both Teams To Score", ["1X & Yes", "12 & Yes", "X2 & Yes", "1X & No", "12 & No", "X2 & No"],
                     groups=["combo"])
    specs += _family("42", "Last Goal", ["1", "None", "2"], competitor_lines=[None])
    specs += _family("43", "Time Of First Goal", ["1-15", "16-30", "31-45", "46-60", "61-75", "76-90", "None"])
    specs += _family("44", "To Win Either Half", ["1", "2"])
    specs += _family("46", "To Win Both Halves", ["1", "2"])
    # Specialised markets: listed only part of an event's lifetime.
    spec = dict(specialised=True)
    specs += _family("166", "Total Corners", ["Over", "Under"], _steps(6.5, 13.5, 1.0),
                     competitor_lines=_steps(8.5, 11.5, 1.0), groups=["corners"], **spec)
    specs += _family("165", "Corner Handicap", ["1", "2"], _steps(-4.5, 4.5, 1.0), handicap="asian",
                     groups=["corners"], **spec)
    specs += _family("146", "Corners 1X2", ["1", "X", "2"], competitor_lines=[None], groups=["corners"], **spec)
    specs += _family("151", "1st Half - Total Corners", ["Over", "Under"], _steps(3.5, 6.5, 1.0),
                     groups=["corners", "half"], **spec)
    specs += _family("167", "Home Team Corners", ["Over", "Under"], _steps(2.5, 6.5, 1.0), groups=["corners"], **spec)
    specs += _family("168", "Away Team Corners", ["Over", "Under"], _steps(2.5, 6.5, 1.0), groups=["corners"], **spec)
    specs += _family("139", "Total Bookings", ["Over", "Under"], _steps(1.5, 7.5, 1.0),
                     competitor_lines=_steps(3.5, 5.5, 1.0), groups=["bookings"], **spec)
    specs += _family("169", "Corners Odd/Even", ["Odd", "Even"], groups=["corners"], **spec)
    specs += _family("170", "First Corner", ["1", "None", "2"], groups=["corners"], **spec)
    specs += _family("171", "Race To 5 Corners", ["1", "Neither", "2"], groups=["corners"], **spec)
    specs += _family("140", "Home Team Bookings", ["Over", "Under"], _steps(0.5, 3.5, 1.0), groups=["bookings"], **spec)
    specs += _family("141", "Away Team Bookings", ["Over", "Under"], _steps(0.5, 3.5, 1.0), groups=["bookings"], **spec)
    specs += _family("174", "First Goalscorer", _PLAYERS, groups=["players"], **spec)
    specs += _family("175", "Last Goalscorer", _PLAYERS, groups=["players"], **spec)
    specs += _family("143", "Penalty Awarded", ["Yes", "No"], groups=["specials"], **spec)
    specs += _family("173", "Anytime Goalscorer", _PLAYERS, groups=["players"], **spec)
    return tuple(specs)


CATALOG: tuple[MarketSpec, ...] = _catalog()


# ---------------------------------------------------------------- configuration and results


@dataclass(frozen=True)
class FeedConfig:
    """The feed's profile. Rates are per cycle; the defaults follow docs/domain.md,
    with the rare failures made frequent enough to show up in a short demo."""

    seed: int = 1
    events: int = 60
    market_scale: float = 1.0  # 1.0: ~170 BetPawa / ~72 competitor markets per event
    first_event_id: int = 1_000_001
    start: datetime = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    interval: timedelta = timedelta(minutes=5)
    bookmakers: tuple[str, ...] = BOOKMAKERS
    odds_change_rate: float = 0.05
    suspension_rate: float = 0.0005
    specialised_share: tuple[float, float] = (0.15, 0.30)  # of an event's lifetime
    specialised_period: int = 8  # cycles; a specialised market is listed for one window of each period
    offer_share: float = 0.95  # of the catalog an event gets at a bookmaker (the core always)
    failed_fetch_rate: float = 0.015
    empty_page_rate: float = 0.006
    partial_page_rate: float = 0.01
    split_rows_rate: float = 0.02  # a market's outcomes split over two rows (always for bet9ja's correct score)
    delist_share: float = 0.15  # of (event, bookmaker) pairs that leave the listing for a while
    delist_period: int = 10
    failed_listing_rate: float = 0.08

    def __post_init__(self) -> None:
        if self.events < 1:
            raise ValueError(f"events: expected at least 1, got {self.events!r}")
        if not 0 < self.market_scale <= 1:
            raise ValueError(f"market_scale: expected a number in (0, 1], got {self.market_scale!r}")
        if self.start.tzinfo is None:
            raise ValueError(f"start: expected a timezone-aware datetime, got {self.start!r}")


@dataclass(frozen=True)
class Listing:
    """What event discovery returned for one bookmaker in one cycle.

    ``ok=False``: discovery failed and ``event_ids`` is empty, which must not
    be read as "every event left" (failure 8 of the old system).
    """

    bookmaker: str
    cycle: int
    at: datetime
    event_ids: tuple[int, ...]
    ok: bool = True


@dataclass(frozen=True)
class _Fetch:
    kind: str  # "ok", "failed", "empty", "partial"
    scraped_at: datetime


@dataclass
class Feed:
    """Ask it for listings and scrapes of any cycle, in any order."""

    config: FeedConfig = field(default_factory=FeedConfig)

    def __post_init__(self) -> None:
        c = self.config
        self._seed = c.seed & _MASK
        self._bm = {b: _sid(b) for b in c.bookmakers}
        self._memo: dict[tuple, CachedMarket] = {}
        self._catalog = [
            (spec, _sid(f"{spec.betpawa_market_id}@{spec.line!r}"))
            for spec in CATALOG
            if spec.core or _unit(self._seed, _S_SCALE, _sid(repr(spec.key))) < c.market_scale
        ]

    # ------------------------------------------------------------ time and events

    def event_ids(self) -> list[int]:
        return [self.config.first_event_id + i for i in range(self.config.events)]

    def cycle_start(self, cycle: int) -> datetime:
        """When the cycle's listing was fetched; its scrapes come after, before the next cycle."""
        return self.config.start + cycle * self.config.interval

    def kickoff(self, event_id: int) -> datetime:
        hours = 2 + int(_unit(self._seed, _S_EVENT, event_id) * 70)
        return self.config.start + timedelta(hours=hours)

    # ------------------------------------------------------------ listings

    def is_listed(self, event_id: int, bookmaker: str, cycle: int) -> bool:
        """Whether the bookmaker really lists the event in this cycle."""
        c, b = self.config, self._bm[bookmaker]
        if _unit(self._seed, _S_LISTED, event_id, b) >= _LISTED_SHARE.get(bookmaker, 0.95):
            return False
        if cycle == 0 or _unit(self._seed, _S_DELIST, event_id, b) >= c.delist_share:
            return True
        # Off the listing for a window of 1-3 cycles of every delist_period.
        phase = _hash(self._seed, _S_DELIST, event_id, b, 1) % c.delist_period
        length = 1 + _hash(self._seed, _S_DELIST, event_id, b, 2) % 3
        return (cycle + phase) % c.delist_period >= length

    def discovery_ok(self, bookmaker: str, cycle: int) -> bool:
        return _unit(self._seed, _S_DISCOVERY, self._bm[bookmaker], cycle) >= self.config.failed_listing_rate

    def listing(self, bookmaker: str, cycle: int) -> Listing:
        at = self.cycle_start(cycle)
        if not self.discovery_ok(bookmaker, cycle):
            return Listing(bookmaker, cycle, at, (), ok=False)
        events = tuple(e for e in self.event_ids() if self.is_listed(e, bookmaker, cycle))
        return Listing(bookmaker, cycle, at, events)

    # ------------------------------------------------------------ the true offer

    def _offered(self, spec: MarketSpec, spec_id: int, event_id: int, bookmaker: str, cycle: int) -> bool:
        c, b = self.config, self._bm[bookmaker]
        if bookmaker != HOME and not spec.competitors:
            return False
        if not spec.core and _unit(self._seed, _S_OFFER, event_id, b, spec_id) >= c.offer_share:
            return False
        if not spec.specialised:
            return True
        low, high = c.specialised_share
        share = low + (high - low) * _unit(self._seed, _S_WINDOW, event_id, b, spec_id)
        length = max(1, round(share * c.specialised_period))
        phase = _hash(self._seed, _S_WINDOW, event_id, b, spec_id, 1) % c.specialised_period
        return (cycle + phase) % c.specialised_period < length

    def _version(self, event_id: int, b: int, spec_id: int, cycle: int) -> int:
        """The last cycle at or before ``cycle`` in which the market's odds moved."""
        rate = self.config.odds_change_rate
        for k in range(cycle, max(0, cycle - 400), -1):
            if _unit(self._seed, _S_CHANGE, event_id, b, spec_id, k) < rate:
                return k
        return 0

    def _market(self, spec: MarketSpec, spec_id: int, event_id: int, bookmaker: str, cycle: int) -> CachedMarket:
        b = self._bm[bookmaker]
        version = self._version(event_id, b, spec_id, cycle)
        suspended = _unit(self._seed, _S_SUSPEND, event_id, b, spec_id, cycle) < self.config.suspension_rate
        # ~95% of markets are the same from one cycle to the next: build each version once
        memo_key = (event_id, b, spec_id, version, suspended)
        known = self._memo.get(memo_key)
        if known is not None:
            return known
        if len(self._memo) > 500_000:
            self._memo.clear()
        self._memo[memo_key] = market = self._build(spec, spec_id, event_id, b, version, suspended)
        return market

    def _build(self, spec: MarketSpec, spec_id: int, event_id: int, b: int, version: int,
               suspended: bool) -> CachedMarket:
        n = len(spec.outcomes)
        outcomes = []
        for i, name in enumerate(spec.outcomes):
            # a fair price around n, plus a margin, moved a little with each version
            u = _unit(self._seed, _S_ODDS, event_id, b, spec_id, i, version)
            odds = round(max(1.01, n * (0.35 + 1.3 * u) * 0.94), 2)
            outcomes.append({"name": name, "odds": odds, "is_active": not suspended})
        line = spec.line
        return CachedMarket(
            betpawa_market_id=spec.betpawa_market_id,
            betpawa_market_name=spec.name,
            line=line,
            handicap_type=spec.handicap_type,
            handicap_home=line if spec.handicap_type else None,
            handicap_away=(-line + 0.0 if line is not None else None) if spec.handicap_type else None,
            outcomes=outcomes,
            market_groups=list(spec.groups),
        )

    def offer(self, event_id: int, bookmaker: str, cycle: int) -> list[CachedMarket]:
        """Every market the bookmaker offers for the event in this cycle (empty when not listed).

        The markets are shared between calls: treat them, outcomes included, as read-only."""
        if not self.is_listed(event_id, bookmaker, cycle):
            return []
        return [
            self._market(spec, sid, event_id, bookmaker, cycle)
            for spec, sid in self._catalog
            if self._offered(spec, sid, event_id, bookmaker, cycle)
        ]

    # ------------------------------------------------------------ scrapes

    def _fetch(self, event_id: int, bookmaker: str, cycle: int) -> _Fetch:
        c, b = self.config, self._bm[bookmaker]
        # strictly inside the cycle, after its listing: (1 s, 80% of the interval)
        offset = timedelta(seconds=1) + (c.interval * 0.8) * _unit(self._seed, _S_TIME, event_id, b, cycle)
        at = self.cycle_start(cycle) + timedelta(microseconds=int(offset / timedelta(microseconds=1)))
        u = _unit(self._seed, _S_FETCH, event_id, b, cycle)
        if u < c.failed_fetch_rate:
            kind = "failed"
        elif u < c.failed_fetch_rate + c.empty_page_rate:
            kind = "empty"
        elif u < c.failed_fetch_rate + c.empty_page_rate + c.partial_page_rate:
            kind = "partial"
        else:
            kind = "ok"
        return _Fetch(kind, at)

    def _rows(self, markets: list[CachedMarket], event_id: int, bookmaker: str, cycle: int) -> list[dict]:
        """Markets as the bookmaker's API returns them: dict rows, some split in two."""
        b = self._bm[bookmaker]
        rows: list[dict] = []
        for m in markets:
            row = market_to_dict(m)
            del row["unavailable_at"]  # a bookmaker's page knows nothing of it
            split = (bookmaker == "bet9ja" and m.betpawa_market_id == "45") or (
                _unit(self._seed, _S_SPLIT, event_id, b, _sid(m.betpawa_market_id), cycle)
                < self.config.split_rows_rate
            )
            if split and len(m.outcomes) > 1:
                half = len(m.outcomes) // 2
                rows.append({**row, "outcomes": m.outcomes[:half]})
                rows.append({**row, "outcomes": m.outcomes[half:], "market_groups": None})
            else:
                rows.append(row)
        return rows

    def scrape(self, event_id: int, bookmaker: str, cycle: int) -> ScrapeResult | None:
        """The scrape of one event at one bookmaker, or ``None`` when it is not listed."""
        return self.scrape_with_truth(event_id, bookmaker, cycle)[0]

    def scrape_with_truth(
        self, event_id: int, bookmaker: str, cycle: int
    ) -> tuple[ScrapeResult | None, list[CachedMarket]]:
        """The scrape, and the markets it shows as the cache must store them
        (split rows merged; a partial page's share; nothing for a failed or
        empty page)."""
        if not self.is_listed(event_id, bookmaker, cycle):
            return None, []
        fetch = self._fetch(event_id, bookmaker, cycle)
        kickoff = self.kickoff(event_id)
        if fetch.kind == "failed":
            return ScrapeResult(event_id, bookmaker, None, fetch.scraped_at,
                                error=f"{bookmaker}: HTTP 503 fetching event {event_id}", kickoff=kickoff), []
        if fetch.kind == "empty":  # "successful" but empty: says nothing about what disappeared
            return ScrapeResult(event_id, bookmaker, [], fetch.scraped_at, kickoff=kickoff), []
        offer = self.offer(event_id, bookmaker, cycle)
        rows = self._rows(offer, event_id, bookmaker, cycle)
        if fetch.kind == "partial":
            share = 0.3 + 0.5 * _unit(self._seed, _S_PARTIAL, event_id, self._bm[bookmaker], cycle)
            rows = rows[: max(1, int(len(rows) * share))]
            shown = {market_key(r["betpawa_market_id"], r["line"]) for r in rows}
            # a market split over two rows may be cut between them: only its first half is shown
            partial = {}
            for r in rows:
                key = market_key(r["betpawa_market_id"], r["line"])
                partial.setdefault(key, []).extend(r["outcomes"])
            truth = [
                dataclasses.replace(m, outcomes=partial[m.key]) if len(partial[m.key]) != len(m.outcomes) else m
                for m in offer
                if m.key in shown
            ]
            return ScrapeResult(event_id, bookmaker, rows, fetch.scraped_at, complete=False, kickoff=kickoff), truth
        return ScrapeResult(event_id, bookmaker, rows, fetch.scraped_at, kickoff=kickoff), offer

    def scrapes(
        self, cycle: int, event_ids: Iterable[int] | None = None, bookmakers: Iterable[str] | None = None
    ) -> list[ScrapeResult]:
        """Every scrape of the cycle (of the given events and bookmakers), event by event."""
        events = self.event_ids() if event_ids is None else list(event_ids)
        bms = self.config.bookmakers if bookmakers is None else tuple(bookmakers)
        out = []
        for e in events:
            for b in bms:
                result = self.scrape(e, b, cycle)
                if result is not None:
                    out.append(result)
        return out
