"""The reference availability rules (pure Python, no Redis)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from structlog.testing import capture_logs

from availability.detection import detect_availability_changes, get_market_key
from availability.errors import InvalidMarketKey, InvalidScrape
from availability.model import CachedMarket, MarketKey

UTC = timezone.utc
T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
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


def test_naive_timestamp_is_rejected():
    with pytest.raises(InvalidScrape, match=r"^timestamp: .*naive"):
        detect_availability_changes([market()], [], datetime(2026, 11, 28, 12, 0))


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
    assert events[0]["became_unavailable"] == 2
    assert events[0]["became_available"] == 1
    assert events[0]["disappeared"] == 3
    assert events[0]["log_level"] == "info"


def test_nothing_is_logged_without_a_transition():
    with capture_logs() as logs:
        detect_availability_changes([market(unavailable_at=T0)], [], T1)
        detect_availability_changes([market()], [market()], T1)
    assert [e for e in logs if e["event"] == "availability_detection.changes"] == []
