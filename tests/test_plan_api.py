"""The public API called exactly the way the plan's code calls it.

Positional ``CachedMarket`` with 8 and 9 fields, ``previous_markets`` as a dict
``{market_key: CachedMarket}``, new data as dicts and ORM rows, naive UTC
timestamps, and the plan's verify commands run as subprocesses (their stdout
is what the plan checks, so nothing else may be printed there).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta

import pytest

import availability
from factory import UTC

from availability.db.models import CompetitorMarketOdds, MarketOdds
from availability.detection import detect_availability_changes, get_market_key
from availability.model import CachedMarket

NOW_NAIVE = datetime(2026, 11, 28, 12, 0)  # what datetime.utcnow() returns
NOW = NOW_NAIVE.replace(tzinfo=UTC)


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)


# ---------------------------------------------------------------- CachedMarket


def test_cached_market_fields_are_the_plans_in_its_order():
    assert [(f.name, f.default) for f in dataclasses.fields(CachedMarket)] == [
        ("betpawa_market_id", dataclasses.MISSING), ("betpawa_market_name", dataclasses.MISSING),
        ("line", dataclasses.MISSING), ("handicap_type", dataclasses.MISSING),
        ("handicap_home", dataclasses.MISSING), ("handicap_away", dataclasses.MISSING),
        ("outcomes", dataclasses.MISSING), ("market_groups", dataclasses.MISSING),
        ("unavailable_at", None),
    ]
    assert CachedMarket.__dataclass_params__.frozen


def test_positional_cached_market_with_eight_and_nine_fields():
    eight = CachedMarket("18", "Over/Under", 2.5, "total", 2.5, -2.5, [{"name": "Over", "odds": 1.85, "is_active": True}],
                         ["main"])
    nine = CachedMarket("18", "Over/Under", 2.5, "total", 2.5, -2.5, [{"name": "Over", "odds": 1.85, "is_active": True}],
                        ["main"], NOW)
    assert eight.unavailable_at is None and eight.is_available
    assert nine.unavailable_at == NOW and not nine.is_available
    assert dataclasses.replace(nine, unavailable_at=None) == eight
    with pytest.raises(dataclasses.FrozenInstanceError):
        eight.unavailable_at = NOW  # type: ignore[misc]


# ---------------------------------------------------------------- get_market_key


class OrmRow:
    """An ORM-like object: plain attributes, not a mapping."""

    def __init__(self, betpawa_market_id, line, **rest):
        self.betpawa_market_id = betpawa_market_id
        self.line = line
        self.__dict__.update(rest)


def test_get_market_key_of_a_cached_market_a_dict_and_an_object():
    m = CachedMarket("18", "Over/Under", 2.5, None, None, None, [], None)
    assert get_market_key(m) == ("18", 2.5)
    assert get_market_key(CachedMarket("1", "1X2", None, None, None, None, [], None, None)) == ("1", None)
    assert get_market_key({"betpawa_market_id": "18", "line": 2.5}) == ("18", 2.5)
    assert get_market_key({"betpawa_market_id": "1"}) == ("1", None)
    assert get_market_key(OrmRow("18", 2.5)) == ("18", 2.5)
    assert get_market_key(MarketOdds(event_id=7, betpawa_market_id="18", line=2.5)) == ("18", 2.5)
    assert get_market_key(CompetitorMarketOdds(event_id=7, source="bet9ja", betpawa_market_id="1", line=None)) == ("1", None)
    # a plain tuple compares equal, as the plan's tuple[str, float | None] does
    key = get_market_key(m)
    assert isinstance(key, tuple) and key == ("18", 2.5) and hash(key) == hash(("18", 2.5))


# ---------------------------------------------------------------- detect_availability_changes


def test_detection_called_as_the_plan_calls_it():
    def cached(market_id, line, unavailable_at=None):
        return CachedMarket(market_id, f"Market {market_id}", line, None, None, None,
                            [{"name": "Home", "odds": 1.5, "is_active": True}], None, unavailable_at)

    previous_list = [cached("1", None), cached("18", 2.5), cached("18", 3.5, NOW - timedelta(hours=1)),
                     cached("18", 4.5)]
    previous_markets = {get_market_key(m): m for m in previous_list}
    new_market_data = [
        {"betpawa_market_id": "1", "line": None, "betpawa_market_name": "1X2", "outcomes": []},  # dict
        MarketOdds(event_id=7, betpawa_market_id="18", line=3.5, betpawa_market_name="O/U"),  # ORM row
    ]

    became_unavailable, became_available, disappeared_keys = detect_availability_changes(
        previous_markets, new_market_data, NOW_NAIVE)

    assert became_unavailable == [dataclasses.replace(previous_list[1], unavailable_at=NOW),
                                  dataclasses.replace(previous_list[3], unavailable_at=NOW)]
    assert all(m.unavailable_at.tzinfo is UTC for m in became_unavailable)
    assert became_available == [dataclasses.replace(previous_list[2], unavailable_at=None)]
    assert disappeared_keys == [("18", 2.5), ("18", 4.5)]
    # the same call with the previous markets as a list, and an aware timestamp, agrees
    assert detect_availability_changes(previous_list, new_market_data, NOW) == (
        became_unavailable, became_available, disappeared_keys)


# ---------------------------------------------------------------- the plan's verify commands


def test_verify_detection_imports():
    done = run_python("from availability.detection import get_market_key, detect_availability_changes; "
                      "print('imports ok')")
    assert (done.returncode, done.stdout, done.stderr) == (0, "imports ok\n", "")


def test_verify_cached_market_is_available():
    done = run_python("from availability.model import CachedMarket; "
                      "m = CachedMarket('1', 'Test', None, None, None, None, [], None, None); print(m.is_available)")
    assert (done.returncode, done.stdout, done.stderr) == (0, "True\n", "")


def test_verify_package_exports():
    done = run_python("""
        import availability
        from availability import *
        missing = [name for name in availability.__all__ if not hasattr(availability, name)]
        print(sorted(availability.__all__), missing)
    """)
    assert done.returncode == 0 and done.stderr == ""
    exported, missing = done.stdout.rsplit(" ", 1)
    assert missing.strip() == "[]"
    assert sorted(availability.__all__) == eval(exported)
    for name in ("CachedMarket", "CachedSnapshot", "MarketKey", "get_market_key", "detect_availability_changes",
                 "MarketCache", "EventCoordinator", "InvalidScrape", "KeyCollision", "RejectedMarket"):
        assert name in availability.__all__


def test_detection_prints_nothing_in_an_unconfigured_process():
    # structlog unconfigured prints every event to stdout; the library must not,
    # or it pollutes the output of whatever program embeds it
    done = run_python("""
        from datetime import datetime
        from availability.detection import detect_availability_changes
        from availability.model import CachedMarket
        m = CachedMarket('1', 'Test', None, None, None, None, [], None, None)
        gone, back, keys = detect_availability_changes({('1', None): m}, [], datetime(2026, 11, 28, 12, 0))
        print(len(gone), gone[0].unavailable_at.isoformat())
    """)
    assert (done.returncode, done.stdout, done.stderr) == (0, "1 2026-11-28T12:00:00+00:00\n", "")


def test_once_the_application_configures_logging_the_event_is_logged_with_the_plans_fields():
    done = run_python("""
        from datetime import datetime, timezone
        from availability.detection import detect_availability_changes
        from availability.logs import configure_logging
        from availability.model import CachedMarket
        configure_logging("INFO", json=True)
        m = CachedMarket('1', 'Test', None, None, None, None, [], None, None)
        detect_availability_changes([m], [], datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc))
    """)
    assert done.returncode == 0 and done.stdout == ""
    [line] = done.stderr.splitlines()
    event = json.loads(line)
    assert event["event"] == "availability_detection.changes"
    assert {k: event[k] for k in ("became_unavailable", "became_available", "disappeared_keys_count")} == {
        "became_unavailable": 1, "became_available": 0, "disappeared_keys_count": 1}
    assert set(event) == {"event", "level", "timestamp", "became_unavailable", "became_available",
                          "disappeared_keys_count"}
