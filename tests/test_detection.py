"""The reference availability rules (pure Python, no Redis)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from structlog.testing import capture_logs

from factory import T0, UTC

from availability.detection import detect_availability_changes, get_market_key
from availability.errors import InvalidMarketKey, InvalidScrape
from availability.model import CachedMarket, MarketKey

T1 = T0 + timedelta(minutes=5)
T2 = T0 + timedelta(minutes=10)


def market(market_id="18", line=2.5, unavailable_at=None, odds=1.85):
    return CachedMarket(market_id, "Over/Under", line, None, None, None,
                        [{"name": "Over", "odds": odds, "is_active": True}], None, unavailable_at)


# ---------------------------------------------------------------- get_market_key


def test_key_of_a_cached_market():
    assert get_market_key(market("18", "2.50")) == MarketKey("18", 2.5)


def test_key_of_a_mapping_with_and_without_line():
    assert get_market_key({"betpawa_market_id": 18, "line": "0"}) == MarketKey("18", 0.0)
    # a missing line is a market without one, never 0.0
    assert get_market_key({"betpawa_market_id": "1"}) == MarketKey("1", None)
    assert get_market_key({"betpawa_market_id": "1", "line": None}) == MarketKey("1", None)


def test_key_of_an_object_with_and_without_line():
    assert get_market_key(SimpleNamespace(betpawa_market_id="18", line=-0.0)) == MarketKey("18", 0.0)
    assert get_market_key(SimpleNamespace(betpawa_market_id="1")) == MarketKey("1", None)


def test_key_without_market_id_is_rejected():
    with pytest.raises(InvalidMarketKey, match="betpawa_market_id: missing"):
        get_market_key({"line": 2.5})
    with pytest.raises(InvalidMarketKey, match="betpawa_market_id: SimpleNamespace object has no such attribute"):
        get_market_key(SimpleNamespace(line=2.5))
    with pytest.raises(InvalidMarketKey, match=r"^line:"):
        get_market_key({"betpawa_market_id": "18", "line": "nan"})


# ---------------------------------------------------------------- detection


def test_missing_available_markets_are_stamped():
    a, b, c = market("1", None), market("18", 2.5), market("18", 3.5)
    gone, back, disappeared = detect_availability_changes([a, b, c], [a], T1)
    assert gone == [replace(b, unavailable_at=T1), replace(c, unavailable_at=T1)]
    assert back == []
    assert disappeared == [MarketKey("18", 2.5), MarketKey("18", 3.5)]


def test_already_stamped_markets_keep_their_first_stamp_and_are_not_reported_again():
    stamped = market("18", 2.5, unavailable_at=T0)
    gone, back, disappeared = detect_availability_changes([stamped, market("1", None)], [market("1", None)], T2)
    assert gone == []
    assert back == []
    # still missing, so still listed as disappeared
    assert disappeared == [MarketKey("18", 2.5)]


def test_returning_markets_are_cleared():
    stamped = market("18", 2.5, unavailable_at=T0)
    gone, back, disappeared = detect_availability_changes([stamped], [market("18", "2.5", odds=2.0)], T1)
    assert gone == [] and disappeared == []
    assert back == [market("18", 2.5)]  # the cached market, with the stamp cleared
    assert back[0].is_available


def test_present_available_markets_are_not_reported():
    a = market("18", 2.5)
    assert detect_availability_changes([a], [a], T1) == ([], [], [])


def test_none_and_zero_lines_are_separate():
    no_line, zero = market("18", None), market("18", 0.0)
    gone, _, disappeared = detect_availability_changes([no_line, zero], [{"betpawa_market_id": "18", "line": 0}], T1)
    assert [m.key for m in gone] == [MarketKey("18", None)]
    assert disappeared == [MarketKey("18", None)]


def test_new_data_may_be_mappings_objects_or_cached_markets():
    previous = [market("1", None), market("18", 2.5), market("18", 3.5)]
    new = [{"betpawa_market_id": 1}, SimpleNamespace(betpawa_market_id="18", line="2.50"), market("18", 3.5)]
    assert detect_availability_changes(previous, new, T1) == ([], [], [])


def test_markets_only_in_the_new_data_are_ignored():
    assert detect_availability_changes([], [market("1", None)], T1) == ([], [], [])


def test_stamp_is_converted_to_utc():
    plus_two = timezone(timedelta(hours=2))
    gone, _, _ = detect_availability_changes([market()], [], T1.astimezone(plus_two))
    assert gone[0].unavailable_at == T1
    assert gone[0].unavailable_at.tzinfo is UTC


def test_naive_timestamp_is_taken_as_utc_and_stamps_are_aware():
    # the coordinator of the plan passes datetime.utcnow()-style naive UTC times
    naive = datetime(2026, 11, 28, 12, 5)
    gone, _, _ = detect_availability_changes([market()], [], naive)
    assert gone[0].unavailable_at == T1
    assert gone[0].unavailable_at.tzinfo is UTC


@pytest.mark.parametrize("value", ["2026-11-28T12:05:00Z", 1_795_000_000, None])
def test_timestamp_that_is_not_a_datetime_is_rejected(value):
    with pytest.raises(InvalidScrape, match=r"^timestamp: expected a datetime, got "):
        detect_availability_changes([market()], [], value)


# ---------------------------------------------------------------- previous_markets as the plan passes it


def test_previous_markets_may_be_a_dict_keyed_by_market_key():
    a, b, c = market("1", None), market("18", 2.5), market("18", 3.5, unavailable_at=T0)
    previous = {get_market_key(m): m for m in (a, b, c)}
    gone, back, disappeared = detect_availability_changes(previous, [a, market("18", 3.5)], T1)
    assert gone == [replace(b, unavailable_at=T1)]
    assert back == [replace(c, unavailable_at=None)]
    assert disappeared == [MarketKey("18", 2.5)]


def test_previous_dict_keys_are_not_used_only_its_values():
    # the plan's own get_market_key leaves lines as sent ("2.50"): the values decide
    b = market("18", 2.5)
    gone, _, disappeared = detect_availability_changes({("18", "2.50"): b}, [{"betpawa_market_id": "18", "line": 2.5}], T1)
    assert gone == [] and disappeared == []
    gone, _, _ = detect_availability_changes({"anything": b}, [], T1)
    assert gone == [replace(b, unavailable_at=T1)]


def test_previous_markets_may_be_any_iterable_of_cached_markets():
    a, b = market("1", None), market("18", 2.5)
    for previous in ((a, b), iter([a, b]), (m for m in (a, b))):
        gone, _, _ = detect_availability_changes(previous, [a], T1)
        assert gone == [replace(b, unavailable_at=T1)]


@pytest.mark.parametrize("previous, message", [
    (None, r"^previous_markets: expected a dict \{market_key: CachedMarket\} or an iterable of CachedMarket, got NoneType$"),
    (5, r"^previous_markets: .* got int$"),
    ("18@2.5", r"^previous_markets: .* got str$"),
    (b"18", r"^previous_markets: .* got bytes$"),
    ([market(), {"betpawa_market_id": "1"}], r"^previous_markets\[1\]: expected a CachedMarket, got dict$"),
    ({("18", 2.5): SimpleNamespace(betpawa_market_id="18", line=2.5)},
     r"^previous_markets values\[0\]: expected a CachedMarket, got SimpleNamespace$"),
])
def test_anything_else_as_previous_markets_is_a_type_error(previous, message):
    with pytest.raises(TypeError, match=message):
        detect_availability_changes(previous, [], T1)


@pytest.mark.parametrize("new", [None, 5, "18", {"betpawa_market_id": "18", "line": 2.5}])
def test_new_market_data_must_be_a_list_of_markets(new):
    with pytest.raises(TypeError, match=r"^new_market_data: expected a list of markets"):
        detect_availability_changes([market()], new, T1)


def test_inputs_are_not_mutated():
    previous = [market("18", 2.5), market("18", 3.5, unavailable_at=T0)]
    before = list(previous)
    detect_availability_changes(previous, [market("18", 3.5)], T1)
    assert previous == before


# ---------------------------------------------------------------- log event


def test_changes_are_logged_with_the_three_counts():
    previous = [market("1", None), market("18", 2.5), market("18", 3.5, unavailable_at=T0),
                market("18", 4.5, unavailable_at=T0)]
    with capture_logs() as logs:
        detect_availability_changes(previous, [market("18", 4.5)], T1)
    events = [e for e in logs if e["event"] == "availability_detection.changes"]
    assert len(events) == 1
    # exactly the plan's field names, nothing else
    assert events[0] == {"event": "availability_detection.changes", "log_level": "info",
                         "became_unavailable": 2, "became_available": 1, "disappeared_keys_count": 3}


def test_nothing_is_logged_without_a_transition():
    with capture_logs() as logs:
        detect_availability_changes([market(unavailable_at=T0)], [], T1)
        detect_availability_changes([market()], [market()], T1)
    assert [e for e in logs if e["event"] == "availability_detection.changes"] == []
