"""Pure data model: cached markets, snapshots, market keys, canonical encodings.

No I/O here. Everything that builds a market key goes through
:func:`market_key`, so ``2.5``, ``2.50``, ``Decimal('2.5')`` and ``'2.5'`` are
one line everywhere, ``-0.0`` is ``0.0``, and ``None`` (no line) and ``0.0``
(a handicap of zero) stay different markets.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from collections.abc import Iterable, Mapping  # not typing's aliases: isinstance() on those is slow
from functools import cached_property
from typing import Any, NamedTuple

import msgpack

from availability.errors import InvalidMarketKey, InvalidScrape

__all__ = [
    "CachedMarket",
    "CachedSnapshot",
    "MarketKey",
    "normalize_line",
    "normalize_market_id",
    "market_key",
    "key_to_field",
    "key_sort_order",
    "field_to_key",
    "encode_market",
    "decode_market",
    "market_to_dict",
    "market_from_dict",
    "coerce_market",
    "merge_markets",
    "to_utc",
    "to_micros",
    "from_micros",
    "format_ts",
    "parse_ts",
]

UTC = timezone.utc
_NO_LINE = "_"
# plain decimal or scientific notation; Decimal() alone would also take "2_5" and "NaN"
_NUMERIC_TEXT = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_KEY_SEPARATOR = "@"


class MarketKey(NamedTuple):
    """``(betpawa_market_id, line)``; ``line`` is ``None`` for markets without one."""

    betpawa_market_id: str
    line: float | None


# ---------------------------------------------------------------- key normalisation


def _to_float(value: int | float | Decimal) -> float:
    """``float(value)``, or NaN when it has none (an ``int`` beyond float range,
    a signaling NaN), so the callers' finiteness check rejects it as bad input."""
    try:
        return float(value)
    except (OverflowError, ValueError):
        return math.nan


def normalize_market_id(value: Any) -> str:
    """A market id as text: non-empty ``str`` (an ``int`` is accepted and converted)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidMarketKey(
            f"betpawa_market_id: expected a non-empty string, got {value!r} ({type(value).__name__})"
        )
    text = str(value)
    if not text or text != text.strip() or any(ord(c) < 32 for c in text):
        raise InvalidMarketKey(
            f"betpawa_market_id: expected a non-empty string without surrounding "
            f"whitespace or control characters, got {value!r}"
        )
    return text


def normalize_line(value: Any) -> float | None:
    """A line as a finite ``float`` (``-0.0`` folded to ``0.0``), or ``None``.

    Accepts ``int``, ``float``, ``Decimal`` and numeric strings. Rejects booleans,
    NaN, infinities and anything non-numeric.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidMarketKey(f"line: expected a number or None, got boolean {value!r}")
    if isinstance(value, (int, float)):
        number = _to_float(value)
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise InvalidMarketKey(f"line: expected a finite number, got {value!r}")
        number = _to_float(value)
    elif isinstance(value, str):
        text = value.strip()
        if not _NUMERIC_TEXT.match(text):
            raise InvalidMarketKey(f"line: expected a finite numeric string like '2.5', got {value!r}")
        # float() of a plain decimal string rounds exactly as float(Decimal(text)) does
        number = float(text)
    else:
        raise InvalidMarketKey(
            f"line: expected a number, numeric string or None, got {value!r} ({type(value).__name__})"
        )
    if not math.isfinite(number):
        raise InvalidMarketKey(f"line: expected a finite number, got {value!r}")
    return number + 0.0  # folds -0.0 into 0.0


def market_key(betpawa_market_id: Any, line: Any) -> MarketKey:
    """The normalised key of a market."""
    return MarketKey(normalize_market_id(betpawa_market_id), normalize_line(line))


def key_sort_order(key: MarketKey) -> tuple[str, bool, float]:
    """Sort order for keys: by id, the no-line market first, then by line."""
    return (key[0], key[1] is not None, key[1] or 0.0)


def key_to_field(key: MarketKey) -> str:
    """Canonical text of a key, used as the Redis hash field: ``18@2.5``, ``1@_``.

    The line is the last ``@``-separated part and never contains ``@``, so ids
    that contain ``@`` still round-trip; ``repr`` of a float round-trips exactly.
    """
    market_id, line = key
    return f"{market_id}{_KEY_SEPARATOR}{_NO_LINE if line is None else repr(line)}"


def field_to_key(text: str | bytes) -> MarketKey:
    """Inverse of :func:`key_to_field`."""
    if isinstance(text, bytes):
        text = text.decode()
    market_id, sep, line_text = text.rpartition(_KEY_SEPARATOR)
    if not sep:
        raise InvalidMarketKey(f"market key field: expected '<id>@<line>', got {text!r}")
    line = None if line_text == _NO_LINE else normalize_line(line_text)
    return market_key(market_id, line)


# ---------------------------------------------------------------- time


def to_utc(value: datetime, field_name: str = "timestamp") -> datetime:
    """A tz-aware datetime converted to UTC; naive datetimes are rejected."""
    if not isinstance(value, datetime):
        raise InvalidScrape(f"{field_name}: expected a timezone-aware datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidScrape(f"{field_name}: expected a timezone-aware datetime, got naive {value!r}")
    return value.astimezone(UTC)


def to_micros(value: datetime) -> int:
    """Microseconds since the Unix epoch (exact, fits a Lua double)."""
    delta = to_utc(value) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int | str | bytes) -> datetime:
    micros = int(value)
    return datetime.fromtimestamp(micros // 1_000_000, UTC).replace(microsecond=micros % 1_000_000)


def format_ts(value: datetime) -> str:
    """Fixed-width ISO-8601 UTC text, e.g. ``2026-11-28T12:00:00.000000Z``."""
    return to_utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(value: str | bytes) -> datetime:
    if isinstance(value, bytes):
        value = value.decode()
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


# ---------------------------------------------------------------- the model


@dataclass(frozen=True)
class CachedMarket:
    """One market of one event at one bookmaker, as cached."""

    betpawa_market_id: str
    betpawa_market_name: str
    line: float | None
    handicap_type: str | None
    handicap_home: float | None
    handicap_away: float | None
    outcomes: list[dict]
    market_groups: list[str] | None
    unavailable_at: datetime | None = None

    @property
    def is_available(self) -> bool:
        return self.unavailable_at is None

    @cached_property
    def key(self) -> MarketKey:
        return market_key(self.betpawa_market_id, self.line)


@dataclass(frozen=True)
class CachedSnapshot:
    """One event at one bookmaker: its markets, unavailable ones included."""

    event_id: int
    bookmaker: str
    captured_at: datetime | None
    last_confirmed_at: datetime | None
    markets: tuple[CachedMarket, ...] = field(default_factory=tuple)
    last_scraped_at: datetime | None = None

    @property
    def available_markets(self) -> tuple[CachedMarket, ...]:
        return tuple(m for m in self.markets if m.is_available)

    @property
    def unavailable_markets(self) -> tuple[CachedMarket, ...]:
        return tuple(m for m in self.markets if not m.is_available)

    def market(self, betpawa_market_id: Any, line: Any = None) -> CachedMarket | None:
        wanted = market_key(betpawa_market_id, line)
        return next((m for m in self.markets if m.key == wanted), None)


# ---------------------------------------------------------------- validation and coercion

_FIELDS = [f.name for f in dataclasses.fields(CachedMarket)]


def _optional_number(value: Any, where: str, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise InvalidScrape(f"{where}: {name}: expected a finite number or None, got {value!r}")
    number = _to_float(value)
    if not math.isfinite(number):
        raise InvalidScrape(f"{where}: {name}: expected a finite number or None, got {value!r}")
    return number + 0.0


def _optional_text(value: Any, where: str, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidScrape(f"{where}: {name}: expected a string or None, got {value!r}")
    return value


def _outcome(raw: Any, where: str, index: int) -> dict:
    here = f"{where}: outcomes[{index}]"
    if not isinstance(raw, Mapping):
        raise InvalidScrape(f"{here}: expected a mapping with name, odds, is_active, got {raw!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InvalidScrape(f"{here}: name: expected a non-empty string, got {name!r}")
    odds = raw.get("odds")
    if isinstance(odds, bool) or not isinstance(odds, (int, float, Decimal)):
        raise InvalidScrape(f"{here} ({name!r}): odds: expected a finite positive number, got {odds!r}")
    odds_f = _to_float(odds)
    if not math.isfinite(odds_f) or odds_f <= 0:
        raise InvalidScrape(f"{here} ({name!r}): odds: expected a finite positive number, got {odds!r}")
    is_active = raw.get("is_active", True)
    if not isinstance(is_active, bool):
        raise InvalidScrape(f"{here} ({name!r}): is_active: expected a boolean, got {is_active!r}")
    return {"name": name, "odds": odds_f, "is_active": is_active}


def coerce_market(raw: Any, where: str = "market") -> CachedMarket:
    """Validate one scraped market (a ``CachedMarket``, a mapping or an object
    with the same attribute names) into a normalised ``CachedMarket``.

    Raises :class:`InvalidScrape` naming the market, the field and the value.
    """
    if isinstance(raw, Mapping):
        get = raw.get
    else:
        def get(name: str, default: Any = None) -> Any:
            return getattr(raw, name, default)

    try:
        key = market_key(get("betpawa_market_id"), get("line"))
    except InvalidMarketKey as exc:
        raise InvalidScrape(f"{where}: {exc}") from None
    where = f"{where} {key_to_field(key)}"
    name = get("betpawa_market_name")
    if not isinstance(name, str) or not name.strip():
        raise InvalidScrape(f"{where}: betpawa_market_name: expected a non-empty string, got {name!r}")
    outcomes_raw = get("outcomes")
    if isinstance(outcomes_raw, (str, bytes, Mapping)) or not isinstance(outcomes_raw, Iterable):
        raise InvalidScrape(f"{where}: outcomes: expected a list of outcomes, got {outcomes_raw!r}")
    outcomes = [_outcome(o, where, i) for i, o in enumerate(outcomes_raw)]
    groups_raw = get("market_groups")
    if groups_raw is None:
        groups = None
    else:
        if isinstance(groups_raw, (str, bytes)) or not isinstance(groups_raw, Iterable):
            raise InvalidScrape(f"{where}: market_groups: expected a list of strings or None, got {groups_raw!r}")
        groups = list(groups_raw)
        for g in groups:
            if not isinstance(g, str):
                raise InvalidScrape(f"{where}: market_groups: expected strings, got {g!r}")
    unavailable_at = get("unavailable_at")
    if unavailable_at is not None:
        unavailable_at = to_utc(unavailable_at, f"{where}: unavailable_at")
    market = CachedMarket(
        betpawa_market_id=key.betpawa_market_id,
        betpawa_market_name=name,
        line=key.line,
        handicap_type=_optional_text(get("handicap_type"), where, "handicap_type"),
        handicap_home=_optional_number(get("handicap_home"), where, "handicap_home"),
        handicap_away=_optional_number(get("handicap_away"), where, "handicap_away"),
        outcomes=outcomes,
        market_groups=groups,
        unavailable_at=unavailable_at,
    )
    market.__dict__["key"] = key  # seed the cached_property: normalised just above, on the hot path
    return market


def merge_markets(markets: Iterable[CachedMarket]) -> dict[MarketKey, CachedMarket]:
    """Merge rows that share a key (failure 4: a bookmaker splitting one
    market's outcomes over several rows) instead of letting them overwrite
    each other.

    Outcomes are combined in order of first appearance; an outcome name that
    repeats keeps the later price. Name and handicap fields come from the first
    row that has them; market groups are unioned in order.
    """
    merged: dict[MarketKey, CachedMarket] = {}
    for market in markets:
        key = market.key
        seen = merged.get(key)
        if seen is None:
            merged[key] = market
            continue
        outcomes: dict[str, dict] = {o["name"]: o for o in seen.outcomes}
        for o in market.outcomes:
            outcomes[o["name"]] = o
        groups = seen.market_groups
        if market.market_groups is not None:
            groups = list(dict.fromkeys([*(groups or []), *market.market_groups]))
        merged[key] = dataclasses.replace(
            seen,
            handicap_type=seen.handicap_type if seen.handicap_type is not None else market.handicap_type,
            handicap_home=seen.handicap_home if seen.handicap_home is not None else market.handicap_home,
            handicap_away=seen.handicap_away if seen.handicap_away is not None else market.handicap_away,
            outcomes=list(outcomes.values()),
            market_groups=groups,
        )
    return merged


# ---------------------------------------------------------------- encodings


def market_to_dict(market: CachedMarket) -> dict[str, Any]:
    """Plain dict with the contract's field names; ``unavailable_at`` stays a datetime."""
    return {name: getattr(market, name) for name in _FIELDS}


def market_from_dict(data: Mapping[str, Any]) -> CachedMarket:
    """Inverse of :func:`market_to_dict` (validates and normalises)."""
    return coerce_market(data, "market")


def encode_market(market: CachedMarket) -> bytes:
    """Canonical msgpack of a market's offer (everything but ``unavailable_at``).

    A positional msgpack array (schema ``2``, see ``keys.SCHEMA_VERSION``)::

        [betpawa_market_id, betpawa_market_name, line, handicap_type,
         handicap_home, handicap_away, [[name, odds, is_active], ...], market_groups]

    Fixed order, floats always float64, outcomes reduced to
    ``name, odds, is_active``: equal markets always encode to equal bytes, so
    the Lua script detects an odds change with one string comparison.
    """
    return msgpack.packb(
        [
            market.betpawa_market_id,
            market.betpawa_market_name,
            None if market.line is None else float(market.line),
            market.handicap_type,
            None if market.handicap_home is None else float(market.handicap_home),
            None if market.handicap_away is None else float(market.handicap_away),
            [[o["name"], float(o["odds"]), bool(o["is_active"])] for o in market.outcomes],
            None if market.market_groups is None else list(market.market_groups),
        ],
        use_bin_type=True,
    )


def decode_market(payload: bytes, unavailable_at: datetime | None = None) -> CachedMarket:
    """Inverse of :func:`encode_market`; raises ``ValueError`` on anything else
    (e.g. a schema ``1`` payload, a msgpack map with field names)."""
    data = msgpack.unpackb(payload, raw=False)
    if not isinstance(data, list) or len(data) != 8:
        raise ValueError(f"market payload: expected a msgpack array of 8 items (schema 2), got {data!r}")
    market_id, name, line, handicap_type, handicap_home, handicap_away, outcomes, groups = data
    return CachedMarket(
        betpawa_market_id=market_id,
        betpawa_market_name=name,
        line=line,
        handicap_type=handicap_type,
        handicap_home=handicap_home,
        handicap_away=handicap_away,
        outcomes=[{"name": o[0], "odds": o[1], "is_active": o[2]} for o in outcomes],
        market_groups=groups,
        unavailable_at=unavailable_at,
    )
