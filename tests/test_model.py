"""The pure model: market keys, their Redis field text, canonical encodings, merging."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from factory import T0, UTC

from availability.errors import InvalidMarketKey, InvalidScrape, KeyCollision
from availability.model import (
    CachedMarket,
    CachedSnapshot,
    MarketKey,
    coerce_market,
    decode_market,
    encode_market,
    field_to_key,
    format_ts,
    from_micros,
    key_sort_order,
    key_to_field,
    market_from_dict,
    market_key,
    market_to_dict,
    merge_markets,
    normalize_line,
    normalize_market_id,
    parse_ts,
    to_micros,
    to_utc,
)


def raw_market(market_id="18", line=2.5, outcomes=None, **extra):
    data = {
        "betpawa_market_id": market_id,
        "betpawa_market_name": "Over/Under",
        "line": line,
        "outcomes": outcomes if outcomes is not None else [
            {"name": "Over", "odds": 1.85, "is_active": True},
            {"name": "Under", "odds": 1.95, "is_active": True},
        ],
    }
    data.update(extra)
    return data


# ---------------------------------------------------------------- lines


@pytest.mark.parametrize("value", [2.5, 2.50, Decimal("2.5"), Decimal("2.50"), "2.5", "2.50", " 2.5 ", "+2.5", "25e-1"])
def test_spellings_of_one_line_are_one_line(value):
    assert normalize_line(value) == 2.5
    assert type(normalize_line(value)) is float
    assert market_key("18", value) == market_key("18", 2.5)
    assert key_to_field(market_key("18", value)) == "18@2.5"


def test_integer_lines_are_floats():
    assert normalize_line(3) == 3.0 and type(normalize_line(3)) is float
    assert key_to_field(market_key("18", 3)) == key_to_field(market_key("18", "3.0")) == "18@3.0"


@pytest.mark.parametrize("value", [-0.0, 0, 0.0, Decimal("-0"), Decimal("-0.00"), "-0", "-0.0", "0"])
def test_negative_zero_is_zero(value):
    line = normalize_line(value)
    assert line == 0.0
    assert math.copysign(1.0, line) == 1.0
    assert key_to_field(market_key("18", value)) == "18@0.0"


def test_no_line_and_zero_line_are_different_markets():
    none_key, zero_key = market_key("18", None), market_key("18", 0.0)
    assert none_key != zero_key
    assert key_to_field(none_key) == "18@_"
    assert key_to_field(zero_key) == "18@0.0"
    assert len({none_key, zero_key}) == 2
    assert field_to_key("18@_").line is None
    assert field_to_key("18@0.0").line == 0.0


@pytest.mark.parametrize(
    "value",
    [
        math.nan, math.inf, -math.inf, Decimal("NaN"), Decimal("sNaN"), Decimal("Infinity"), Decimal("-Infinity"),
        Decimal("1e400"), 10**400, -(10**400), "nan", "NaN", "inf", "-inf", "Infinity", "1e400",
    ],
)
def test_non_finite_lines_are_rejected(value):
    with pytest.raises(InvalidMarketKey) as info:
        normalize_line(value)
    message = str(info.value)
    assert message.startswith("line:")
    assert "finite" in message
    assert repr(value)[:80] in message  # long values are cut, see test_long_values_are_cut_in_messages


@pytest.mark.parametrize("value", [True, False])
def test_boolean_lines_are_rejected(value):
    with pytest.raises(InvalidMarketKey, match=rf"^line: .*boolean {value!r}"):
        normalize_line(value)


@pytest.mark.parametrize("value", ["", "   ", "abc", "2.5x", "O 2.5", "0x10", "2,5", "2_5", "1e"])
def test_non_numeric_and_empty_strings_are_rejected(value):
    with pytest.raises(InvalidMarketKey) as info:
        normalize_line(value)
    assert str(info.value).startswith("line:")
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("value", [[2.5], {"line": 2.5}, b"2.5", object()])
def test_other_line_types_are_rejected(value):
    with pytest.raises(InvalidMarketKey, match=r"^line: expected a number"):
        normalize_line(value)


# ---------------------------------------------------------------- market ids


def test_market_ids_are_text_and_ints_are_converted():
    assert normalize_market_id("18") == "18"
    assert normalize_market_id(18) == "18"
    assert market_key(18, None) == market_key("18", None) == MarketKey("18", None)


@pytest.mark.parametrize("value", ["", " 18", "18 ", "1\n8", "1\x008", "\t", None, 1.0, True, False, b"18", ["18"]])
def test_bad_market_ids_are_rejected_naming_field_and_value(value):
    with pytest.raises(InvalidMarketKey) as info:
        normalize_market_id(value)
    assert str(info.value).startswith("betpawa_market_id:")
    assert repr(value) in str(info.value)


# ---------------------------------------------------------------- field text

valid_ids = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=12).filter(
    lambda s: s == s.strip()
) | st.sampled_from(["1", "18", "a@b", "@", "@@", "x@_", "x@2.5", "_", "1@_@0.0"])
extreme_floats = st.sampled_from(
    [0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, -1.7976931348623157e308,
     0.1, 1e16, 1e-7, 123456789.123456789, 2.5, -0.25]
)
lines = st.none() | st.floats(allow_nan=False, allow_infinity=False) | extreme_floats


@given(valid_ids, lines)
def test_key_field_round_trip_is_exact(market_id, line):
    key = market_key(market_id, line)
    text = key_to_field(key)
    back = field_to_key(text)
    assert back == key
    assert back.betpawa_market_id == market_id
    if line is None:
        assert back.line is None
    else:
        assert back.line.hex() == (line + 0.0).hex()  # bit for bit, -0.0 folded
    assert field_to_key(text.encode()) == key


@given(st.lists(st.tuples(valid_ids, lines), max_size=30))
def test_distinct_keys_have_distinct_fields(pairs):
    keys = {market_key(m, line) for m, line in pairs}
    assert len({key_to_field(k) for k in keys}) == len(keys)


def test_ids_containing_at_sign_round_trip():
    for market_id in ["a@b", "a@", "@", "x@_", "18@2.5"]:
        for line in [None, 0.0, 2.5]:
            key = market_key(market_id, line)
            assert field_to_key(key_to_field(key)) == key


@pytest.mark.parametrize("text", ["18", "", "18@", "18@abc", "18@nan", "18@inf", "@2.5", "@_"])
def test_malformed_fields_are_rejected(text):
    with pytest.raises(InvalidMarketKey):
        field_to_key(text)


def test_key_sort_order_puts_no_line_first_then_lines_ascending():
    keys = [market_key("2", None), market_key("1", 2.5), market_key("1", -1.5), market_key("1", 0.0),
            market_key("1", None)]
    assert sorted(keys, key=key_sort_order) == [
        market_key("1", None), market_key("1", -1.5), market_key("1", 0.0), market_key("1", 2.5),
        market_key("2", None),
    ]


def test_key_sort_order_sorts_numeric_ids_as_numbers_and_other_ids_after_them():
    keys = [market_key("139", 4.5), market_key("14", 3.0), market_key("x1", None), market_key("2", None),
            market_key("014", None), market_key("A", None)]
    assert [key_to_field(k) for k in sorted(keys, key=key_sort_order)] == [
        "2@_", "014@_", "14@3.0", "139@4.5", "A@_", "x1@_",
    ]


# ---------------------------------------------------------------- time


def test_naive_datetimes_are_rejected_naming_the_field():
    with pytest.raises(InvalidScrape, match=r"^scraped_at: .*naive"):
        to_utc(datetime(2026, 11, 28, 12, 0), "scraped_at")
    with pytest.raises(InvalidScrape, match=r"^scraped_at: expected a timezone-aware datetime, got '2026'"):
        to_utc("2026", "scraped_at")


def test_aware_datetimes_are_converted_to_utc():
    plus_one = timezone(timedelta(hours=1))
    local = datetime(2026, 11, 28, 13, 0, tzinfo=plus_one)
    assert to_utc(local) == T0 and to_utc(local).tzinfo is UTC


@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)))
def test_timestamps_round_trip_through_micros_and_text(value):
    assert from_micros(to_micros(value)) == value
    assert from_micros(str(to_micros(value)).encode()) == value
    assert parse_ts(format_ts(value)) == value
    assert len(format_ts(value)) == 27


# ---------------------------------------------------------------- CachedMarket


def test_cached_market_positional_constructor():
    with_stamp = CachedMarket("1", "Test", None, None, None, None, [], None, None)
    without = CachedMarket("1", "Test", None, None, None, None, [], None)
    assert with_stamp == without
    assert with_stamp.is_available and without.unavailable_at is None
    assert with_stamp.key == MarketKey("1", None)


def test_is_available_is_unavailable_at_none():
    stamped = CachedMarket("1", "Test", None, None, None, None, [], None, T0)
    assert not stamped.is_available
    # suspended (every outcome locked) is still available
    suspended = CachedMarket("1", "Test", None, None, None, None, [{"name": "1", "odds": 2.0, "is_active": False}], None)
    assert suspended.is_available


def test_snapshot_helpers():
    a = CachedMarket("1", "1X2", None, None, None, None, [], None)
    b = CachedMarket("18", "O/U", 2.5, None, None, None, [], None, T0)
    snap = CachedSnapshot(1, "betpawa", T0, T0, (a, b))
    assert snap.available_markets == (a,)
    assert snap.unavailable_markets == (b,)
    assert snap.market("18", "2.50") is b
    assert snap.market("18", 0.0) is None
    assert snap.market(1) is a


# ---------------------------------------------------------------- coercion


def test_coerce_market_normalises_everything():
    m = coerce_market(raw_market(line=Decimal("2.50"), outcomes=[{"name": "Over", "odds": 2}],
                                 handicap_home=Decimal("-0"), handicap_type="asian", market_groups=("main",)))
    assert m.line == 2.5
    assert m.outcomes == [{"name": "Over", "odds": 2.0, "is_active": True}]
    assert type(m.outcomes[0]["odds"]) is float
    assert m.handicap_home == 0.0 and math.copysign(1.0, m.handicap_home) == 1.0
    assert m.market_groups == ["main"]


def test_coerce_market_accepts_objects_with_the_same_attributes():
    class Row:
        betpawa_market_id = "18"
        betpawa_market_name = "Over/Under"
        line = "2.5"
        outcomes = [{"name": "Over", "odds": 1.9, "is_active": False}]

    assert coerce_market(Row()).key == MarketKey("18", 2.5)
    assert coerce_market(coerce_market(Row())) == coerce_market(Row())


def test_market_dict_round_trip():
    m = coerce_market(raw_market(unavailable_at=T0))
    assert market_from_dict(market_to_dict(m)) == m


@pytest.mark.parametrize(
    ("changes", "field", "value"),
    [
        ({"betpawa_market_id": ""}, "betpawa_market_id", ""),
        ({"line": "abc"}, "line", "abc"),
        ({"line": math.nan}, "line", math.nan),
        ({"line": True}, "line", True),
        ({"betpawa_market_name": 5}, "betpawa_market_name", 5),
        ({"betpawa_market_name": b"1X2"}, "betpawa_market_name", b"1X2"),
        ({"outcomes": "Over"}, "outcomes", "Over"),
        ({"outcomes": {"name": "Over", "odds": 1.5}}, "outcomes", {"name": "Over", "odds": 1.5}),
        ({"outcomes": None}, "outcomes", None),
        ({"outcomes": ["Over"]}, "outcomes[0]", "Over"),
        ({"outcomes": [{"name": "", "odds": 1.5}]}, "name", ""),
        ({"outcomes": [{"odds": 1.5}]}, "name", None),
        ({"outcomes": [{"name": "Over", "odds": 0}]}, "odds", 0),
        ({"outcomes": [{"name": "Over", "odds": -1.5}]}, "odds", -1.5),
        ({"outcomes": [{"name": "Over", "odds": math.nan}]}, "odds", math.nan),
        ({"outcomes": [{"name": "Over", "odds": math.inf}]}, "odds", math.inf),
        ({"outcomes": [{"name": "Over", "odds": True}]}, "odds", True),
        ({"outcomes": [{"name": "Over", "odds": "abc"}]}, "odds", "abc"),
        ({"outcomes": [{"name": "Over", "odds": "1_5"}]}, "odds", "1_5"),
        ({"outcomes": [{"name": "Over", "odds": "1,85"}]}, "odds", "1,85"),
        ({"outcomes": [{"name": "Over", "odds": "NaN"}]}, "odds", "NaN"),
        ({"outcomes": [{"name": "Over", "odds": "inf"}]}, "odds", "inf"),
        ({"outcomes": [{"name": "Over", "odds": "1e400"}]}, "odds", "1e400"),
        ({"outcomes": [{"name": "Over", "odds": "0"}]}, "odds", "0"),
        ({"outcomes": [{"name": "Over", "odds": "-1.85"}]}, "odds", "-1.85"),
        ({"outcomes": [{"name": "Over", "odds": ""}]}, "odds", ""),
        ({"outcomes": [{"name": "Over", "odds": None}]}, "odds", None),
        ({"outcomes": [{"name": "Over", "odds": b"1.85"}]}, "odds", b"1.85"),
        ({"outcomes": [{"name": "Over", "odds": 10**400}]}, "odds", 10**400),
        ({"outcomes": [{"name": "Over", "odds": Decimal("sNaN")}]}, "odds", Decimal("sNaN")),
        ({"outcomes": [{"name": "Over", "odds": 1.5, "is_active": 2}]}, "is_active", 2),
        ({"outcomes": [{"name": "Over", "odds": 1.5, "is_active": -1}]}, "is_active", -1),
        ({"outcomes": [{"name": "Over", "odds": 1.5, "is_active": 1.0}]}, "is_active", 1.0),
        ({"outcomes": [{"name": "Over", "odds": 1.5, "is_active": "1"}]}, "is_active", "1"),
        ({"outcomes": [{"name": "Over", "odds": 1.5, "is_active": None}]}, "is_active", None),
        ({"outcomes": [{"name": "Over", "odds": 1.5, "is_active": "yes"}]}, "is_active", "yes"),
        ({"market_groups": "main"}, "market_groups", "main"),
        ({"market_groups": [1]}, "market_groups", 1),
        ({"handicap_home": "1"}, "handicap_home", "1"),
        ({"handicap_away": math.inf}, "handicap_away", math.inf),
        ({"handicap_type": 3}, "handicap_type", 3),
        ({"unavailable_at": datetime(2026, 1, 1)}, "unavailable_at", datetime(2026, 1, 1)),
    ],
)
def test_bad_markets_are_rejected_naming_field_and_value(changes, field, value):
    with pytest.raises(InvalidScrape) as info:
        coerce_market({**raw_market(), **changes})
    message = str(info.value)
    assert f"{field}:" in message or f"{field} " in message
    assert repr(value)[:80] in message


# ---------------------------------------------------------------- canonical encoding


def test_equal_markets_encode_to_equal_bytes():
    a = coerce_market(raw_market(line="2.50", outcomes=[{"name": "Over", "odds": 2}], market_groups=("main",)))
    b = coerce_market(raw_market(line=Decimal("2.5"), outcomes=[{"name": "Over", "odds": 2.0, "is_active": True}],
                                 market_groups=["main"]))
    assert a == b
    assert encode_market(a) == encode_market(b)


def test_int_and_float_odds_encode_identically_even_unvalidated():
    as_int = CachedMarket("1", "1X2", None, None, 1, None, [{"name": "1", "odds": 2, "is_active": 1}], None)
    as_float = CachedMarket("1", "1X2", None, None, 1.0, None, [{"name": "1", "odds": 2.0, "is_active": True}], None)
    assert encode_market(as_int) == encode_market(as_float)


def test_encoding_ignores_unavailable_at_and_extra_outcome_fields():
    m = coerce_market(raw_market())
    stamped = CachedMarket(*[getattr(m, f) for f in ("betpawa_market_id", "betpawa_market_name", "line",
                                                      "handicap_type", "handicap_home", "handicap_away")],
                           [dict(o, extra="x") for o in m.outcomes], m.market_groups, T0)
    assert encode_market(stamped) == encode_market(m)


def test_any_offer_difference_changes_the_bytes():
    base = coerce_market(raw_market())
    variants = [
        raw_market(outcomes=[{"name": "Over", "odds": 1.86}, {"name": "Under", "odds": 1.95}]),
        raw_market(outcomes=[{"name": "Over", "odds": 1.85, "is_active": False}, {"name": "Under", "odds": 1.95}]),
        raw_market(outcomes=[{"name": "Over", "odds": 1.85}]),
        raw_market(line=3.5),
        raw_market(line=None),
        raw_market(market_groups=["main"]),
        raw_market(handicap_type="asian"),
        dict(raw_market(), betpawa_market_name="Total"),
    ]
    encodings = {encode_market(base)} | {encode_market(coerce_market(v)) for v in variants}
    assert len(encodings) == len(variants) + 1


def test_encoding_is_float64_msgpack_and_decodes_back():
    m = coerce_market(raw_market(outcomes=[{"name": "Over", "odds": 1.1}]))
    payload = encode_market(m)
    assert b"\xcb" in payload  # float64 marker: 1.1 would lose bits as float32
    # schema 2: a positional array, no field names
    assert msgpack.unpackb(payload) == [
        m.betpawa_market_id, m.betpawa_market_name, m.line, m.handicap_type, m.handicap_home, m.handicap_away,
        [[o["name"], o["odds"], o["is_active"]] for o in m.outcomes], m.market_groups,
    ]
    assert b"betpawa_market_id" not in payload and b"odds" not in payload
    assert decode_market(payload) == m
    assert decode_market(payload, T0) == CachedMarket(**{**market_to_dict(m), "unavailable_at": T0})


def test_schema_1_payloads_are_refused_by_decode():
    m = coerce_market(raw_market())
    legacy = msgpack.packb({name: getattr(m, name) for name in ("betpawa_market_id", "betpawa_market_name",
                                                                 "line", "handicap_type", "handicap_home",
                                                                 "handicap_away", "outcomes", "market_groups")})
    with pytest.raises(ValueError, match="schema 2"):
        decode_market(legacy)


# ---------------------------------------------------------------- merging rows


def test_rows_with_one_key_are_merged_not_overwritten():
    rows = [
        coerce_market(raw_market(outcomes=[{"name": "Over", "odds": 1.85}], market_groups=["main"])),
        coerce_market(raw_market(line="2.50", outcomes=[{"name": "Under", "odds": 1.95}], market_groups=["goals", "main"],
                                 handicap_type="total")),
        coerce_market(raw_market(line=3.5, outcomes=[{"name": "Over", "odds": 2.4}])),
    ]
    merged = merge_markets(rows)
    assert list(merged) == [MarketKey("18", 2.5), MarketKey("18", 3.5)]
    two_five = merged[MarketKey("18", 2.5)]
    assert [o["name"] for o in two_five.outcomes] == ["Over", "Under"]
    assert two_five.market_groups == ["main", "goals"]
    assert two_five.handicap_type == "total"
    assert merged[MarketKey("18", 3.5)] == rows[2]


def test_identical_repeated_outcomes_are_merged_once_in_first_position():
    rows = [
        coerce_market(raw_market(outcomes=[{"name": "Over", "odds": 1.85}, {"name": "Under", "odds": 1.95}])),
        coerce_market(raw_market(outcomes=[{"name": "Over", "odds": "1.850", "is_active": 1}, {"name": "Draw", "odds": 3}])),
    ]
    merged = merge_markets(rows)[MarketKey("18", 2.5)]
    assert merged.outcomes == [
        {"name": "Over", "odds": 1.85, "is_active": True},
        {"name": "Under", "odds": 1.95, "is_active": True},
        {"name": "Draw", "odds": 3.0, "is_active": True},
    ]


@pytest.mark.parametrize("second", [
    {"name": "Over", "odds": 1.90},  # another price
    {"name": "Over", "odds": 1.85, "is_active": False},  # same price, another state
])
def test_a_repeated_outcome_with_another_price_or_state_is_a_key_collision(second):
    rows = [
        coerce_market(raw_market(outcomes=[{"name": "Over", "odds": 1.85}, {"name": "Under", "odds": 1.95}])),
        coerce_market(raw_market(line="2.50", outcomes=[second])),
    ]
    with pytest.raises(KeyCollision) as info:
        merge_markets(rows)
    assert isinstance(info.value, InvalidScrape)
    assert info.value.key == MarketKey("18", 2.5)
    message = str(info.value)
    assert message.startswith("market 18@2.5: key collision: rows with betpawa_market_id='18' and line=2.5 "
                              "carry outcome 'Over' at odds 1.85 (is_active=True) and at odds ")
    assert "key them apart" in message


def test_european_handicaps_sent_without_a_line_collide_and_keyed_by_handicap_they_do_not():
    # 1:0 and 2:0 both sent as market 4724 with line=None: two markets, one key
    def european(handicap, line, home, draw, away):
        return coerce_market({"betpawa_market_id": "4724", "betpawa_market_name": "European handicap", "line": line,
                              "handicap_type": "european", "handicap_home": handicap, "handicap_away": -handicap,
                              "outcomes": [{"name": "1", "odds": home}, {"name": "X", "odds": draw},
                                           {"name": "2", "odds": away}]})

    with pytest.raises(KeyCollision, match=r"^market 4724@_: key collision") as info:
        merge_markets([european(1, None, 1.3, 4.5, 7.0), european(2, None, 1.1, 8.0, 15.0)])
    assert info.value.key == ("4724", None)
    # the handicap as the line keeps them apart
    merged = merge_markets([european(1, 1, 1.3, 4.5, 7.0), european(2, 2, 1.1, 8.0, 15.0)])
    assert list(merged) == [MarketKey("4724", 1.0), MarketKey("4724", 2.0)]


def test_a_single_row_is_returned_as_it_is():
    row = coerce_market(raw_market(outcomes=[{"name": "Over", "odds": 1.85}, {"name": "Over", "odds": 1.9}]))
    assert merge_markets([row]) == {MarketKey("18", 2.5): row}


def test_merge_keeps_first_name_and_first_non_null_handicaps():
    rows = [
        coerce_market(raw_market(handicap_home=None, handicap_away=-0.5)),
        coerce_market(dict(raw_market(handicap_home=0.5, handicap_away=-1.0), betpawa_market_name="Other")),
    ]
    merged = merge_markets(rows)[MarketKey("18", 2.5)]
    assert merged.betpawa_market_name == "Over/Under"
    assert (merged.handicap_home, merged.handicap_away) == (0.5, -0.5)


def test_merge_of_none_and_zero_lines_keeps_both():
    rows = [coerce_market(raw_market(line=None)), coerce_market(raw_market(line=0.0)), coerce_market(raw_market(line="-0"))]
    assert list(merge_markets(rows)) == [MarketKey("18", None), MarketKey("18", 0.0)]


def test_merge_of_nothing_is_empty():
    assert merge_markets([]) == {}


def test_an_int_market_id_too_long_to_print_is_refused_by_name() -> None:
    """``str()`` of an int beyond 4,300 digits raises ValueError; the id must be
    refused as InvalidMarketKey (a rejection of that market, not a crash of the batch)."""
    from availability.model import InvalidMarketKey, normalize_market_id, screen_markets

    with pytest.raises(InvalidMarketKey, match="betpawa_market_id: expected at most 200 characters"):
        normalize_market_id(10**5000)
    good = {"betpawa_market_id": "1", "betpawa_market_name": "1X2", "line": None,
            "outcomes": [{"name": "1", "odds": 1.5, "is_active": True}]}
    for fast in (True, False):
        screened = screen_markets([dict(good, betpawa_market_id=10**5000), good], "scrape", fast=fast)
        assert [m.betpawa_market_id for m in screened.markets] == ["1"]
        assert [(r.field, r.reason) for r in screened.rejected] == [("betpawa_market_id", "invalid_key")]
