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
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from collections.abc import Iterable, Mapping  # not typing's aliases: isinstance() on those is slow
from functools import cached_property
from typing import Any, NamedTuple

import msgpack

from availability.errors import InvalidMarketKey, InvalidScrape, KeyCollision

__all__ = [
    "CachedMarket",
    "CachedSnapshot",
    "MAX_ID_LENGTH",
    "MAX_NAME_LENGTH",
    "coercion_counts",
    "MarketKey",
    "normalize_line",
    "normalize_market_id",
    "market_key",
    "key_to_field",
    "key_sort_order",
    "field_to_key",
    "encode_market",
    "decode_market",
    "market_from_fields",
    "market_to_dict",
    "market_from_dict",
    "coerce_market",
    "fast_market",
    "merge_markets",
    "REJECTION_REASONS",
    "RejectedMarket",
    "ScreenedMarkets",
    "encode_checked",
    "screen_markets",
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


# ---------------------------------------------------------------- validation and coercion

_FIELDS = [f.name for f in dataclasses.fields(CachedMarket)]


def _optional_number(value: Any, where: str, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise _error(InvalidScrape, f"{where}: {name}: expected a finite number or None, got {shown(value)}",
                     name, value)
    number = _to_float(value)
    if not math.isfinite(number):
        raise _error(InvalidScrape, f"{where}: {name}: expected a finite number or None, got {shown(value)}",
                     name, value)
    return number + 0.0


def _optional_text(value: Any, where: str, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _error(InvalidScrape, f"{where}: {name}: expected a string or None, got {shown(value)}", name, value)
    return check_text(value, f"{where}: {name}", MAX_NAME_LENGTH, field=name)


def _odds(value: Any) -> float | None:
    """Odds as a finite positive float: a number or a numeric string such as
    ``"1.85"`` (as Bet9ja sends them; the same text rule as lines), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float, Decimal)):
        number = _to_float(value)
    elif isinstance(value, str):
        parsed = _numeric_text(value)
        if parsed is None:
            return None
        number = parsed
    else:
        return None
    return number if math.isfinite(number) and number > 0 else None


def _outcome(raw: Any, where: str, index: int) -> dict:
    here = f"{where}: outcomes[{index}]"
    field_name = f"outcomes[{index}]"
    if not isinstance(raw, Mapping):
        raise _error(InvalidScrape, f"{here}: expected a mapping with name, odds, is_active, got {shown(raw)}",
                     field_name, raw)
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _error(InvalidScrape, f"{here}: name: expected a non-empty string, got {shown(name)}",
                     f"{field_name}.name", name)
    check_text(name, f"{here}: name", MAX_NAME_LENGTH, field=f"{field_name}.name")
    odds = raw.get("odds")
    odds_f = _odds(odds)
    if odds_f is None:
        raise _error(
            InvalidScrape,
            f"{here} ({shown(name)}): odds: expected a finite positive number or numeric string, got {shown(odds)}",
            f"{field_name}.odds", odds,
        )
    is_active = raw.get("is_active", True)
    if not isinstance(is_active, bool):
        # 0 and 1 as some bookmakers send them; any other int is not a flag
        if type(is_active) is not int or is_active not in (0, 1):
            raise _error(
                InvalidScrape,
                f"{here} ({shown(name)}): is_active: expected a boolean, 0 or 1, got {shown(is_active)}",
                f"{field_name}.is_active", is_active,
            )
        is_active = bool(is_active)
    return {"name": name, "odds": odds_f, "is_active": is_active}


def coerce_market(raw: Any, where: str = "market") -> CachedMarket:
    """Validate one scraped market (a ``CachedMarket``, a mapping or an object
    with the same attribute names) into a normalised ``CachedMarket``.

    Accepts values as bookmakers send them: odds as numbers or numeric strings
    (``"1.85"``), ``is_active`` as a boolean or ``0``/``1``, and a missing,
    ``None``, empty or blank ``betpawa_market_name``, stored as ``""`` and
    counted in :data:`coercion_counts` (``"empty_market_name"``).

    Raises :class:`InvalidScrape` naming the market, the field and the value;
    the error also carries them as ``field``, ``value`` (:func:`shown` text),
    ``reason`` and ``key`` (``None`` when the key itself could not be read),
    which :class:`RejectedMarket` reports under quarantine.
    """
    if isinstance(raw, Mapping):
        get = raw.get
    else:
        def get(name: str, default: Any = None) -> Any:
            return getattr(raw, name, default)

    try:
        key = market_key(get("betpawa_market_id"), get("line"))
    except InvalidMarketKey as exc:
        error = InvalidScrape(f"{where}: {exc}")
        error.field, error.value, error.reason = exc.field, exc.value, "invalid_key"
        raise error from None
    try:
        market = _coerce_keyed(get, key, f"{where} {key_to_field(key)}")
    except InvalidScrape as exc:
        exc.key = key
        raise
    market.__dict__["key"] = key  # seed the cached_property: normalised just above, on the hot path
    return market


def _coerce_keyed(get: Any, key: MarketKey, where: str) -> CachedMarket:
    """The rest of :func:`coerce_market`, once the key is known."""
    name = get("betpawa_market_name")
    if name is None or (isinstance(name, str) and not name.strip()):
        coercion_counts["empty_market_name"] += 1
        name = ""
    elif not isinstance(name, str):
        raise _error(InvalidScrape, f"{where}: betpawa_market_name: expected a string, got {shown(name)}",
                     "betpawa_market_name", name)
    check_text(name, f"{where}: betpawa_market_name", MAX_NAME_LENGTH, field="betpawa_market_name")
    outcomes_raw = get("outcomes")
    if isinstance(outcomes_raw, (str, bytes, Mapping)) or not isinstance(outcomes_raw, Iterable):
        raise _error(InvalidScrape, f"{where}: outcomes: expected a list of outcomes, got {shown(outcomes_raw)}",
                     "outcomes", outcomes_raw)
    outcomes = [_outcome(o, where, i) for i, o in enumerate(outcomes_raw)]
    groups_raw = get("market_groups")
    if groups_raw is None:
        groups = None
    else:
        if isinstance(groups_raw, (str, bytes)) or not isinstance(groups_raw, Iterable):
            raise _error(
                InvalidScrape,
                f"{where}: market_groups: expected a list of strings or None, got {shown(groups_raw)}",
                "market_groups", groups_raw,
            )
        groups = list(groups_raw)
        for i, g in enumerate(groups):
            if not isinstance(g, str):
                raise _error(InvalidScrape, f"{where}: market_groups: expected strings, got {shown(g)}",
                             f"market_groups[{i}]", g)
            check_text(g, f"{where}: market_groups[{i}]", MAX_NAME_LENGTH, field=f"market_groups[{i}]")
    unavailable_at = get("unavailable_at")
    if unavailable_at is not None:
        try:
            unavailable_at = to_utc(unavailable_at, f"{where}: unavailable_at")
        except InvalidScrape as exc:
            exc.field, exc.value = "unavailable_at", shown(unavailable_at)
            raise
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
    return market


# ---------------------------------------------------------------- the fast path


_new_market = object.__new__


def fast_market(raw: Any) -> tuple[CachedMarket, bytes] | None:
    """``(coerce_market(raw), encode_market(that))`` for a market in the common
    shape, or ``None`` for anything else: the caller then runs the reference,
    :func:`coerce_market`, which also words every error.

    The common shape is a plain ``dict`` whose values have the exact types
    scrapers send (``str`` ids and names, ``float``/``int``/``Decimal``/numeric
    ``str`` odds and lines, ``bool`` or ``0``/``1`` flags, ``list`` outcomes of
    ``dict``, no ``unavailable_at``) and whose text is printable (which rules
    out every control character and lone surrogate: ``str.isprintable`` is one
    C call where the reference runs a regular expression per field). Why a
    second path: on the hot path (170 markets per scrape, 95% unchanged) the
    reference's ``isinstance`` chains, frozen-dataclass construction and
    re-encoding dominate the client's CPU. It accepts nothing the reference
    refuses and raises only what the reference raises too;
    ``tests/test_fast_path.py`` proves it gives
    the reference's market and bytes (and ``coercion_counts``) on arbitrary input.
    """
    if type(raw) is not dict:
        return None
    get = raw.get
    market_id = get("betpawa_market_id")
    if type(market_id) is int:
        if market_id.bit_length() > _MAX_ID_BITS:
            return None  # too long: the reference says so
        market_id = str(market_id)
    elif type(market_id) is not str:
        return None
    if not (0 < len(market_id) <= MAX_ID_LENGTH and market_id.isprintable() and market_id == market_id.strip()):
        return None
    line = get("line")
    if line is not None and (type(line) is not float or not -_INF < line < _INF):
        line = _fast_number(line)
        if line is False:
            return None
    elif line is not None:
        line += 0.0  # folds -0.0 into 0.0
    name = get("betpawa_market_name")
    empty_name = name is None or (type(name) is str and not name.strip())
    if empty_name:
        name = ""
    elif type(name) is not str or len(name) > MAX_NAME_LENGTH or not name.isprintable():
        return None
    outcomes_raw = get("outcomes")
    if type(outcomes_raw) is not list:
        return None
    outcomes: list[dict] = []
    packed: list[list] = []
    for o in outcomes_raw:
        if type(o) is not dict:
            return None
        o_name = o.get("name")
        if (type(o_name) is not str or len(o_name) > MAX_NAME_LENGTH or not o_name.isprintable()
                or not o_name.strip()):
            return None
        odds = o.get("odds")
        if type(odds) is not float or not 0.0 < odds < _INF:
            odds = _fast_odds(odds)
            if odds is None:
                return None
        active = o.get("is_active", True)
        if active is not True and active is not False:
            if type(active) is not int or not (active == 0 or active == 1):
                return None
            active = bool(active)
        outcomes.append({"name": o_name, "odds": odds, "is_active": active})
        packed.append([o_name, odds, active])
    groups = get("market_groups")
    if groups is not None:
        if type(groups) is not list:
            return None
        for g in groups:
            if type(g) is not str or len(g) > MAX_NAME_LENGTH or not g.isprintable():
                return None
        groups = groups[:]  # a copy, as the reference's list(); also what is packed
    if get("unavailable_at") is not None:
        return None
    handicap_type = get("handicap_type")
    if handicap_type is not None and (type(handicap_type) is not str or len(handicap_type) > MAX_NAME_LENGTH
                                      or not handicap_type.isprintable()):
        return None
    handicap_home = get("handicap_home")
    if handicap_home is not None:
        handicap_home = _fast_number(handicap_home, text=False)
        if handicap_home is False:
            return None
    handicap_away = get("handicap_away")
    if handicap_away is not None:
        handicap_away = _fast_number(handicap_away, text=False)
        if handicap_away is False:
            return None
    key = MarketKey(market_id, line)
    market = _new_market(CachedMarket)
    object.__setattr__(market, "__dict__", {
        "betpawa_market_id": market_id, "betpawa_market_name": name, "line": line,
        "handicap_type": handicap_type, "handicap_home": handicap_home, "handicap_away": handicap_away,
        "outcomes": outcomes, "market_groups": groups, "unavailable_at": None, "key": key,
    })
    payload = _packer().pack([market_id, name, line, handicap_type, handicap_home, handicap_away, packed, groups])
    if empty_name:
        coercion_counts["empty_market_name"] += 1
    return market, payload


_INF = math.inf
_local = threading.local()


def _packer() -> msgpack.Packer:
    """This thread's msgpack ``Packer`` (``encode_market``'s options): ``packb``
    builds a new one, with its buffer, on every call, which costs as much as the
    packing; one per thread, as a ``Packer`` keeps state between calls."""
    try:
        return _local.packer
    except AttributeError:
        _local.packer = msgpack.Packer(use_bin_type=True)
        return _local.packer


def _fast_number(value: Any, *, text: bool = True) -> float | None | bool:
    """A line (``text=True``) or handicap as :func:`normalize_line` and
    ``_optional_number`` give it, or ``False`` when the reference should decide."""
    if value is None:
        return None
    kind = type(value)
    if kind is float or kind is int:
        number = _to_float(value)
    elif kind is Decimal:
        if not value.is_finite():
            return False
        number = _to_float(value)
    elif kind is str and text:
        parsed = _numeric_text(value)
        if parsed is None:
            return False
        number = parsed
    else:
        return False
    if not math.isfinite(number):
        return False
    return number + 0.0


def _fast_odds(value: Any) -> float | None:
    """Odds as ``_odds`` gives them for the exact types, or ``None`` (the reference decides)."""
    kind = type(value)
    if kind is float:
        number = value
    elif kind is str:
        parsed = _numeric_text(value)
        if parsed is None:
            return None
        number = parsed
    elif kind is Decimal or kind is int:
        number = _to_float(value)
    else:
        return None
    return number if math.isfinite(number) and number > 0 else None


def merge_markets(
    markets: Iterable[CachedMarket], *, collisions: list[KeyCollision] | None = None
) -> dict[MarketKey, CachedMarket]:
    """Merge rows that share a key (failure 4: a bookmaker splitting one
    market's outcomes over several rows) instead of letting them overwrite
    each other.

    Outcomes are combined in order of first appearance; an outcome repeated
    with the same price and ``is_active`` is kept once. Name and handicap
    fields come from the first row that has them; market groups are unioned
    in order.

    Raises :class:`KeyCollision` when rows sharing a key carry the same outcome
    name with a different price or ``is_active``: those are two markets keyed
    alike (European handicaps 1:0 and 2:0 both sent with ``line=None``), and
    merging them would silently lose a price. Key them apart (docs/rules.md).
    With ``collisions`` given (quarantine), the error is appended there instead
    and the key is left out of the result, whatever its other rows carry.
    (A row whose key no other row shares is returned as it is.)
    """
    merged: dict[MarketKey, CachedMarket] = {}
    collided: set[MarketKey] = set()
    for market in markets:
        key = market.key
        if key in collided:
            continue
        seen = merged.get(key)
        if seen is None:
            merged[key] = market
            continue
        outcomes: dict[str, dict] = {}
        for o in [*seen.outcomes, *market.outcomes]:
            before = outcomes.get(o["name"])
            if before is not None and (float(before["odds"]) != float(o["odds"])
                                       or bool(before["is_active"]) != bool(o["is_active"])):
                field_text = key_to_field(key)
                error = KeyCollision(
                    f"market {field_text}: key collision: rows with betpawa_market_id="
                    f"{shown(key.betpawa_market_id)} and line={key.line!r} carry outcome {shown(o['name'])} "
                    f"at odds {before['odds']!r} (is_active={before['is_active']!r}) and at odds "
                    f"{o['odds']!r} (is_active={o['is_active']!r}): two different markets share the key; "
                    f"key them apart (e.g. the handicap as the line)",
                    key,
                )
                error.field, error.value = "outcomes", shown(o["name"])
                if collisions is None:
                    raise error
                collisions.append(error)
                collided.add(key)
                break
            outcomes[o["name"]] = o
        if key in collided:
            del merged[key]
            continue
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


# ---------------------------------------------------------------- quarantine

#: Reasons a market is rejected (``RejectedMarket.reason``).
REJECTION_REASONS = ("invalid_key", "invalid_value", "invalid_text", "key_collision", "unencodable")


@dataclass(frozen=True)
class RejectedMarket:
    """One market of a scrape that was not stored: what ``ScrapeOutcome.rejected`` lists.

    ``key`` is the market's key, or ``None`` when it could not be read (the
    scrape is then partial: nothing stamped). ``field`` is the field that failed
    (``"outcomes[1].odds"``, ``"betpawa_market_name"``, ``"line"``...), ``value``
    the offending value as ``repr`` cut to 80 characters (safe to log: control
    characters and lone surrogates are escaped), ``reason`` one of
    :data:`REJECTION_REASONS`, ``message`` the full validation message.
    """

    key: MarketKey | None
    field: str | None
    value: str | None
    reason: str
    message: str = ""

    @classmethod
    def of(cls, error: InvalidScrape) -> "RejectedMarket":
        """The rejection an error of :func:`coerce_market` or :func:`merge_markets` reports."""
        key = error.key
        return cls(
            key=None if key is None or error.reason == "invalid_key" else MarketKey(*key),
            field=error.field,
            value=error.value,
            reason=error.reason if error.reason in REJECTION_REASONS else "invalid_value",
            message=str(error),
        )


@dataclass(frozen=True)
class ScreenedMarkets:
    """The markets of one scrape, validated one by one (see :func:`screen_markets`)."""

    markets: dict[MarketKey, CachedMarket]  # valid, merged, in order of first appearance
    payloads: dict[MarketKey, bytes]  # their canonical encodings
    held: tuple[MarketKey, ...]  # readable keys of rejected markets: present, payload kept as stored
    rejected: tuple[RejectedMarket, ...]
    rows: int  # market rows given

    @property
    def key_unreadable(self) -> bool:
        """A rejected market's key could not be read: the scrape cannot say what is missing."""
        return any(r.key is None for r in self.rejected)


def encode_checked(market: CachedMarket, where: str) -> bytes:
    """:func:`encode_market`, an encoding failure raised as :class:`InvalidScrape`."""
    try:
        return encode_market(market)
    except (ValueError, TypeError, OverflowError) as exc:  # UnicodeEncodeError is a ValueError
        error = InvalidScrape(
            f"{where}: market {key_to_field(market.key)}: cannot be encoded: {type(exc).__name__}: {exc}"
        )
        error.field, error.reason, error.key = "market", "unencodable", market.key
        raise error from exc


def screen_markets(raw: Iterable[Any], where: str, *, strict: bool = False, fast: bool = True) -> ScreenedMarkets:
    """Validate, merge and encode the markets of one scrape, one market at a time.

    ``strict=True`` raises the first error (:class:`InvalidScrape`, or
    :class:`KeyCollision`) as a whole-scrape refusal. Otherwise (quarantine) a
    bad market is listed in ``rejected`` and the others stand: a market whose
    key can be read goes to ``held`` (all rows of that key, a split row
    included: a market is stored whole or not at all), one whose key cannot be
    read only to ``rejected`` (``key=None``).

    ``fast=True`` validates and encodes markets of the common shape with
    :func:`fast_market` (the same result, proven by a property test), anything
    else with the reference :func:`coerce_market`; ``fast=False`` is the
    reference alone.
    """
    markets: list[CachedMarket] = []
    rejected: list[RejectedMarket] = []
    held: dict[MarketKey, None] = {}
    encoded: dict[MarketKey, tuple[CachedMarket, bytes]] = {}
    rows = 0
    for i, m in enumerate(raw):
        rows += 1
        done = fast_market(m) if fast else None
        if done is not None:
            market = done[0]
            markets.append(market)
            encoded[market.key] = done
            continue
        try:
            markets.append(coerce_market(m, f"{where}: markets[{i}]"))
        except InvalidScrape as exc:
            if strict:
                raise
            rejection = RejectedMarket.of(exc)
            rejected.append(rejection)
            if rejection.key is not None:
                held[rejection.key] = None
    collisions: list[KeyCollision] | None = None if strict else []
    merged = merge_markets(markets, collisions=collisions)
    for exc in collisions or ():
        rejected.append(RejectedMarket.of(exc))
        held[MarketKey(*exc.key)] = None
    payloads: dict[MarketKey, bytes] = {}
    for key, market in list(merged.items()):
        if key in held:
            del merged[key]
            continue
        pre = encoded.get(key)
        if pre is not None and pre[0] is market:  # a row no other row merged into: encoded already
            payloads[key] = pre[1]
            continue
        try:
            payloads[key] = encode_checked(market, where)
        except InvalidScrape as exc:
            if strict:
                raise
            rejected.append(RejectedMarket.of(exc))
            held[key] = None
            del merged[key]
    return ScreenedMarkets(merged, payloads, tuple(held), tuple(rejected), rows)


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
