"""Realistic scrapes of one football event at SportyBet, Bet9ja and BetPawa.

170 markets per bookmaker, as their scrapers hand them over after mapping to
BetPawa's market ids: no-line markets, totals and handicaps with many lines,
European handicaps keyed by their handicap (``line`` = the handicap, see
docs/rules.md), correct score with many outcomes. Each bookmaker has its own
habits:

* SportyBet splits a market's outcomes over several rows (correct score in
  three rows, each Asian handicap line as a home row and an away row);
* Bet9ja sends odds as text (``"1.85"``) and ``is_active`` as ``0``/``1``;
* BetPawa sends one market without a ``displayName`` (its name is missing:
  stored as ``""``) and odds as ``Decimal``.

:func:`hostile` gives one bad market to slip among them.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

BOOKMAKERS = ("sportybet", "bet9ja", "betpawa")

# market id -> name, outcome names, lines (None: a market without a line)
_NO_LINE = {
    "1": ("1X2", ["1", "X", "2"]),
    "2": ("Double chance", ["1X", "12", "X2"]),
    "3": ("Both teams to score", ["Yes", "No"]),
    "4": ("Draw no bet", ["1", "2"]),
    "9": ("Odd/Even", ["Odd", "Even"]),
    "10": ("Clean sheet home", ["Yes", "No"]),
    "11": ("Clean sheet away", ["Yes", "No"]),
    "12": ("Home win to nil", ["Yes", "No"]),
    "13": ("Away win to nil", ["Yes", "No"]),
    "14": ("First goal", ["1", "None", "2"]),
    "15": ("Highest scoring half", ["1st", "Equal", "2nd"]),
    "21": ("Exact goals", ["0", "1", "2", "3", "4", "5", "6+"]),
    "22": ("Multigoals", ["1-2", "1-3", "2-3", "2-4", "3-4"]),
    "45": ("Correct score", [f"{h}:{a}" for h in range(5) for a in range(5)] + ["Other"]),
    "47": ("Half time/Full time", [f"{a}/{b}" for a in "1X2" for b in "1X2"]),
}


def _steps(low: float, high: float, step: float) -> list[float]:
    n = round((high - low) / step)
    return [round(low + i * step, 2) for i in range(n + 1)]


_WITH_LINE = {
    "18": ("Over/Under", ["Over", "Under"], _steps(0.5, 6.5, 0.25)),            # 25
    "16": ("Asian handicap", ["1", "2"], _steps(-4.0, 4.0, 0.25)),             # 33
    "4724": ("European handicap", ["1", "X", "2"], _steps(-3.0, 3.0, 1.0)),    # 7
    "19": ("Home team total", ["Over", "Under"], _steps(0.5, 5.5, 0.5)),       # 11
    "20": ("Away team total", ["Over", "Under"], _steps(0.5, 5.5, 0.5)),       # 11
    "68": ("1st half total", ["Over", "Under"], _steps(0.5, 4.5, 0.25)),       # 17
    "166": ("Total corners", ["Over", "Under"], _steps(5.5, 14.5, 0.5)),       # 19
    "139": ("Total bookings", ["Over", "Under"], _steps(1.5, 8.5, 0.5)),       # 15
    "53": ("1st half Asian handicap", ["1", "2"], _steps(-2.0, 2.0, 0.25)),    # 17
}

#: The markets each bookmaker offers for the event: 15 without a line + 155 with one.
MARKET_COUNT = len(_NO_LINE) + sum(len(lines) for _, _, lines in _WITH_LINE.values())
assert MARKET_COUNT == 170

#: The market BetPawa sends without a ``displayName``.
NAMELESS = ("9", None)


def _odds(seed: int, index: int, version: int) -> float:
    """A plausible price, different per outcome and per scrape ``version``."""
    return round(1.05 + ((seed * 7 + index * 13 + version * 5) % 170) / 20, 2)


def _price(bookmaker: str, value: float) -> Any:
    if bookmaker == "bet9ja":
        return f"{value:.2f}"
    if bookmaker == "betpawa":
        return Decimal(str(value))
    return value


def _active(bookmaker: str, active: bool) -> Any:
    return int(active) if bookmaker == "bet9ja" else active


def _market(bookmaker: str, market_id: str, name: str | None, line: float | None, outcomes: list[str],
            seed: int, version: int) -> dict:
    market: dict[str, Any] = {
        "betpawa_market_id": market_id,
        "betpawa_market_name": name,
        "line": line,
        "outcomes": [
            {"name": o, "odds": _price(bookmaker, _odds(seed, i, version)),
             "is_active": _active(bookmaker, (seed + i) % 11 != 0)}
            for i, o in enumerate(outcomes)
        ],
        "market_groups": ["main"] if market_id in ("1", "18", "16") else ["all"],
    }
    if market_id in ("16", "53"):
        market.update(handicap_type="asian", handicap_home=line, handicap_away=None if line is None else -line)
    elif market_id == "4724":
        # European handicap h:0 keyed by its handicap: 1:0 and 2:0 are two markets
        market.update(handicap_type="european", handicap_home=line, handicap_away=0.0)
    if bookmaker == "betpawa" and (market_id, line) == NAMELESS:
        del market["betpawa_market_name"]  # no displayName
    return market


def _split(market: dict, parts: int) -> list[dict]:
    """One market's outcomes over ``parts`` rows, as SportyBet sends some."""
    outcomes = market["outcomes"]
    size = -(-len(outcomes) // parts)
    return [{**market, "outcomes": outcomes[i:i + size]} for i in range(0, len(outcomes), size)]


def event_markets(bookmaker: str, version: int = 0) -> list[dict]:
    """The 170 markets of the event at ``bookmaker`` (more rows where split);
    ``version`` moves some prices, as the next scrape would."""
    rows: list[dict] = []
    seed = 0
    for market_id, (name, outcomes) in _NO_LINE.items():
        seed += 1
        market = _market(bookmaker, market_id, name, None, outcomes, seed, version if seed % 3 == 0 else 0)
        rows += _split(market, 3) if bookmaker == "sportybet" and market_id == "45" else [market]
    for market_id, (name, outcomes, lines) in _WITH_LINE.items():
        for line in lines:
            seed += 1
            market = _market(bookmaker, market_id, name, line, outcomes, seed, version if seed % 3 == 0 else 0)
            rows += _split(market, 2) if bookmaker == "sportybet" and market_id == "16" else [market]
    return rows


def market_keys() -> list[tuple[str, float | None]]:
    """Every ``(betpawa_market_id, line)`` :func:`event_markets` sends."""
    return [(m, None) for m in _NO_LINE] + [(m, line) for m, (_, _, lines) in _WITH_LINE.items() for line in lines]


def hostile(bookmaker: str) -> tuple[dict, tuple[str, float | None], str]:
    """``(market, its key, the field that fails)``: one bad market per bookmaker.

    SportyBet: a price with a decimal comma; Bet9ja: a market name with a NUL
    (PostgreSQL's ``text`` cannot store it); BetPawa: a total whose odds went
    missing. Each reuses the key of a good market of :func:`event_markets`.
    """
    if bookmaker == "sportybet":
        bad = _market(bookmaker, "18", "Over/Under", 2.5, ["Over", "Under"], 99, 1)
        bad["outcomes"][0]["odds"] = "1,85"
        return bad, ("18", 2.5), "outcomes[0].odds"
    if bookmaker == "bet9ja":
        bad = _market(bookmaker, "166", "Total\x00corners", 9.5, ["Over", "Under"], 99, 1)
        return bad, ("166", 9.5), "betpawa_market_name"
    bad = _market(bookmaker, "19", "Home team total", 1.5, ["Over", "Under"], 99, 1)
    del bad["outcomes"][1]["odds"]
    return bad, ("19", 1.5), "outcomes[1].odds"


def with_hostile(bookmaker: str, version: int) -> list[dict]:
    """:func:`event_markets` with the hostile market in place of the good one it shares a key with."""
    bad, key, _ = hostile(bookmaker)
    rows = [r for r in event_markets(bookmaker, version) if (r["betpawa_market_id"], r["line"]) != key]
    rows.insert(len(rows) // 2, bad)
    return rows
