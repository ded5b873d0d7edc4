"""The fast client path: :func:`fast_market` checks and encodes a market of the
common shape in one pass, byte-identical to the reference path (tests/test_fast_path.py),
and declines anything else."""

from __future__ import annotations

import math
import threading
from decimal import Decimal
from typing import Any, Callable

import msgpack
import msgspec



from availability.model.core import (
    _MAX_ID_BITS,
    _numeric_text,
    _to_float,
    CachedMarket,
    coercion_counts,
    MarketKey,
    MAX_ID_LENGTH,
    MAX_NAME_LENGTH,
)

# ---------------------------------------------------------------- the fast path


_new_market = object.__new__


def fast_market(raw: Any, *, count: bool = True) -> tuple[CachedMarket, bytes] | None:
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
    ``count=False`` leaves ``coercion_counts`` alone (the caller counted).
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
    if empty_name and count:
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


def _encoder() -> Callable[[Any], bytes]:
    """This thread's ``msgspec.msgpack.Encoder().encode`` (one encoder reused, as
    msgspec advises; one per thread, as :func:`_packer`)."""
    try:
        return _local.encode
    except AttributeError:
        _local.encode = msgspec.msgpack.Encoder().encode
        return _local.encode


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




# ---------------------------------------------------------------- the leaner path: no objects


def fast_payload(raw: Any) -> tuple[str, bytes, bool] | None:
    """``(key_to_field(key), payload, empty_name)`` of what :func:`fast_market`
    accepts, ``None`` for what it declines -- without building the ``CachedMarket``,
    its ``MarketKey`` and outcome dicts, which the script call never needs (only
    a market split over rows sharing a key is merged, from ``fast_market``'s
    objects). ``empty_name`` tells the caller to count ``empty_market_name``
    (``coercion_counts``): this function counts nothing, so a caller that falls
    back to the reference half-way does not count a market twice.

    The same checks as :func:`fast_market`, in the same order, written for
    speed: required fields read by subscript (a missing one declines), text
    already seen clean skips its checks (:data:`_CLEAN`), a line's text is
    looked up (:data:`_LINE_TEXT`), as are odds sent as text or ``Decimal``
    (:data:`_ODDS`), and the payload is packed by msgspec's msgpack encoder in
    C (:func:`_encoder`: the same bytes as msgpack's ``Packer`` for what is
    packed here -- ``str``, finite ``float``, ``bool``, ``None``, lists and
    tuples -- and twice as fast). :func:`fast_payloads` does it for many rows.
    ``tests/test_fast_path.py`` proves it
    gives ``fast_market``'s field, bytes and count, and declines exactly what
    that declines.
    """
    fields: list[str] = []
    payloads: list[bytes] = []
    empty = fast_payloads((raw,), fields, payloads)
    return None if empty < 0 else (fields[0], payloads[0], empty == 1)


def fast_payloads(rows: list | tuple, fields: list[str], payloads: list[bytes]) -> int:
    """:func:`fast_payload` of every row, the fields and payloads appended to
    ``fields`` and ``payloads``; returns how many rows had an empty name (to
    count), or ``-1`` as soon as a row is declined (the lists then hold the
    rows before it). One loop with the checks inline: a call and a tuple per
    market cost as much as a tenth of the checks."""
    clean = _CLEAN
    encode = _encoder()
    add_field = fields.append
    add_payload = payloads.append
    empty = 0
    for raw in rows:
        if type(raw) is not dict:
            return -1
        get = raw.get
        try:
            market_id = raw["betpawa_market_id"]
            outcomes_raw = raw["outcomes"]
        except KeyError:
            return -1
        if type(market_id) is not str:
            if type(market_id) is not int or market_id.bit_length() > _MAX_ID_BITS:
                return -1
            market_id = str(market_id)
        if market_id not in clean:
            if not (0 < len(market_id) <= MAX_ID_LENGTH and market_id.isprintable()
                    and market_id == market_id.strip()):
                return -1
            _remember(market_id)
        line = get("line")
        if line is None:
            field = market_id + "@_"
        else:
            if type(line) is not float or not -_INF < line < _INF:
                line = _fast_number(line)
                if line is False:
                    return -1
            else:
                line += 0.0  # folds -0.0 into 0.0
            text = _LINE_TEXT.get(line)
            if text is None:
                text = _line_text(line)
            field = market_id + text
        name = get("betpawa_market_name")
        empty_name = False
        if type(name) is str:
            if name not in clean:
                if not name.strip():
                    empty_name = True
                    name = ""
                elif len(name) > MAX_NAME_LENGTH or not name.isprintable():
                    return -1
                else:
                    _remember(name)
        elif name is None:
            empty_name = True
            name = ""
        else:
            return -1
        if type(outcomes_raw) is not list:
            return -1
        packed: list[tuple] = []  # packed as arrays, as lists are
        add = packed.append
        try:
            for o in outcomes_raw:
                if type(o) is not dict:
                    return -1
                o_name = o["name"]
                if type(o_name) is not str:
                    return -1
                if o_name not in clean:
                    if len(o_name) > MAX_NAME_LENGTH or not o_name.isprintable() or not o_name.strip():
                        return -1
                    _remember(o_name)
                odds = o["odds"]
                if type(odds) is not float or not 0.0 < odds < _INF:
                    odds = _odds_of(odds)
                    if odds is None:
                        return -1
                active = o.get("is_active", True)
                if active is not True and active is not False:
                    if type(active) is not int or not (active == 0 or active == 1):
                        return -1
                    active = active == 1
                add((o_name, odds, active))
        except KeyError:
            return -1
        groups = get("market_groups")
        if groups is not None:
            if type(groups) is not list:
                return -1
            for g in groups:
                if type(g) is not str:
                    return -1
                if g not in clean:
                    if len(g) > MAX_NAME_LENGTH or not g.isprintable():
                        return -1
                    _remember(g)
        if get("unavailable_at") is not None:
            return -1
        handicap_type = get("handicap_type")
        if handicap_type is not None:
            if type(handicap_type) is not str:
                return -1
            if handicap_type not in clean:
                if len(handicap_type) > MAX_NAME_LENGTH or not handicap_type.isprintable():
                    return -1
                _remember(handicap_type)
        handicap_home = get("handicap_home")
        if handicap_home is not None:
            if type(handicap_home) is float and -_INF < handicap_home < _INF:
                handicap_home += 0.0
            else:
                handicap_home = _fast_number(handicap_home, text=False)
                if handicap_home is False:
                    return -1
        handicap_away = get("handicap_away")
        if handicap_away is not None:
            if type(handicap_away) is float and -_INF < handicap_away < _INF:
                handicap_away += 0.0
            else:
                handicap_away = _fast_number(handicap_away, text=False)
                if handicap_away is False:
                    return -1
        add_field(field)
        add_payload(encode([market_id, name, line, handicap_type, handicap_home, handicap_away, packed, groups]))
        if empty_name:
            empty += 1
    return empty


#: Text known to pass every text rule of every field (a market id's, the strictest:
#: non-empty, at most ``MAX_ID_LENGTH`` characters, printable, no surrounding
#: whitespace), exact ``str`` only: the ids, names and outcome names a worker sees
#: repeat on every scrape, and a set lookup costs less than the three checks.
#: Bounded: emptied when it reaches :data:`_CLEAN_LIMIT` entries.
_CLEAN: set[str] = set()
_CLEAN_LIMIT = 20_000
#: ``"@" + repr(line)`` (the ``key_to_field`` suffix) of the lines seen; bounded likewise.
_LINE_TEXT: dict[float, str] = {}
#: Odds sent as text (``"1.85"``) or ``Decimal`` (exact types) -> the float ``_fast_odds``
#: gives them, for valid odds only: equal values give equal floats, and converting
#: (a regular expression for text, a round trip through text for a ``Decimal``)
#: costs several times the lookup; bounded likewise.
_ODDS: dict[Any, float] = {}


def _remember(text: str) -> None:
    """Add ``text`` (an exact ``str`` that just passed its field's checks) to
    :data:`_CLEAN` if it is clean."""
    if 0 < len(text) <= MAX_ID_LENGTH and text.isprintable() and text == text.strip():
        if len(_CLEAN) >= _CLEAN_LIMIT:
            _CLEAN.clear()
        _CLEAN.add(text)


def _odds_of(value: Any) -> float | None:
    """:func:`_fast_odds`, remembered for text and ``Decimal`` odds (:data:`_ODDS`)."""
    kind = type(value)
    if kind is not str and kind is not Decimal:
        return _fast_odds(value)
    try:
        number = _ODDS.get(value)
    except TypeError:  # a signaling NaN cannot be hashed (nor is it odds)
        return None
    if number is None:
        number = _fast_odds(value)
        if number is not None:
            if len(_ODDS) >= _CLEAN_LIMIT:
                _ODDS.clear()
            _ODDS[value] = number
    return number


def _line_text(line: float) -> str:
    if len(_LINE_TEXT) >= _CLEAN_LIMIT:
        _LINE_TEXT.clear()
    text = _LINE_TEXT[line] = "@" + repr(line)
    return text
