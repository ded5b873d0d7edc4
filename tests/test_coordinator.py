"""EventCoordinator.store_batch_results against real Redis: one bad result never aborts a batch."""

from __future__ import annotations

from datetime import datetime, timedelta

from structlog.testing import capture_logs

from factory import T0, UTC

from availability.coordinator import EventCoordinator, ScrapeResult
from availability.errors import InvalidScrape

SHARDS = 4  # the conftest ``cache`` fixture builds the cache with the module's SHARDS


def mk(market_id: str, line: float | None = None, odds: float = 1.85) -> dict:
    return {"betpawa_market_id": market_id, "betpawa_market_name": f"Market {market_id}", "line": line,
            "outcomes": [{"name": "Home", "odds": odds, "is_active": True}]}


async def test_a_dict_with_a_missing_or_unknown_key_is_its_own_invalid_outcome(cache):
    batch = [
        ScrapeResult(1, "betpawa", [mk("1")], T0),
        {"event_id": 2, "bookmaker": "betpawa", "markets": [mk("1")]},  # no scraped_at
        {"event_id": 3, "bookmaker": "betpawa", "markets": [mk("1")], "scraped_at": T0, "colour": "red"},
        None,
        {"event_id": 4, "bookmaker": "sportybet", "markets": [mk("1"), mk("18", 2.5)], "scraped_at": T0},
        {"event_id": 5, "bookmaker": "betpawa", "markets": None, "scraped_at": T0, "error": "timeout"},
    ]
    with capture_logs() as logs:
        summary = await EventCoordinator(cache).store_batch_results(batch)

    assert (summary.results, summary.applied, summary.invalid, summary.failed_fetches, summary.new) == (6, 2, 3, 1, 3)
    # outcomes follow the order of the results, failed fetches left out
    assert [(o.event_id, o.bookmaker, o.status) for o in summary.outcomes] == [
        (1, "betpawa", "applied"), (2, "betpawa", "invalid"), (3, "betpawa", "invalid"), (None, None, "invalid"),
        (4, "sportybet", "applied")]
    errors = [o.error for o in summary.outcomes if o.status == "invalid"]
    assert all(isinstance(e, InvalidScrape) for e in errors)
    assert str(errors[0]).startswith("results[1]: missing key 'scraped_at' (required: event_id, bookmaker, markets, "
                                     "scraped_at)")
    assert str(errors[1]).startswith("results[2]: unknown key 'colour' (expected event_id, bookmaker, markets, ")
    assert str(errors[2]) == "results[3]: expected a ScrapeResult or a mapping of its fields, got None"
    # the good ones were applied
    assert (await cache.get_snapshot(1, "betpawa")).market("1") is not None
    assert len((await cache.get_snapshot(4, "sportybet")).markets) == 2
    assert await cache.get_snapshot(2, "betpawa") is None and await cache.get_snapshot(3, "betpawa") is None
    refused = [e for e in logs if e["event"] == "availability_detection.scrape_refused"]
    assert [(e["event_id"], e["status"]) for e in refused] == [(2, "invalid"), (3, "invalid"), (None, "invalid")]


async def test_a_kickoff_that_is_not_a_datetime_is_an_invalid_outcome(cache):
    coordinator = EventCoordinator(cache, retention=timedelta(hours=6))
    summary = await coordinator.store_batch_results([
        ScrapeResult(1, "betpawa", [mk("1")], T0, kickoff="tonight"),
        ScrapeResult(2, "betpawa", [mk("1")], T0, kickoff=datetime.now(UTC) + timedelta(hours=2)),
    ])
    assert [o.status for o in summary.outcomes] == ["invalid", "applied"]
    assert str(summary.outcomes[0].error) == "kickoff: expected a datetime or None, got 'tonight'"
    assert 0 < await cache.client.pttl(cache.keys.meta(2, "betpawa")) <= 8 * 3600 * 1000
