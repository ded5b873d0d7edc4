"""Pure data model: cached markets, snapshots, market keys, canonical encodings.

No I/O here. Everything that builds a market key goes through
:func:`market_key`, so ``2.5``, ``2.50``, ``Decimal('2.5')`` and ``'2.5'`` are
one line everywhere, ``-0.0`` is ``0.0``, and ``None`` (no line) and ``0.0``
(a handicap of zero) stay different markets.

Every text field is bounded and clean (docs/rules.md): at most
:data:`MAX_ID_LENGTH` characters for ``betpawa_market_id``, at most
:data:`MAX_NAME_LENGTH` for the market name, outcome names, ``handicap_type``
and each ``market_groups`` entry; no control characters (C0, DEL, C1: tabs and
newlines included, ordinary and non-breaking spaces are fine) and no lone
surrogates (they cannot be encoded as UTF-8).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from functools import cached_property
from typing import Any, NamedTuple

import msgpack

from availability.errors import InvalidMarketKey, InvalidScrape



UTC = timezone.utc
_NO_LINE = "_"
# plain decimal or scientific notation; Decimal() alone would also take "2_5" and "NaN"
_NUMERIC_TEXT = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_KEY_SEPARATOR = "@"

#: Longest ``betpawa_market_id`` accepted, in characters (ids seen are a few digits).
MAX_ID_LENGTH = 200
#: Longest market name, outcome name, ``handicap_type`` or ``market_groups`` entry, in characters.
MAX_NAME_LENGTH = 500
# an int id with more bits than this has more than MAX_ID_LENGTH digits (log2(10) < 3.33)
_MAX_ID_BITS = int(MAX_ID_LENGTH * 3.33) + 8
# C0 controls (NUL, tab, newline...), DEL, C1 controls, and lone surrogates
_FORBIDDEN_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# longest repr of a value quoted in an error message
_SHOWN = 80

#: What :func:`coerce_market` accepted but a reader may want to count, by name;
#: process-wide, only ever incremented (read it, e.g. into a metric, and diff):
#:
#: ``empty_market_name``  markets stored with ``betpawa_market_name = ""`` because
#:                        the name was missing, ``None``, empty or only whitespace.
coercion_counts: Counter[str] = Counter()


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


def shown(value: Any) -> str:
    """``repr(value)`` for an error message, cut to 80 characters (with the
    length of a longer string), so one huge value cannot flood a log line."""
    text = repr(value)
    if len(text) <= _SHOWN:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, (str, bytes)) else ""
    return f"{text[:_SHOWN]}...{size}"


def _error(error: type[Exception], message: str, field_name: str | None, value: Any,
           reason: str | None = None) -> Exception:
    """``error(message)`` carrying what a rejection reports: the bare field
    (``outcomes[1].odds``), the value as :func:`shown` text, and the reason."""
    exc = error(message)
    exc.field = field_name  # type: ignore[attr-defined]
    exc.value = shown(value)  # type: ignore[attr-defined]
    if reason is not None:
        exc.reason = reason  # type: ignore[attr-defined]
    return exc


def check_text(value: str, field_name: str, max_length: int, error: type[Exception] = InvalidScrape,
               *, field: str | None = None) -> str:
    """``value`` if it has at most ``max_length`` characters and none that is a
    control character or a lone surrogate; else ``error`` naming the field
    (``field_name`` in the message, ``field`` -- default the same -- as the
    error's ``field``; its ``reason`` is ``invalid_text``, or ``invalid_key``
    for an :class:`InvalidMarketKey`)."""
    if len(value) > max_length:
        raise _error(error, f"{field_name}: expected at most {max_length} characters, got {len(value)}: {shown(value)}",
                     field or field_name, value, _text_reason(error))
    bad = _FORBIDDEN_CHARS.search(value)
    if bad is not None:
        kind = "lone surrogate" if "\ud800" <= bad.group() <= "\udfff" else "control character"
        raise _error(
            error,
            f"{field_name}: {kind} {bad.group()!r} at position {bad.start()} is not allowed, got {shown(value)}",
            field or field_name, value, _text_reason(error),
        )
    return value


def _text_reason(error: type[Exception]) -> str:
    return "invalid_key" if issubclass(error, InvalidMarketKey) else "invalid_text"


def normalize_market_id(value: Any) -> str:
    """A market id as text: non-empty ``str`` (an ``int`` is accepted and
    converted) of at most :data:`MAX_ID_LENGTH` characters, without
    surrounding whitespace, control characters or lone surrogates."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _error(
            InvalidMarketKey,
            f"betpawa_market_id: expected a non-empty string, got {shown(value)} ({type(value).__name__})",
            "betpawa_market_id", value,
        )
    if isinstance(value, int) and value.bit_length() > _MAX_ID_BITS:
        # str() of an int beyond 4,300 digits raises ValueError: say what is wrong instead
        raise _error(
            InvalidMarketKey,
            f"betpawa_market_id: expected at most {MAX_ID_LENGTH} characters, got an integer of "
            f"{value.bit_length()} bits",
            "betpawa_market_id", f"<int of {value.bit_length()} bits>",
        )
    text = str(value)
    if not text or text != text.strip():
        raise _error(
            InvalidMarketKey,
            f"betpawa_market_id: expected a non-empty string without surrounding "
            f"whitespace or control characters, got {shown(value)}",
            "betpawa_market_id", value,
        )
    return check_text(text, "betpawa_market_id", MAX_ID_LENGTH, InvalidMarketKey)


def _numeric_text(text: str) -> float | None:
    """A plain decimal or scientific numeric string (surrounding spaces
    allowed) as a float, or ``None`` when it is not one (``"2_5"``, ``"NaN"``)."""
    text = text.strip()
    if not _NUMERIC_TEXT.match(text):
        return None
    # float() of a plain decimal string rounds exactly as float(Decimal(text)) does
    return float(text)


def normalize_line(value: Any) -> float | None:
    """A line as a finite ``float`` (``-0.0`` folded to ``0.0``), or ``None``.

    Accepts ``int``, ``float``, ``Decimal`` and numeric strings. Rejects booleans,
    NaN, infinities and anything non-numeric.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise _error(InvalidMarketKey, f"line: expected a number or None, got boolean {value!r}", "line", value)
    if isinstance(value, (int, float)):
        number = _to_float(value)
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise _error(InvalidMarketKey, f"line: expected a finite number, got {shown(value)}", "line", value)
        number = _to_float(value)
    elif isinstance(value, str):
        parsed = _numeric_text(value)
        if parsed is None:
            raise _error(InvalidMarketKey, f"line: expected a finite numeric string like '2.5', got {shown(value)}",
                         "line", value)
        number = parsed
    else:
        raise _error(
            InvalidMarketKey,
            f"line: expected a number, numeric string or None, got {shown(value)} ({type(value).__name__})",
            "line", value,
        )
    if not math.isfinite(number):
        raise _error(InvalidMarketKey, f"line: expected a finite number, got {shown(value)}", "line", value)
    return number + 0.0  # folds -0.0 into 0.0


def market_key(betpawa_market_id: Any, line: Any) -> MarketKey:
    """The normalised key of a market."""
    return MarketKey(normalize_market_id(betpawa_market_id), normalize_line(line))


def key_sort_order(key: MarketKey) -> tuple[bool, int, str, bool, float]:
    """Sort order for keys: by id, numeric ids as numbers (``14`` before ``139``,
    as people read them) and any other id after them as text; then the no-line
    market first, then by line."""
    market_id = key[0]
    numeric = market_id.isascii() and market_id.isdigit()
    return (not numeric, int(market_id) if numeric else 0, market_id, key[1] is not None, key[1] or 0.0)


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
        raise InvalidMarketKey(f"market key field: expected '<id>@<line>', got {shown(text)}")
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
    # when the event left the bookmaker's listing (MarketCache.mark_event_removed), or None;
    # tells "the event was removed" apart from "every market disappeared from a scrape".
    # Cleared by the next scrape that sees markets.
    removed_at: datetime | None = None
    # the last complete scrape: it listed every market it left available
    last_complete_at: datetime | None = None

    @property
    def available_markets(self) -> tuple[CachedMarket, ...]:
        return tuple(m for m in self.markets if m.is_available)

    @property
    def unavailable_markets(self) -> tuple[CachedMarket, ...]:
        return tuple(m for m in self.markets if not m.is_available)

    def market(self, betpawa_market_id: Any, line: Any = None) -> CachedMarket | None:
        wanted = market_key(betpawa_market_id, line)
        return next((m for m in self.markets if m.key == wanted), None)


_FIELDS = [f.name for f in dataclasses.fields(CachedMarket)]


# ---------------------------------------------------------------- encodings


def market_to_dict(market: CachedMarket) -> dict[str, Any]:
    """Plain dict with the contract's field names; ``unavailable_at`` stays a datetime."""
    return {name: getattr(market, name) for name in _FIELDS}


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
    return market_from_fields(msgpack.unpackb(payload, raw=False), unavailable_at)


def market_from_fields(data: Any, unavailable_at: datetime | None = None) -> CachedMarket:
    """A market from a payload's eight positional items, already msgpack-decoded."""
    if not isinstance(data, list) or len(data) != 8:
        raise ValueError(f"market payload: expected a msgpack array of 8 items (schema 2), got {shown(data)}")
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
