"""The fast client path gives exactly the reference's result.

``model.fast_market`` validates and encodes markets of the common shape; the
reference, ``model.coerce_market`` + ``model.encode_market``, stays the
definition of every rule. For arbitrary market dicts, valid and invalid, the
fast path must either decline (``None``: the reference decides, error wording
included) or give the reference's market, key, bytes and ``coercion_counts``;
and ``screen_markets(fast=True)`` must give ``screen_markets(fast=False)``'s
markets, payloads, held keys and rejections (field, value, reason, message),
or raise the same exception.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factory import T0
from realistic import BOOKMAKERS, event_markets, with_hostile

from redis.asyncio.connection import Connection

from availability.cache import MarketCache
from availability.scrape import _digest, _digest_reference
from availability.errors import InvalidScrape
from availability.model import (
    CachedMarket,
    coerce_market,
    coercion_counts,
    encode_market,
    fast_market,
    screen_markets,
)
from availability.redis_adapter import HiredisPacking, _with_hiredis_packing

# text that exercises every text rule: bounds, surrounding spaces, controls (C0, DEL, C1),
# lone surrogates, non-breaking and other unicode spaces, emoji
_TRICKY = ["", " ", "  \t ", "Over", " Over", "Over ", "a\x00b", "a\tb", "a\nb", "\x7f", "\x85", "\x9f",
           "\ud800", "x\udfff", "\xa0", "no\xa0break", "\u2028", "\u3000x", "caf\xe9", "\U0001f600",
           "9" * 200, "9" * 201, "n" * 500, "n" * 501, "1", "X", "2", "Under"]
_BOUNDS = ["9" * 200, "9" * 201, "n" * 500, "n" * 501, "n" * 499 + "\x00", "\ud800" + "n" * 499]
texts = st.one_of(st.sampled_from(_TRICKY), st.sampled_from(_BOUNDS), st.text(max_size=12),
                  st.text(alphabet=st.characters(codec="utf-8"), max_size=6))
numeric_texts = st.one_of(
    st.sampled_from(["2.5", " 2.50 ", "25e-1", "+1", "-0", "-0.0", ".5", "5.", "1,85", "1_85", "NaN", "inf",
                     "", " ", "0", "1e400", "-1e400", "abc", "1.85\x00"]),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)
numbers = st.one_of(
    st.floats(),  # NaN, infinities and -0.0 included
    st.integers(min_value=-(10 ** 400), max_value=10 ** 400),
    st.integers(min_value=-5, max_value=5),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.sampled_from([Decimal("sNaN"), Decimal("-0"), Decimal("1.85"), 0.0, -0.0, 1.85, True, False]),
)
anything = st.one_of(st.none(), st.booleans(), st.lists(st.integers(), max_size=2), st.just(b"18"),
                     st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))
lines = st.one_of(st.none(), numbers, numeric_texts, texts, anything)
odds = st.one_of(st.floats(min_value=1.01, max_value=50), numbers, numeric_texts, texts, anything)
flags = st.one_of(st.booleans(), st.integers(min_value=-1, max_value=2), st.sampled_from([1.0, "1", None]))


class _Named(dict):
    """A dict subclass: a Mapping the reference takes, the fast path leaves to it."""


outcome = st.one_of(
    st.fixed_dictionaries({"name": st.one_of(texts, st.sampled_from(["Over", "Under"])), "odds": odds},
                          optional={"is_active": flags}),
    st.fixed_dictionaries({"name": texts, "odds": odds}).map(_Named),
    anything, texts,
)
outcome_lists = st.one_of(st.lists(outcome, max_size=4), st.lists(outcome, max_size=3).map(tuple),
                          st.none(), texts, st.just({"name": "Over", "odds": 1.85}))
groups = st.one_of(st.none(), st.lists(texts, max_size=3), st.lists(texts, max_size=2).map(tuple),
                   st.lists(st.one_of(texts, st.integers()), max_size=2), texts)
market_ids = st.one_of(st.sampled_from(["18", "1", "4724", "18 ", "", "a@b"]), texts,
                       st.integers(min_value=-(10 ** 30), max_value=10 ** 30), st.booleans(), st.floats(),
                       st.none())
handicaps = st.one_of(st.none(), numbers, numeric_texts, anything)
stamps = st.one_of(st.none(), st.just(datetime(2026, 11, 30, 12, tzinfo=timezone.utc)),
                   st.just(datetime(2026, 11, 30, 12)), st.just("2026-11-30"))

valid_outcome = st.fixed_dictionaries(
    {"name": st.sampled_from(["Over", "Under", "1", "X", "caf\xe9", "n" * 500]),
     "odds": st.sampled_from([1.85, "1.85", " 2.50 ", Decimal("1.85"), 2, 1.95, 1e300])},
    optional={"is_active": st.sampled_from([True, False, 0, 1])})
valid_market = st.fixed_dictionaries(
    {"betpawa_market_id": st.sampled_from(["18", "16", 1, "9" * 200, "a@b", "\U0001f600"]),
     "outcomes": st.lists(valid_outcome, max_size=3)},
    optional={"betpawa_market_name": st.sampled_from(["Over/Under", "", None, "  ", "n" * 500, "\xa0"]),
              "line": st.sampled_from([None, 2.5, "2.50", Decimal("2.5"), 2, -0.0, 0.0, "-0", 10 ** 20]),
              "market_groups": st.sampled_from([None, ["main"], ["main", "all"], [], ["n" * 500]]),
              "handicap_type": st.sampled_from([None, "asian", "n" * 500]),
              "handicap_home": st.sampled_from([None, 0.5, -0.0, 1, Decimal("0.5"), Decimal("-0")]),
              "handicap_away": st.sampled_from([None, -0.5, 0.0]),
              "unavailable_at": st.none()},
)
_FIELD_VALUES = {
    "betpawa_market_id": market_ids, "betpawa_market_name": st.one_of(texts, st.none(), anything),
    "line": lines, "handicap_type": st.one_of(st.none(), texts, anything), "handicap_home": handicaps,
    "handicap_away": handicaps, "market_groups": groups, "unavailable_at": stamps, "outcomes": outcome_lists,
}


@st.composite
def one_bad_field(draw: st.DrawFn) -> dict:
    """A valid market with one field (or one outcome's field) set to an arbitrary value: the
    shape that finds a rule the fast path forgot, since every other field passes."""
    market = draw(valid_market)
    if market["outcomes"] and draw(st.booleans()):
        o = draw(st.sampled_from(market["outcomes"]))
        o[draw(st.sampled_from(["name", "odds", "is_active"]))] = draw(st.one_of(texts, odds, flags))
    else:
        name = draw(st.sampled_from(sorted(_FIELD_VALUES)))
        market[name] = draw(_FIELD_VALUES[name])
    return market


markets = st.one_of(
    valid_market,
    one_bad_field(),
    st.fixed_dictionaries(
        {"betpawa_market_id": market_ids, "outcomes": outcome_lists},
        optional={"betpawa_market_name": st.one_of(texts, st.none(), anything), "line": lines,
                  "handicap_type": st.one_of(st.none(), texts, anything), "handicap_home": handicaps,
                  "handicap_away": handicaps, "market_groups": groups, "unavailable_at": stamps,
                  "extra": st.integers()},
    ),
    st.builds(
        dict,
        betpawa_market_id=st.sampled_from(["18", "16", 1]),
        betpawa_market_name=st.sampled_from(["Over/Under", "", None, "  "]),
        line=st.one_of(st.none(), st.sampled_from([2.5, "2.50", Decimal("2.5"), 2, -0.0, 0.0])),
        outcomes=st.lists(st.fixed_dictionaries(
            {"name": st.sampled_from(["Over", "Under", "1"]),
             "odds": st.one_of(st.sampled_from([1.85, "1.85", Decimal("1.85"), 2, 1.95, "1,85"]))},
            optional={"is_active": st.sampled_from([True, False, 0, 1, 2])}), max_size=3),
        market_groups=st.one_of(st.none(), st.just(["main"]), st.just(["main", "all"])),
        handicap_type=st.sampled_from([None, "asian"]),
        handicap_home=st.sampled_from([None, 0.5, -0.0, 1, Decimal("0.5")]),
    ),
    st.builds(_Named, betpawa_market_id=st.just("18"), outcomes=st.just([])),
    anything,
)


def _reference(raw: Any) -> tuple[str, Any]:
    try:
        market = coerce_market(raw, "market")
    except InvalidScrape as exc:
        return "error", _error_of(exc)
    return "ok", (market, market.key, encode_market(market))


def _error_of(exc: BaseException) -> tuple:
    return (type(exc), str(exc), getattr(exc, "field", None), getattr(exc, "value", None),
            getattr(exc, "reason", None), getattr(exc, "key", None))


def _same(a: Any, b: Any) -> bool:
    """Equality that also tells ``0.0`` from ``-0.0`` and types apart (``1`` is not ``1.0`` nor ``True``)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, CachedMarket):
        return all(_same(getattr(a, f), getattr(b, f)) for f in CachedMarket.__dataclass_fields__) \
            and _same(a.key, b.key)
    return a == b


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(markets)
def test_fast_market_is_the_reference_or_declines(raw: Any) -> None:
    before = coercion_counts["empty_market_name"]
    fast = fast_market(raw)
    fast_counted = coercion_counts["empty_market_name"] - before
    kind, ref = _reference(raw)
    ref_counted = coercion_counts["empty_market_name"] - before - fast_counted
    if fast is None:
        assert fast_counted == 0
        return
    assert kind == "ok", f"the fast path accepted what the reference refuses: {ref}"
    market, payload = fast
    ref_market, ref_key, ref_payload = ref
    assert _same(market, ref_market)
    assert market.key == ref_key and market == ref_market
    assert payload == ref_payload == encode_market(market)
    assert fast_counted == ref_counted


def _screen(rows: list, strict: bool, fast: bool) -> tuple[str, Any, int]:
    before = coercion_counts["empty_market_name"]
    try:
        s = screen_markets(rows, "event 1 at sportybet", strict=strict, fast=fast)
    except InvalidScrape as exc:
        return "error", _error_of(exc), coercion_counts["empty_market_name"] - before
    return "ok", s, coercion_counts["empty_market_name"] - before


def _assert_same_screen(rows: list, strict: bool) -> None:
    kind, ref, counted = _screen(rows, strict, fast=False)
    fkind, fast, fcounted = _screen(rows, strict, fast=True)
    assert (fkind, fcounted) == (kind, counted)
    if kind == "error":
        assert fast == ref
        return
    assert list(fast.markets) == list(ref.markets)
    assert all(_same(fast.markets[k], ref.markets[k]) for k in ref.markets)
    assert list(fast.payloads.items()) == list(ref.payloads.items())
    assert fast.held == ref.held and fast.rejected == ref.rejected and fast.rows == ref.rows


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(markets, max_size=6), st.booleans())
def test_screen_markets_fast_is_the_reference(rows: list, strict: bool) -> None:
    _assert_same_screen(rows, strict)


@pytest.mark.parametrize("bookmaker", BOOKMAKERS)
@pytest.mark.parametrize("strict", [False, True])
def test_realistic_scrapes_take_the_fast_path_and_match(bookmaker: str, strict: bool) -> None:
    """Every realistic row (split rows, text odds, 0/1 flags, Decimal odds, a
    nameless market) takes the fast path, so the property tests prove the path
    production takes; the hostile market falls back and is rejected alike."""
    rows = event_markets(bookmaker, 1)
    assert all(fast_market(row) is not None for row in rows)
    _assert_same_screen(rows, strict)
    hostile_rows = with_hostile(bookmaker, 2)
    assert sum(fast_market(row) is None for row in hostile_rows) == 1
    _assert_same_screen(hostile_rows, strict)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=5), st.binary(max_size=40)), max_size=8),
       st.lists(st.binary(max_size=300), max_size=8))
def test_digest_is_the_reference(head: list, pairs: list) -> None:
    assert _digest(head, pairs) == _digest_reference(head, pairs)


_TEXT_FIELDS = ["betpawa_market_id", "betpawa_market_name", "handicap_type", "outcomes[0].name", "market_groups[0]"]


@pytest.mark.parametrize("where", _TEXT_FIELDS)
@pytest.mark.parametrize("text", [*_BOUNDS, *_TRICKY])
def test_every_text_rule_of_every_field(where: str, text: str) -> None:
    """Each text field at and beyond its bound, with each kind of bad character, deterministically."""
    raw = {"betpawa_market_id": "18", "betpawa_market_name": "Over/Under", "line": 2.5, "handicap_type": "total",
           "outcomes": [{"name": "Over", "odds": 1.85}], "market_groups": ["main"]}
    if where == "outcomes[0].name":
        raw["outcomes"][0]["name"] = text
    elif where == "market_groups[0]":
        raw["market_groups"] = [text]
    else:
        raw[where] = text
    fast = fast_market(raw)
    kind, ref = _reference(raw)
    if fast is not None:
        assert kind == "ok" and _same(fast[0], ref[0]) and fast[1] == ref[2]
    _assert_same_screen([raw], strict=False)
    _assert_same_screen([raw], strict=True)


# ---------------------------------------------------------------- command packing

# redis-py's own packing and hiredis's, with the default encoding and with another one
_ENCODINGS = [{}, {"encoding": "latin-1"}, {"encoding_errors": "replace"}]
_plain = [Connection(**kw) for kw in _ENCODINGS]
_hiredis = [_with_hiredis_packing(Connection)(**kw) for kw in _ENCODINGS]
arguments = st.one_of(st.text(max_size=8), st.text(alphabet=st.characters(codec="utf-8"), max_size=4),
                      st.sampled_from(["\ud800", "é", "\u20ac", "a b", "", "EVALSHA", "CONFIG GET"]),
                      st.binary(max_size=20), st.binary(min_size=6500, max_size=7000),
                      st.integers(min_value=-(10 ** 30), max_value=10 ** 30), st.booleans(),
                      st.floats(allow_nan=False), st.binary(max_size=4).map(bytearray),
                      st.binary(max_size=4).map(memoryview))


def _packed(connection: Connection, args: tuple) -> tuple[str, Any]:
    try:
        return "ok", b"".join(bytes(part) for part in connection.pack_command(*args))
    except Exception as exc:  # the same error, whatever it is
        return "error", (type(exc), str(exc))


@settings(max_examples=800, deadline=None)
@given(st.one_of(st.sampled_from(["EVALSHA", b"EVALSHA", "SCRIPT LOAD", b"HSET"]), st.text(min_size=1, max_size=5)),
       st.lists(arguments, max_size=12), st.sampled_from(range(len(_ENCODINGS))))
def test_hiredis_packing_puts_the_same_bytes_on_the_wire(command: Any, args: list, encoding: int) -> None:
    assert _packed(_hiredis[encoding], (command, *args)) == _packed(_plain[encoding], (command, *args))


async def test_from_url_packs_with_hiredis_and_applies(redis_url: str, redis_client: Any, key_prefix: str) -> None:
    """Through a real Redis: ``MarketCache.from_url`` connections pack with hiredis
    and a realistic scrape applies and reads back as the reference encodes it
    (``redis_client`` only cleans the prefix's keys up afterwards)."""
    async with MarketCache.from_url(redis_url, prefix=key_prefix) as cache:
        assert issubclass(cache.client.connection_pool.connection_class, HiredisPacking)
        await cache.mark_ready()
        rows = event_markets("bet9ja", 1)
        outcome = await cache.apply_scrape(77, "bet9ja", rows, T0)
        assert outcome.status == "applied" and not outcome.rejected
        snapshot = await cache.get_snapshot(77, "bet9ja")
        expected = screen_markets(rows, "x", fast=False)
        assert {m.key: encode_market(m) for m in snapshot.markets} == dict(expected.payloads)
        again = await cache.apply_scrape(77, "bet9ja", event_markets("bet9ja", 2), T0 + timedelta(minutes=5))
        assert again.status == "applied" and again.changed
