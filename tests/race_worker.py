"""One racing worker process of ``test_cache_race.py``.

    python tests/race_worker.py REDIS_URL PREFIX SHARDS DELIVERIES_JSON OUTCOMES_JSONL READY_FILE GO_FILE

Reads its deliveries (scrapes and event removals, in the order to apply
them), signals ``READY_FILE``, waits for ``GO_FILE`` so that every worker
starts at once, then applies them through one :class:`MarketCache`, mixing
``apply_scrape``/``mark_event_removed`` with pipelined ``apply_batch`` calls.
Writes one JSON line per delivery with what the cache reported.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from typing import Any

from availability.cache import MarketCache, Scrape, ScrapeOutcome
from availability.model import from_micros, key_to_field, to_micros


def to_scrape(d: dict[str, Any]) -> Scrape:
    return Scrape(d["event_id"], d["bookmaker"], d["markets"], from_micros(d["scraped_us"]),
                  complete=d["complete"], confirmed_empty=d["confirmed_empty"])


def report(worker: str, d: dict[str, Any], o: ScrapeOutcome) -> dict[str, Any]:
    return {
        "worker": worker,
        "event_id": d["event_id"],
        "bookmaker": d["bookmaker"],
        "scraped_us": d["scraped_us"],
        "removed": d["removed"],
        "status": o.status,
        "error": None if o.error is None else repr(o.error),
        "became_unavailable": [key_to_field(k) for k in o.became_unavailable],
        "became_available": [key_to_field(k) for k in o.became_available],
        "new": o.new,
        "changed": o.changed,
        "unchanged": o.unchanged,
        "rejected": len(o.rejected),
        "partial": o.partial,
        "stream_id": o.stream_id,
        "outcome_scraped_us": None if o.scraped_at is None else to_micros(o.scraped_at),
    }


async def run(url: str, prefix: str, shards: int, deliveries: list[dict], out_path: str, worker: str) -> None:
    rng = random.Random(worker)
    lines: list[dict] = []
    async with MarketCache.from_url(url, prefix=prefix, shards=shards) as cache:
        i = 0
        while i < len(deliveries):
            group = deliveries[i : i + rng.randint(1, 4)]
            i += len(group)
            if len(group) == 1:
                d = group[0]
                if d["removed"]:
                    o = await cache.mark_event_removed(d["event_id"], d["bookmaker"], from_micros(d["scraped_us"]))
                else:
                    o = await cache.apply_scrape(**vars(to_scrape(d)))
                lines.append(report(worker, d, o))
                continue
            scrapes = [d for d in group if not d["removed"]]
            removed = [d for d in group if d["removed"]]
            outcomes = await cache.apply_batch([to_scrape(d) for d in scrapes],
                                               removed=[to_scrape(d) for d in removed])
            lines += [report(worker, d, o) for d, o in zip(scrapes + removed, outcomes, strict=True)]
    with open(out_path, "w") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")


def main(argv: list[str]) -> None:
    url, prefix, shards, deliveries_path, out_path, ready_file, go_file = argv
    with open(deliveries_path) as f:
        deliveries = json.load(f)
    with open(ready_file, "w") as f:
        f.write(str(os.getpid()))
    deadline = time.monotonic() + 60
    while not os.path.exists(go_file):
        if time.monotonic() > deadline:
            raise SystemExit("race_worker: no go signal within 60 s")
        time.sleep(0.002)
    asyncio.run(run(url, prefix, int(shards), deliveries, out_path, os.path.basename(out_path)))


if __name__ == "__main__":
    main(sys.argv[1:])
