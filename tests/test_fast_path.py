"""The fast client path gives exactly the reference's result.

``model.fast_market`` validates and encodes markets of the common shape; the
reference, ``model.coerce_market`` + ``model.encode_market``, stays the
definition of every rule. For arbitrary market dicts, valid and invalid, the
fast path must either decline (``None``: the reference decides, error wording
included) or give the reference's market, key, bytes and ``coercion_counts``;
and ``screen_markets(fast=True)`` must give ``screen_markets(fast=False)``'s
markets, payloads, held keys and rejections (field, value, reason, message),
or raise the same exception.

The leaner path ``MarketCache`` runs, ``model.fast_payload`` (field and bytes,
no objects) and ``model.screen_payloads`` (split rows merged, anything unusual
to the reference), must give the same, and ``MarketCache._prepare`` must send
exactly what the reference ``_prepare`` sent (``tests/reference_prepare.py``):
every script argument, the digest included, for arbitrary scrapes.
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
from reference_prepare import reference_prepare

from redis.asyncio.connection import Connection

from availability.cache import MarketCache, Scrape
from availability.scrape import _digest, _digest_fields, _digest_fields_reference, _digest_reference
from availability.errors import InvalidScrape
from availability.model import (
    CachedMarket,
    coerce_market,
    coercion_counts,
    encode_market,
    fast_market,
    fast_payload,
    key_to_field,
    screen_markets,
    screen_payloads,
    screen_payloads_reference,
)
from availability.model import fastpath
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


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=5), st.binary(max_size=40)), max_size=8),
       st.lists(st.tuples(st.text(alphabet=st.characters(codec="utf-8"), max_size=12), st.binary(max_size=300)),
                max_size=8))
def test_digest_of_fields_is_the_reference(head: list, pairs: list) -> None:
    fields, payloads = [f for f, _ in pairs], [p for _, p in pairs]
    assert _digest_fields(head, fields, payloads) == _digest_fields_reference(head, fields, payloads)
    assert _digest_fields(head, fields, payloads) == _digest(head, [x for pair in pairs for x in pair])


# ---------------------------------------------------------------- the lean path: fields and bytes, no objects


def _clean_set_is_clean() -> None:
    """Every text the lean path remembers as clean passes every text rule (a market id's)."""
    assert all(type(t) is str and 0 < len(t) <= 200 and t.isprintable() and t == t.strip()
               for t in fastpath._CLEAN)
    assert all(type(line) is float and math.isfinite(line) and text == "@" + repr(line)
               and math.copysign(1, line) == math.copysign(1, line + 0.0)  # no -0.0
               for line, text in fastpath._LINE_TEXT.items())
    assert all(type(odds) in (str, Decimal) and type(number) is float and number == fastpath._fast_odds(odds)
               for odds, number in fastpath._ODDS.items())


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(markets, st.booleans())
def test_fast_payload_is_fast_market(raw: Any, cold: bool) -> None:
    """``fast_payload`` declines what ``fast_market`` declines, and otherwise gives its
    field, bytes and count -- whether the text it meets was seen before or not."""
    if cold:
        fastpath._CLEAN.clear()
        fastpath._LINE_TEXT.clear()
        fastpath._ODDS.clear()
    before = coercion_counts["empty_market_name"]
    lean = fast_payload(raw)
    again = fast_payload(raw)  # now every clean text of it is remembered
    assert coercion_counts["empty_market_name"] == before  # the lean path counts nothing itself
    fast = fast_market(raw)
    counted = coercion_counts["empty_market_name"] - before
    _clean_set_is_clean()
    if fast is None:
        assert lean is None and again is None
        return
    market, payload = fast
    assert lean == again == (key_to_field(market.key), payload, counted == 1)
    kind, ref = _reference(raw)
    assert kind == "ok" and payload == ref[2] and key_to_field(ref[1]) == lean[0]


def _payloads_of(rows: Any, strict: bool, reference: bool) -> tuple[str, Any, int]:
    before = coercion_counts["empty_market_name"]
    screen = screen_payloads_reference if reference else screen_payloads
    try:
        s = screen(rows() if callable(rows) else rows, "event 1 at sportybet", strict=strict)
    except InvalidScrape as exc:
        return "error", _error_of(exc), coercion_counts["empty_market_name"] - before
    return "ok", s, coercion_counts["empty_market_name"] - before


def _assert_same_payloads(rows: Any, strict: bool) -> None:
    kind, ref, counted = _payloads_of(rows, strict, reference=True)
    fkind, fast, fcounted = _payloads_of(rows, strict, reference=False)
    assert (fkind, fcounted) == (kind, counted)
    if kind == "error":
        assert fast == ref
        return
    assert fast.fields == ref.fields and all(type(f) is str for f in fast.fields)
    assert fast.payloads == ref.payloads and all(type(p) is bytes for p in fast.payloads)
    assert _same(fast.held, ref.held) and fast.rejected == ref.rejected and fast.rows == ref.rows
    assert fast.key_unreadable == ref.key_unreadable


@st.composite
def split_rows(draw: st.DrawFn) -> list:
    """Valid markets, some split over rows sharing their key (in any order among the
    others), some of those rows carrying an outcome again at another price (a collision)."""
    rows = draw(st.lists(valid_market, max_size=5))
    out: list = []
    for market in rows:
        outcomes = market["outcomes"]
        if len(outcomes) < 2 or not draw(st.booleans()):
            out.append(market)
            continue
        cut = draw(st.integers(1, len(outcomes) - 1))
        first, second = {**market, "outcomes": outcomes[:cut]}, {**market, "outcomes": outcomes[cut:]}
        if draw(st.booleans()):  # the same outcome again, its price moved: two markets keyed alike
            second["outcomes"] = [*second["outcomes"], {**outcomes[0], "odds": draw(st.sampled_from([1.5, "3.1"]))}]
        if draw(st.booleans()):
            second["market_groups"] = draw(st.sampled_from([None, ["other"], ["main", "x"]]))
        out += [first, second]
    return draw(st.permutations(out))


scrape_rows = st.one_of(st.lists(markets, max_size=6), split_rows(),
                        st.lists(st.one_of(valid_market, split_rows().map(lambda r: r[0] if r else {})), max_size=6))


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scrape_rows, st.booleans(), st.sampled_from(["list", "tuple", "iterator"]))
def test_screen_payloads_is_the_reference(rows: list, strict: bool, kind: str) -> None:
    if kind == "tuple":
        rows = tuple(rows)  # type: ignore[assignment]
    _assert_same_payloads((lambda: iter(rows)) if kind == "iterator" else rows, strict)
    _clean_set_is_clean()


@pytest.mark.parametrize("bookmaker", BOOKMAKERS)
@pytest.mark.parametrize("strict", [False, True])
def test_realistic_scrapes_take_the_lean_path_and_match(bookmaker: str, strict: bool) -> None:
    """Every realistic row takes ``fast_payload`` (SportyBet's split rows are merged from
    ``fast_market``'s objects), and the lean result is the reference's; so is the hostile
    market's fallback."""
    rows = event_markets(bookmaker, 1)
    assert all(fast_payload(row) is not None for row in rows)
    _assert_same_payloads(rows, strict)
    hostile_rows = with_hostile(bookmaker, 2)
    assert sum(fast_payload(row) is None for row in hostile_rows) == 1
    _assert_same_payloads(hostile_rows, strict)


def test_the_clean_text_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastpath, "_CLEAN", set())
    monkeypatch.setattr(fastpath, "_LINE_TEXT", {})
    monkeypatch.setattr(fastpath, "_ODDS", {})
    monkeypatch.setattr(fastpath, "_CLEAN_LIMIT", 10)
    for i in range(25):
        outcomes = [{"name": f"o{i}", "odds": f"{i + 1}.5"}, {"name": "x", "odds": Decimal(f"{i + 1}.25")}]
        assert fast_payload({"betpawa_market_id": f"m{i}", "line": i + 0.5, "outcomes": outcomes}) is not None
        assert len(fastpath._CLEAN) <= 10 and len(fastpath._LINE_TEXT) <= 10 and len(fastpath._ODDS) <= 10
    assert "m24" in fastpath._CLEAN and fastpath._LINE_TEXT[24.5] == "@24.5"
    assert fastpath._ODDS["25.5"] == 25.5 and fastpath._ODDS[Decimal("25.25")] == 25.25


# ---------------------------------------------------------------- the script arguments, whole

_CACHE = MarketCache.from_url("redis://127.0.0.1:1/0", prefix="fastpath")  # never connects
_WHEN = st.one_of(st.just(T0), st.just(T0 + timedelta(microseconds=1)),
                  st.datetimes(min_value=datetime(1960, 1, 1), max_value=datetime(2100, 1, 1),
                               timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=-3))])),
                  st.just(datetime(2026, 11, 30, 12)), st.just("2026-11-30"))


@st.composite
def scrapes(draw: st.DrawFn) -> tuple[Scrape, str, bool, str]:
    rows = draw(st.one_of(scrape_rows, st.just([]), st.sampled_from([None, "18", {"a": 1}, b"x"])))
    container = draw(st.sampled_from(["list", "tuple", "iterator"]))
    scrape = Scrape(
        event_id=draw(st.one_of(st.integers(1, 10 ** 9), st.sampled_from([0, -1, "12", None, True, 2 ** 70]))),
        bookmaker=draw(st.sampled_from(["sportybet", "betpawa", "bet9ja", "", "Bad Name", None, 5])),
        markets=rows,
        scraped_at=draw(_WHEN),
        complete=draw(st.one_of(st.booleans(), st.sampled_from([1, None]))),
        confirmed_empty=draw(st.one_of(st.booleans(), st.booleans(), st.just(0))),
        expires_at=draw(st.one_of(st.none(), _WHEN)),
        kickoff=draw(st.one_of(st.none(), _WHEN)),
    )
    return scrape, container, draw(st.booleans()), draw(st.sampled_from(["scrape", "scrape", "removed"]))


def _prepared(prepare: Any, scrape: Scrape, container: str, strict: bool, mode: str) -> tuple:
    rows = scrape.markets
    if isinstance(rows, list):
        rows = tuple(rows) if container == "tuple" else iter(rows) if container == "iterator" else rows
    before = coercion_counts["empty_market_name"]
    try:
        p = prepare(_CACHE, Scrape(**{**scrape.__dict__, "markets": rows}), mode, strict)
    except Exception as exc:  # whatever escapes, it must be the same
        return "raised", (type(exc), str(exc))
    o = p.outcome
    return ("ok", p.keys, p.args, p.event_id, p.bookmaker, p.scraped_at, p.rejected, p.partial,
            None if o is None else (o.status, o.event_id, o.bookmaker, o.scraped_at,
                                    None if o.error is None else _error_of(o.error)),
            coercion_counts["empty_market_name"] - before)


@settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scrapes())
def test_prepare_sends_the_reference_arguments(drawn: tuple) -> None:
    """The whole argument list of the script call (and the keys, the outcome of a scrape
    refused before it, the rejections, ``coercion_counts``) is the reference's, byte for
    byte and type for type, for arbitrary scrapes: split rows, bad markets, bad scrapes."""
    scrape, container, strict, mode = drawn
    ref = _prepared(reference_prepare, scrape, container, strict, mode)
    fast = _prepared(MarketCache._prepare, scrape, container, strict, mode)
    assert _same(fast, ref)


@pytest.mark.parametrize("bookmaker", BOOKMAKERS)
def test_prepare_of_realistic_scrapes_is_the_reference(bookmaker: str) -> None:
    for version, rows in enumerate([event_markets(bookmaker, 1), event_markets(bookmaker, 2),
                                    with_hostile(bookmaker, 3)]):
        for strict in (False, True):
            scrape = Scrape(77, bookmaker, rows, T0 + timedelta(minutes=version), kickoff=T0 + timedelta(days=1))
            ref = _prepared(reference_prepare, scrape, "list", strict, "scrape")
            assert ref[0] == "ok" and (ref[2] is not None or strict)
            assert _same(_prepared(MarketCache._prepare, scrape, "list", strict, "scrape"), ref)


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
