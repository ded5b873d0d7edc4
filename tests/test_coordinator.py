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


async def test_a_bad_market_is_quarantined_in_the_batch_and_refuses_its_scrape_when_strict(cache):
    from availability import metrics

    def rejected_count(reason: str) -> float:
        return metrics.REGISTRY.get_sample_value(
            "availability_markets_rejected_total", {"bookmaker": "bet9ja", "reason": reason}) or 0.0

    bad_odds = {**mk("18", 2.5), "outcomes": [{"name": "Over", "odds": "1,85"}]}
    no_id = {**mk("19"), "betpawa_market_id": None}
    batch = [
        ScrapeResult(1, "bet9ja", [mk("1"), bad_odds], T0),
        ScrapeResult(2, "bet9ja", [mk("1"), no_id], T0),
    ]
    before = rejected_count("invalid_value"), rejected_count("invalid_key")
    with capture_logs() as logs:
        summary = await EventCoordinator(cache).store_batch_results(batch)
    assert (summary.applied, summary.invalid, summary.rejected_markets, summary.partial, summary.new) == (2, 0, 2, 1, 2)
    first, second = summary.outcomes
    assert [(r.key, r.field, r.value, r.reason) for r in first.rejected] == [
        (("18", 2.5), "outcomes[0].odds", "'1,85'", "invalid_value")]
    assert [(r.key, r.field, r.reason) for r in second.rejected] == [(None, "betpawa_market_id", "invalid_key")]
    assert not first.partial and second.partial
    assert (rejected_count("invalid_value"), rejected_count("invalid_key")) == (before[0] + 1, before[1] + 1)
    lines = [e for e in logs if e["event"] == "cache.markets_rejected"]
    assert [(e["event_id"], e["rejected"], e["log_level"]) for e in lines] == [(1, 1, "warning"), (2, 1, "warning")]
    assert lines[0]["markets"] == [{"key": "18@2.5", "field": "outcomes[0].odds", "value": "'1,85'",
                                    "reason": "invalid_value"}]

    strict = await EventCoordinator(cache).store_batch_results(
        [ScrapeResult(3, "bet9ja", [mk("1"), bad_odds], T0)], strict=True)
    assert (strict.applied, strict.invalid, strict.rejected_markets) == (0, 1, 0)
    assert "odds" in str(strict.outcomes[0].error) and await cache.get_snapshot(3, "bet9ja") is None
