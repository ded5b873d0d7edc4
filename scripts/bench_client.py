#!/usr/bin/env python3
"""Client CPU per market: the reference path against the fast path, measured in the same run.

What the client does per scrape before Redis sees it (``MarketCache._prepare``:
validate, quarantine, merge, encode, digest) and then what redis-py does to
send it (packing the ``EVALSHA`` command), timed with ``time.process_time`` over
synthetic scrapes with the production profile (``availability.demo.feed``:
~170 BetPawa markets, ~72 per competitor, split rows) and each bookmaker's
habits (Bet9ja: odds as text and ``is_active`` as ``0``/``1``; BetPawa: odds as
``Decimal``).

* reference: ``screen_payloads_reference`` (``screen_markets(fast=False)``:
  ``coerce_market`` + ``encode_market`` for every market) and the digest as
  first written;
* fast: what ``MarketCache`` runs (``model.screen_payloads``: ``fast_payload``
  for the common shape, ``fast_market`` + ``merge_markets`` for split rows, the
  reference for anything else; ``_digest_fields``);
* packing: redis-py's Python ``pack_command`` against hiredis's
  (``redis_adapter.HiredisPacking``, which ``MarketCache.from_url`` installs).

Rounds alternate the two (and swap their order every round) so noise from
other processes falls on both; the figure is the median per-round ratio.
Nothing is asserted: speed is printed, not tested. No server is needed.

    python scripts/bench_client.py                  # ~20 s
    python scripts/bench_client.py --events 100 --rounds 9 --json
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from decimal import Decimal
from typing import Any, Callable

import availability.cache as cache_module
from redis.asyncio.connection import Connection

from availability.cache import MarketCache, Scrape
from availability.demo.feed import Feed, FeedConfig
from availability.model import screen_payloads_reference
from availability.scrape import _digest_fields_reference


def _habits(bookmaker: str, rows: list[dict]) -> list[dict]:
    """Rows as each bookmaker's scraper hands them over (docs/rules.md, tests/realistic.py)."""
    if bookmaker == "bet9ja":
        return [{**r, "outcomes": [{"name": o["name"], "odds": f"{o['odds']:.2f}", "is_active": int(o["is_active"])}
                                   for o in r["outcomes"]]} for r in rows]
    if bookmaker == "betpawa":
        return [{**r, "outcomes": [{**o, "odds": Decimal(str(o["odds"]))} for o in r["outcomes"]]} for r in rows]
    return rows


def scrapes(events: int, cycles: int) -> list[Scrape]:
    """Every complete, non-empty scrape of ``cycles`` cycles of the synthetic feed."""
    feed = Feed(FeedConfig(events=events, failed_fetch_rate=0, empty_page_rate=0, partial_page_rate=0))
    out = []
    for cycle in range(cycles):
        for r in feed.scrapes(cycle):
            if r.markets:
                out.append(Scrape(r.event_id, r.bookmaker, _habits(r.bookmaker, list(r.markets)), r.scraped_at,
                                  kickoff=r.kickoff))
    return out


def _timed(work: Callable[[], Any]) -> float:
    start = time.process_time()
    work()
    return time.process_time() - start


def measure(events: int, cycles: int, rounds: int) -> dict[str, Any]:
    cache = MarketCache.from_url("redis://127.0.0.1:1/0", prefix="bench")  # never connects: packing only
    pool = cache.client.connection_pool
    connections = {"hiredis": pool.make_connection(), "python": Connection(**pool.connection_kwargs)}
    batch = scrapes(events, cycles)
    markets = sum(len(s.markets) for s in batch)
    fast_screen, fast_digest = cache_module.screen_payloads, cache_module._digest_fields

    def prepare(reference: bool) -> list:
        cache_module.screen_payloads = screen_payloads_reference if reference else fast_screen
        cache_module._digest_fields = _digest_fields_reference if reference else fast_digest
        try:
            return [cache._prepare(s) for s in batch]
        finally:
            cache_module.screen_payloads, cache_module._digest_fields = fast_screen, fast_digest

    ref_prepared, fast_prepared = prepare(True), prepare(False)
    same = [(p.keys, p.args) for p in ref_prepared] == [(p.keys, p.args) for p in fast_prepared]

    def pack(how: str) -> list[bytes]:
        connection = connections[how]
        return [b"".join(connection.pack_command("EVALSHA", "0" * 40, len(p.keys), *p.keys, *p.args))
                for p in fast_prepared]

    same_wire = pack("python") == pack("hiredis")
    times: dict[str, list[float]] = {"reference": [], "fast": [], "python": [], "hiredis": []}
    for i in range(rounds):
        order = ["reference", "fast"] if i % 2 == 0 else ["fast", "reference"]
        for name in order:
            times[name].append(_timed(functools.partial(prepare, name == "reference")))
        for how in (["python", "hiredis"] if i % 2 == 0 else ["hiredis", "python"]):
            times[how].append(_timed(functools.partial(pack, how)))
    us = {name: 1e6 * min(t) / markets for name, t in times.items()}
    ratios = [(r + p) / (f + h) for r, f, p, h in
              zip(times["reference"], times["fast"], times["python"], times["hiredis"])]
    return {
        "scrapes": len(batch),
        "markets": markets,
        "rounds": rounds,
        "identical_script_arguments": same,
        "reference_prepare_us_per_market": round(us["reference"], 2),
        "fast_prepare_us_per_market": round(us["fast"], 2),
        "prepare_speedup_median": round(statistics.median(r / f for r, f in zip(times["reference"], times["fast"])), 2),
        "identical_wire_bytes": same_wire,
        "python_pack_us_per_market": round(us["python"], 2),
        "hiredis_pack_us_per_market": round(us["hiredis"], 2),
        "reference_client_us_per_market": round(us["reference"] + us["python"], 2),
        "fast_client_us_per_market": round(us["fast"] + us["hiredis"], 2),
        "client_speedup_median": round(statistics.median(ratios), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=60)
    parser.add_argument("--cycles", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.events, args.cycles, args.rounds)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['scrapes']} scrapes, {result['markets']} market rows, {result['rounds']} rounds (best of each)")
    print(f"identical script arguments: {result['identical_script_arguments']}, "
          f"identical wire bytes: {result['identical_wire_bytes']}")
    print(f"prepare (validate, merge, encode, digest): reference {result['reference_prepare_us_per_market']:.2f}"
          f" µs/market, fast {result['fast_prepare_us_per_market']:.2f} µs/market,"
          f" {result['prepare_speedup_median']:.2f}x faster")
    print(f"EVALSHA packing: redis-py {result['python_pack_us_per_market']:.2f} µs/market,"
          f" hiredis {result['hiredis_pack_us_per_market']:.2f} µs/market")
    print(f"client CPU per market before the wire: reference {result['reference_client_us_per_market']:.2f} µs,"
          f" fast {result['fast_client_us_per_market']:.2f} µs, {result['client_speedup_median']:.2f}x faster"
          f" (median of per-round ratios)")


if __name__ == "__main__":
    main()
