"""Validation and coercion of scraped markets (the reference path), merging split
rows, and the per-market quarantine (:func:`screen_markets`); see docs/rules.md."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from decimal import Decimal
from collections.abc import Iterable, Mapping  # not typing's aliases: isinstance() on those is slow
from typing import Any


from availability.errors import InvalidMarketKey, InvalidScrape, KeyCollision


from availability.model.fastpath import fast_market
from availability.model.core import (
    _error,
    _numeric_text,
    _to_float,
    CachedMarket,
    check_text,
    coercion_counts,
    encode_market,
    key_to_field,
    market_key,
    MarketKey,
    MAX_NAME_LENGTH,
    shown,
    to_utc,
)

# ---------------------------------------------------------------- validation and coercion



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


def market_from_dict(data: Mapping[str, Any]) -> CachedMarket:
    """Inverse of :func:`market_to_dict` (validates and normalises)."""
    return coerce_market(data, "market")
