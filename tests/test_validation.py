"""Values as bookmakers send them, and the bounds every text field must keep.

Pure validation tests first, then the same rules through ``MarketCache``
against real Redis: one bad market is quarantined (the rest of its scrape
applies); with ``strict=True`` one bad scrape of a batch is its own
``invalid`` outcome and the rest of the batch applies.
"""

from __future__ import annotations


import pytest

from factory import T0

from availability.cache import Scrape
from availability.scrape import _encode
from availability.errors import ConfigurationError, InvalidMarketKey, InvalidScrape, KeyCollision
from availability.keys import KeySchema, validate_bookmaker
from availability.model import (
    MAX_ID_LENGTH,
    MAX_NAME_LENGTH,
    CachedMarket,
    MarketKey,
    coerce_market,
    coercion_counts,
    encode_market,
    normalize_market_id,
    shown,
)

SHARDS = 4  # the conftest ``cache`` fixture builds the cache with the module's SHARDS


def raw(**changes):
    market = {
        "betpawa_market_id": "18",
        "betpawa_market_name": "Over/Under",
        "line": 2.5,
        "handicap_type": "total",
        "outcomes": [{"name": "Over", "odds": 1.85, "is_active": True}, {"name": "Under", "odds": 1.95}],
        "market_groups": ["main"],
    }
    market.update(changes)
    return market


def with_outcome(**changes):
    return raw(outcomes=[{"name": "Over", "odds": 1.85, "is_active": True, **changes}])


# ---------------------------------------------------------------- odds as text, is_active as 0/1


@pytest.mark.parametrize("text, number", [("1.85", 1.85), (" 1.85 ", 1.85), ("2", 2.0), ("+1.85", 1.85),
                                          ("185e-2", 1.85), ("1.850", 1.85), (".5", 0.5), ("1001", 1001.0)])
def test_odds_as_decimal_strings_are_numbers(text, number):
    market = coerce_market(with_outcome(odds=text))
    assert market.outcomes[0]["odds"] == number and type(market.outcomes[0]["odds"]) is float
    assert encode_market(market) == encode_market(coerce_market(with_outcome(odds=number)))


@pytest.mark.parametrize("text", ["", " ", "1,85", "1.8.5", "1_85", "0x1p0", "NaN", "inf", "Infinity", "1e400",
                                  "0", "0.0", "-0", "-1.85", "1.85 EUR", "١٫٨٥"])
def test_odds_strings_that_are_not_finite_positive_numbers_are_refused(text):
    with pytest.raises(InvalidScrape, match=r"outcomes\[0\] \('Over'\): odds: expected a finite positive number "
                                            r"or numeric string, got ") as info:
        coerce_market(with_outcome(odds=text))
    assert repr(text) in str(info.value)


@pytest.mark.parametrize("flag, expected", [(0, False), (1, True), (False, False), (True, True)])
def test_is_active_may_be_zero_or_one(flag, expected):
    market = coerce_market(with_outcome(is_active=flag))
    assert market.outcomes[0]["is_active"] is expected
    assert encode_market(market) == encode_market(coerce_market(with_outcome(is_active=expected)))


@pytest.mark.parametrize("flag", [2, -1, 1.0, 0.0, "1", "true", None, b"\x01"])
def test_other_is_active_values_are_refused(flag):
    with pytest.raises(InvalidScrape, match=r"is_active: expected a boolean, 0 or 1, got ") as info:
        coerce_market(with_outcome(is_active=flag))
    assert repr(flag) in str(info.value)


# ---------------------------------------------------------------- a missing market name


@pytest.mark.parametrize("changes", [{"betpawa_market_name": None}, {"betpawa_market_name": ""},
                                     {"betpawa_market_name": "   "}])
def test_a_missing_or_empty_market_name_is_stored_empty_and_counted(changes):
    before = coercion_counts["empty_market_name"]
    market = coerce_market(raw(**changes))
    assert market.betpawa_market_name == ""
    assert coercion_counts["empty_market_name"] == before + 1


def test_a_market_without_a_name_key_is_stored_empty_and_counted():
    data = raw()
    del data["betpawa_market_name"]
    before = coercion_counts["empty_market_name"]
    assert coerce_market(data).betpawa_market_name == ""
    assert coerce_market(raw()).betpawa_market_name == "Over/Under"  # a named one is not counted
    assert coercion_counts["empty_market_name"] == before + 1


# ---------------------------------------------------------------- text bounds

TEXT_FIELDS = {
    # field named in the error -> (build a raw market with this text there, limit)
    "betpawa_market_id": (lambda text: raw(betpawa_market_id=text), MAX_ID_LENGTH),
    "betpawa_market_name": (lambda text: raw(betpawa_market_name=text), MAX_NAME_LENGTH),
    "outcomes[0]: name": (lambda text: with_outcome(name=text), MAX_NAME_LENGTH),
    "handicap_type": (lambda text: raw(handicap_type=text), MAX_NAME_LENGTH),
    "market_groups[1]": (lambda text: raw(market_groups=["main", text]), MAX_NAME_LENGTH),
}


def test_the_limits():
    assert (MAX_ID_LENGTH, MAX_NAME_LENGTH) == (200, 500)


@pytest.mark.parametrize("field", TEXT_FIELDS)
def test_text_up_to_the_limit_is_accepted_one_more_character_is_refused(field):
    build, limit = TEXT_FIELDS[field]
    coerce_market(build("é" * limit))  # characters, not bytes
    with pytest.raises(InvalidScrape) as info:
        coerce_market(build("é" * (limit + 1)))
    message = str(info.value)
    assert f"{field}: expected at most {limit} characters, got {limit + 1}: 'éééé" in message
    assert message.endswith(f"... ({limit + 1} characters)")
    assert len(message) < 300


FORBIDDEN = ["\x00", "\t", "\n", "\r", "\x0b", "\x1b", "\x1f", "\x7f", "\x85", "\x9f", "\ud800", "\udbff", "\udc00",
             "\udfff"]


@pytest.mark.parametrize("field", TEXT_FIELDS)
@pytest.mark.parametrize("char", FORBIDDEN, ids=[f"U+{ord(c):04X}" for c in FORBIDDEN])
def test_control_characters_and_lone_surrogates_are_refused_naming_field_and_value(field, char):
    build, _ = TEXT_FIELDS[field]
    value = f"ab{char}cd"
    with pytest.raises(InvalidScrape) as info:
        coerce_market(build(value))
    message = str(info.value)
    kind = "lone surrogate" if "\ud800" <= char <= "\udfff" else "control character"
    assert f"{field}: {kind} {char!r} at position 2 is not allowed, got {value!r}" in message, message


@pytest.mark.parametrize("field", TEXT_FIELDS)
def test_spaces_and_other_unicode_are_fine(field):
    build, _ = TEXT_FIELDS[field]
    value = "Total\u00a0Goals 2.5 – Über/Unter 🙂 \U0001f600"
    market = coerce_market(build(value))
    encode_market(market)


def test_a_market_id_error_is_an_invalid_market_key_when_normalised_alone():
    with pytest.raises(InvalidMarketKey, match=r"^betpawa_market_id: control character '\\x00' at position 2"):
        normalize_market_id("18\x00")
    with pytest.raises(InvalidMarketKey, match=r"^betpawa_market_id: expected at most 200 characters, got 201"):
        normalize_market_id("1" * 201)


def test_long_values_are_cut_in_messages():
    assert shown("x" * 10) == "'xxxxxxxxxx'"
    cut = shown("x" * 10_000)
    assert cut == "'" + "x" * 79 + "... (10000 characters)"
    assert shown(10**400).endswith("...") and len(shown(10**400)) == 83
    with pytest.raises(InvalidScrape) as info:
        coerce_market(with_outcome(odds="9" * 100_000))
    assert len(str(info.value)) < 300


@pytest.mark.parametrize("slug", ["betpawa\n", "\nbetpawa", "bet\x00pawa", "b" * 41, "betpawa\ud800"])
def test_bookmaker_slugs_are_bounded_and_clean(slug):
    # "$" of the old regex matched before a trailing newline: "betpawa\n" passed
    with pytest.raises(InvalidScrape, match=r"^bookmaker: expected a lowercase slug"):
        validate_bookmaker(slug)
    assert validate_bookmaker("b" * 40) == "b" * 40


def test_key_prefixes_are_clean_too():
    with pytest.raises(ConfigurationError, match=r"^key prefix:"):
        KeySchema(prefix="av\n")


def test_an_encoding_failure_is_an_invalid_scrape():
    # validation refuses lone surrogates first; should anything else ever fail to
    # encode, it is still that scrape's InvalidScrape, not a UnicodeEncodeError
    unvalidated = CachedMarket("18", "Over\ud800", 2.5, None, None, None, [], None)
    with pytest.raises(InvalidScrape, match=r"^event 7 at betpawa: market 18@2.5: cannot be encoded: "
                                            r"UnicodeEncodeError: "):
        _encode(unvalidated, "event 7 at betpawa")


# ---------------------------------------------------------------- through the cache, against real Redis


async def test_values_as_bookmakers_send_them_are_stored_normalised(cache):
    nameless = {"betpawa_market_id": "1", "line": None,
                "outcomes": [{"name": "1", "odds": "2.10", "is_active": 1}, {"name": "X", "odds": "3.2", "is_active": 0}]}
    before = coercion_counts["empty_market_name"]
    outcome = await cache.apply_scrape(7, "bet9ja", [nameless], T0)
    assert outcome.new == 1
    assert coercion_counts["empty_market_name"] == before + 1
    market = (await cache.get_snapshot(7, "bet9ja")).market("1")
    assert market.betpawa_market_name == ""
    assert market.outcomes == [{"name": "1", "odds": 2.1, "is_active": True}, {"name": "X", "odds": 3.2, "is_active": False}]
    # the same prices as numbers are the same market: nothing changed
    same = await cache.apply_scrape(7, "bet9ja", [{**nameless, "betpawa_market_name": None, "outcomes": [
        {"name": "1", "odds": 2.1, "is_active": True}, {"name": "X", "odds": 3.2, "is_active": False}]}], T0.replace(minute=5))
    assert (same.new, same.changed, same.unchanged) == (0, 0, 1)


async def test_strict_one_bad_text_in_a_batch_is_that_scrapes_invalid_outcome_the_others_apply(cache):
    good = raw()
    batch = [
        Scrape(1, "betpawa", [good], T0),
        Scrape(2, "betpawa", [good, raw(betpawa_market_id="19", betpawa_market_name="Over\ud800")], T0),  # lone surrogate
        Scrape(3, "betpawa", [good, {**with_outcome(name="x" * 501), "betpawa_market_id": "20"}], T0),
        Scrape(4, "betpawa", [good], T0),
    ]
    outcomes = await cache.apply_batch(batch, strict=True)
    assert [o.status for o in outcomes] == ["applied", "invalid", "invalid", "applied"]
    assert isinstance(outcomes[1].error, InvalidScrape)
    assert "event 2 at betpawa: markets[1] 19@2.5: betpawa_market_name: lone surrogate '\\ud800'" in str(outcomes[1].error)
    assert "outcomes[0]: name: expected at most 500 characters, got 501" in str(outcomes[2].error)
    assert await cache.get_snapshot(2, "betpawa") is None and await cache.get_snapshot(3, "betpawa") is None
    assert (await cache.get_snapshot(4, "betpawa")).market("18", 2.5) is not None


async def test_one_bad_text_is_that_markets_rejection_the_scrapes_good_markets_apply(cache):
    good = raw()
    batch = [
        Scrape(2, "betpawa", [good, raw(betpawa_market_id="19", betpawa_market_name="Over\ud800")], T0),
        Scrape(3, "betpawa", [good, {**with_outcome(name="x" * 501), "betpawa_market_id": "20"}], T0),
    ]
    first, second = await cache.apply_batch(batch)
    assert first.applied and second.applied and not first.partial
    [r] = first.rejected
    assert (r.key, r.field, r.value, r.reason) == (MarketKey("19", 2.5), "betpawa_market_name", "'Over\\ud800'",
                                                   "invalid_text")
    assert "event 2 at betpawa: markets[1] 19@2.5: betpawa_market_name: lone surrogate '\\ud800'" in r.message
    [r] = second.rejected
    assert (r.key, r.field, r.reason) == (MarketKey("20", 2.5), "outcomes[0].name", "invalid_text")
    assert r.value == shown("x" * 501) and len(r.value) < 120
    for event in (2, 3):  # the good market is stored; the bad one has no row (none was stored before)
        assert [m.key for m in (await cache.get_snapshot(event, "betpawa")).markets] == [MarketKey("18", 2.5)]


async def test_strict_a_key_collision_is_that_scrapes_invalid_outcome_and_writes_nothing(cache):
    def european(handicap, home, away):
        return {"betpawa_market_id": "4724", "betpawa_market_name": "European handicap", "line": None,
                "handicap_type": "european", "handicap_home": handicap, "handicap_away": -handicap,
                "outcomes": [{"name": "1", "odds": home}, {"name": "2", "odds": away}]}

    await cache.apply_scrape(5, "sportybet", [raw()], T0)
    outcomes = await cache.apply_batch([
        Scrape(5, "sportybet", [raw(), european(1, 1.3, 7.0), european(2, 1.1, 15.0)], T0.replace(minute=5)),
        Scrape(6, "sportybet", [raw(), european(1, 1.3, 7.0), european(1, 1.3, 7.0)], T0.replace(minute=5)),
    ], strict=True)
    assert [o.status for o in outcomes] == ["invalid", "applied"]  # identical duplicates merge
    error = outcomes[0].error
    assert isinstance(error, KeyCollision) and error.key == MarketKey("4724", None)
    assert str(error).startswith("market 4724@_: key collision: rows with betpawa_market_id='4724' and line=None "
                                 "carry outcome '1' at odds 1.3")
    snap = await cache.get_snapshot(5, "sportybet")
    assert snap.last_scraped_at == T0 and [m.key for m in snap.markets] == [MarketKey("18", 2.5)]
    with pytest.raises(KeyCollision):
        await cache.apply_scrape(5, "sportybet", [european(1, 1.3, 7.0), european(2, 1.1, 15.0)], T0.replace(minute=9),
                                 strict=True)


async def test_a_key_collision_is_that_markets_rejection_and_neither_price_is_stored(cache):
    def european(handicap, home, away):
        return {"betpawa_market_id": "4724", "betpawa_market_name": "European handicap", "line": None,
                "handicap_type": "european", "handicap_home": handicap, "handicap_away": -handicap,
                "outcomes": [{"name": "1", "odds": home}, {"name": "2", "odds": away}]}

    # stored once, cleanly; then the bookmaker sends 1:0 and 2:0 under one key
    await cache.apply_scrape(5, "sportybet", [raw(), european(1, 1.3, 7.0)], T0)
    outcome = await cache.apply_scrape(
        5, "sportybet", [raw(), european(1, 1.25, 7.5), european(2, 1.1, 15.0)], T0.replace(minute=5))
    assert outcome.applied and outcome.became_unavailable == () and not outcome.partial
    [r] = outcome.rejected
    assert (r.key, r.field, r.value, r.reason) == (MarketKey("4724", None), "outcomes", "'1'", "key_collision")
    assert r.message.startswith("market 4724@_: key collision: rows with betpawa_market_id='4724' and line=None "
                                "carry outcome '1' at odds 1.25")
    # neither guess: the last good payload stays, available
    market = (await cache.get_snapshot(5, "sportybet")).market("4724")
    assert market.is_available and [o["odds"] for o in market.outcomes] == [1.3, 7.0]
    # keyed by the handicap, as docs/rules.md says, both are stored
    fixed = await cache.apply_scrape(5, "sportybet", [raw(), {**european(1, 1.25, 7.5), "line": 1.0},
                                                      {**european(2, 1.1, 15.0), "line": 2.0}], T0.replace(minute=9))
    assert fixed.rejected == () and fixed.new == 2 and fixed.became_unavailable == (MarketKey("4724", None),)
