"""The Lua script must follow the pure reference model, whatever the scrapes and their order.

Random scrape sequences over a small universe (so markets keep appearing,
changing, disappearing and returning), delivered in a random order with
duplicates and out-of-order timestamps, through ``apply_scrape``,
``apply_batch`` and ``mark_event_removed``. Every outcome must be the one the
reference predicts, and at the end every snapshot must equal its state.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factory import T0

from availability.cache import MarketCache, Scrape
from availability.records import decode_record
from reference import ReferenceCache, outcome_of

EVENTS = [11, 12]
BOOKMAKERS = ["betpawa", "sportybet"]
SHARDS = 2
# (market id, spellings of one line): None and 0.0 are different markets
MARKETS = [
    ("1", [None]),
    ("18", [None]),
    ("18", [0.0, -0.0, "0", Decimal("0.00")]),
    ("18", [2.5, "2.50", Decimal("2.5")]),
    ("18", [-1.5, "-1.5"]),
    ("29", [2.5]),
]
OUTCOME_NAMES = {"1": ["1", "X", "2"], "18": ["Over", "Under"], "29": ["Home", "Away"]}
ODDS = [1.5, 2.0, 3.25]


@dataclass(frozen=True)
class Delivery:
    """One hand-over to the cache: a scrape, or an event removal (``removed``)."""

    scrape: Scrape
    removed: bool = False
    join_batch: bool = False  # pipelined in one apply_batch with the delivery before it


@st.composite
def market_rows(draw: Any) -> list[dict]:
    """The rows of one scrape: a subset of the universe, some split over several
    rows or an outcome repeated identically, in any order."""
    chosen = draw(st.lists(st.integers(0, len(MARKETS) - 1), unique=True, max_size=len(MARKETS)))
    rows = []
    for index in chosen:
        market_id, spellings = MARKETS[index]
        outcomes = [
            {"name": name, "odds": draw(st.sampled_from(ODDS)), "is_active": draw(st.sampled_from([True, True, False]))}
            for name in OUTCOME_NAMES[market_id]
        ]

        def row(part: list[dict]) -> dict:
            return {"betpawa_market_id": market_id, "betpawa_market_name": f"Market {market_id}",
                    "line": draw(st.sampled_from(spellings)), "outcomes": part,
                    "market_groups": draw(st.sampled_from([None, ["main"], ["main", "goals"]]))}

        cut = draw(st.integers(0, len(outcomes) - 1))
        if cut:
            rows += [row(outcomes[:cut]), row(outcomes[cut:])]
        else:
            rows.append(row(outcomes))
        if draw(st.integers(0, 5)) == 0:  # the same outcome again, identical: merged once
            # (at another price it is a KeyCollision: that market is quarantined, see below)
            rows.append(row([dict(outcomes[0])]))
    # now and then a bad market (quarantined): held (present, its stored market kept)
    # when its key can be read, or making the scrape partial when it cannot
    for _ in range(draw(st.integers(0, 2)) if draw(st.integers(0, 3)) == 0 else 0):
        market_id, spellings = MARKETS[draw(st.integers(0, len(MARKETS) - 1))]
        bad = {"betpawa_market_id": market_id, "betpawa_market_name": f"Market {market_id}",
               "line": draw(st.sampled_from(spellings)),
               "outcomes": [{"name": OUTCOME_NAMES[market_id][0], "odds": 1.5}]}
        kind = draw(st.sampled_from(["odds", "nul_name", "collision", "no_id", "line_text"]))
        if kind == "odds":
            bad["outcomes"][0]["odds"] = "1,85"
        elif kind == "nul_name":
            bad["betpawa_market_name"] = "Market\x00"
        elif kind == "collision":  # another price for an outcome another row may carry too
            rows.append({**bad, "outcomes": [{"name": OUTCOME_NAMES[market_id][0], "odds": 9.0}]})
        elif kind == "no_id":
            bad["betpawa_market_id"] = None
        else:
            bad["line"] = "over"
        rows.append(bad)
    return draw(st.permutations(rows))


PAIRS = [(e, b) for e in EVENTS for b in BOOKMAKERS]


@st.composite
def scrape_pool(draw: Any) -> list[Delivery]:
    """Scrapes in time order, mostly of one (event, bookmaker) so its markets
    go through many transitions; now and then two share a timestamp."""
    pool = []
    minute = 0
    for _ in range(draw(st.integers(1, 16))):
        event, bookmaker = draw(st.sampled_from([PAIRS[0]] * 4 + PAIRS))
        minute += 0 if draw(st.integers(0, 6)) == 0 else 1
        when = T0 + timedelta(minutes=minute)
        kind = draw(st.sampled_from(["complete"] * 6 + ["partial"] * 2 + ["empty", "confirmed_empty", "removed"]))
        if kind == "removed":
            pool.append(Delivery(Scrape(event, bookmaker, [], when), removed=True))
        elif kind == "empty":
            pool.append(Delivery(Scrape(event, bookmaker, [], when, complete=draw(st.booleans()))))
        elif kind == "confirmed_empty":
            pool.append(Delivery(Scrape(event, bookmaker, [], when, confirmed_empty=True)))
        else:
            pool.append(Delivery(Scrape(event, bookmaker, draw(market_rows()), when, complete=kind == "complete")))
    return pool


@st.composite
def deliveries(draw: Any) -> list[Delivery]:
    """The pool delivered in order, nearly in order or shuffled, some scrapes
    more than once, each joined to the previous delivery's batch or not."""
    pool = draw(scrape_pool())
    order = list(range(len(pool)))
    mode = draw(st.sampled_from(["in_order", "swapped", "shuffled"]))
    if mode == "shuffled":
        order = draw(st.permutations(order))
    elif mode == "swapped" and len(order) > 1:
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(order) - 2))
            order[i], order[i + 1] = order[i + 1], order[i]
    for again, position in draw(st.lists(st.tuples(st.integers(0, len(pool) - 1), st.integers(0, len(pool))),
                                         max_size=6)):
        order.insert(position, again)
    return [Delivery(pool[i].scrape, pool[i].removed, draw(st.booleans())) for i in order]


def batches(sequence: list[Delivery]) -> list[list[Delivery]]:
    out: list[list[Delivery]] = []
    for d in sequence:
        if d.join_batch and out:
            out[-1].append(d)
        else:
            out.append([d])
    return out


_examples = itertools.count()


def example_prefix(key_prefix: str) -> str:
    """A fresh, valid prefix per hypothesis example, derived from the test's own."""
    digest = hashlib.sha1(key_prefix.encode()).hexdigest()[:12]
    return f"d{digest}.{next(_examples)}"


async def delete_prefix(client: Any, prefix: str) -> None:
    for pattern in (f"{{{prefix}:*", f"{prefix}:*"):
        found = [k async for k in client.scan_iter(match=pattern, count=1000)]
        if found:
            await client.delete(*found)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=deliveries())
async def test_cache_follows_the_reference_model(redis_client, key_prefix, sequence):
    prefix = example_prefix(key_prefix)
    cache = MarketCache(redis_client, prefix=prefix, shards=SHARDS)
    ref = ReferenceCache()
    try:
        await cache.mark_ready()
        reported: list[tuple] = []
        with_record = 0
        for group in batches(sequence):
            if len(group) == 1 and group[0].removed:
                d = group[0]
                outcomes = [await cache.mark_event_removed(d.scrape.event_id, d.scrape.bookmaker, d.scrape.scraped_at)]
                ordered = group
            elif len(group) == 1:
                outcomes = [await cache.apply_scrape(**vars(group[0].scrape))]
                ordered = group
            else:
                # apply_batch runs the scrapes first, then the removals
                ordered = [d for d in group if not d.removed] + [d for d in group if d.removed]
                outcomes = await cache.apply_batch([d.scrape for d in ordered if not d.removed],
                                                   removed=[d.scrape for d in ordered if d.removed])
            for d, outcome in zip(ordered, outcomes, strict=True):
                s = d.scrape
                if d.removed:
                    expected = ref.mark_event_removed(s.event_id, s.bookmaker, s.scraped_at)
                else:
                    expected = ref.apply(s)
                assert outcome_of(outcome) == expected, (d, outcome)
                with_record += outcome.applied and outcome.stream_id is not None
                if not outcome.applied:  # a duplicate repeats what its application reported
                    continue
                reported += [(s.event_id, s.bookmaker, k, "became_unavailable", s.scraped_at)
                             for k in outcome.became_unavailable]
                reported += [(s.event_id, s.bookmaker, k, "became_available", s.scraped_at)
                             for k in outcome.became_available]

        for event in EVENTS:
            for bookmaker in BOOKMAKERS:
                assert await cache.get_snapshot(event, bookmaker) == ref.snapshot(event, bookmaker)
        assert sorted(await cache.get_snapshots(EVENTS)) == ref.pairs()

        # the change streams hold exactly the reported transitions
        records = []
        for shard in range(SHARDS):
            records += [decode_record(i, f) for i, f in await redis_client.xrange(cache.keys.changes(shard))]
        assert len(records) == with_record
        in_stream = [(r.event_id, r.bookmaker, k, kind, r.scraped_at) for r in records for k, kind in r.transitions]
        assert Counter(in_stream) == Counter(reported)
    finally:
        await delete_prefix(redis_client, prefix)
