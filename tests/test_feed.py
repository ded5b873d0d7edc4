"""The synthetic feed: deterministic, and shaped like the production profile of docs/domain.md."""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
from collections import Counter

import pytest

from availability.demo.feed import CATALOG, Feed, FeedConfig
from availability.model import coerce_market, encode_market, market_key, merge_markets

CYCLES = range(6)


@pytest.fixture(scope="module")
def feed() -> Feed:
    return Feed(FeedConfig(seed=11, events=60))


@pytest.fixture(scope="module")
def scrapes(feed: Feed) -> dict[int, list]:
    return {c: feed.scrapes(c) for c in CYCLES}


def _digest(feed: Feed, cycle: int) -> str:
    return hashlib.sha256(pickle.dumps([(r.event_id, r.bookmaker, r.scraped_at, r.markets, r.error, r.complete)
                                        for r in feed.scrapes(cycle)])).hexdigest()


def test_same_seed_same_scrapes_in_any_order_and_any_process() -> None:
    one, two = Feed(FeedConfig(seed=5, events=10)), Feed(FeedConfig(seed=5, events=10))
    later_first = _digest(two, 3)
    assert _digest(one, 3) == later_first
    assert _digest(one, 2) != later_first
    assert _digest(Feed(FeedConfig(seed=6, events=10)), 3) != later_first
    code = ("from availability.demo.feed import Feed, FeedConfig; import hashlib, pickle; f = Feed(FeedConfig(seed=5, "
            "events=10)); print(hashlib.sha256(pickle.dumps([(r.event_id, r.bookmaker, r.scraped_at, r.markets, "
            "r.error, r.complete) for r in f.scrapes(3)])).hexdigest())")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert other.stdout.strip() == later_first


def test_market_counts_follow_the_production_profile(feed: Feed, scrapes: dict[int, list]) -> None:
    sizes: dict[str, list[int]] = {}
    for r in scrapes[1]:
        if r.markets and r.complete:
            sizes.setdefault(r.bookmaker, []).append(len(merge_markets(coerce_market(m) for m in r.markets)))
    mean = {b: sum(v) / len(v) for b, v in sizes.items()}
    assert 150 <= mean["betpawa"] <= 190
    assert 62 <= mean["sportybet"] <= 82 and 62 <= mean["bet9ja"] <= 82


def test_lines_none_zero_and_totals_are_distinct_markets() -> None:
    keys = {spec.key for spec in CATALOG}
    assert market_key("1", None) in keys  # 1X2: no line
    assert market_key("16", 0.0) in keys  # a handicap of zero is a real line
    assert market_key("18", 2.5) in keys
    assert len(keys) == len(CATALOG)
    zero = next(s for s in CATALOG if s.key == market_key("16", 0.0))
    assert zero.handicap_type == "asian"


def test_about_five_percent_of_markets_change_odds_per_cycle(feed: Feed) -> None:
    changed = total = 0
    for e in feed.event_ids()[:30]:
        for b in feed.config.bookmakers:
            before = {m.key: encode_market(m) for m in feed.offer(e, b, 3)}
            after = {m.key: encode_market(m) for m in feed.offer(e, b, 4)}
            for key in before.keys() & after.keys():
                total += 1
                changed += before[key] != after[key]
    assert 0.03 <= changed / total <= 0.07


def test_failures_of_the_old_system_all_occur(feed: Feed, scrapes: dict[int, list]) -> None:
    kinds: Counter = Counter()
    for cycle, results in scrapes.items():
        for r in results:
            if r.failed:
                kinds["failed"] += 1
                assert r.markets is None and r.error
            elif not r.markets:
                kinds["empty"] += 1  # a "successful" empty page
            elif not r.complete:
                kinds["partial"] += 1
            rows = Counter(market_key(m["betpawa_market_id"], m["line"]) for m in r.markets or ())
            kinds["split"] += sum(1 for n in rows.values() if n > 1)
            for m in r.markets or ():
                if m["outcomes"] and not any(o["is_active"] for o in m["outcomes"]):
                    kinds["suspended"] += 1
    assert kinds["failed"] and kinds["empty"] and kinds["partial"] and kinds["split"] and kinds["suspended"]
    listings = [feed.listing(b, c) for b in feed.config.bookmakers for c in CYCLES]
    failed = [listing for listing in listings if not listing.ok]
    assert failed and all(listing.event_ids == () for listing in failed)


def test_events_leave_listings_and_specialised_markets_come_and_go(feed: Feed) -> None:
    left = [(e, b) for e in feed.event_ids() for b in feed.config.bookmakers
            if feed.is_listed(e, b, 0) and not all(feed.is_listed(e, b, c) for c in CYCLES)]
    assert left
    corners = market_key("166", 9.5)
    seen = [any(m.key == corners for m in feed.offer(e, "betpawa", c)) for e in feed.event_ids() for c in CYCLES]
    assert 0.05 < sum(seen) / len(seen) < 0.4  # listed only part of the time


def test_scrape_with_truth_is_what_merging_the_rows_gives(feed: Feed) -> None:
    for cycle in (0, 1, 2):
        for e in feed.event_ids()[:25]:
            for b in feed.config.bookmakers:
                result, truth = feed.scrape_with_truth(e, b, cycle)
                if result is None or not result.markets:
                    assert truth == []
                    continue
                merged = merge_markets(coerce_market(m) for m in result.markets)
                assert [encode_market(m) for m in merged.values()] == [encode_market(m) for m in truth]


def test_market_scale_shrinks_every_event() -> None:
    small = Feed(FeedConfig(seed=11, events=20, market_scale=0.25))
    rows = [len(r.markets) for r in small.scrapes(1) if r.markets and r.complete and r.bookmaker == "betpawa"]
    assert 25 <= sum(rows) / len(rows) <= 70
