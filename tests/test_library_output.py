"""A library leaves output to the application: in a process that never
configured logging, the package's calls that log write nothing to stdout.

structlog's unconfigured default prints every event to stdout, which would
pollute the output of whatever program embeds the package; every library
module logs through :func:`availability.logs.get_logger` instead (standard
``logging`` until the application configures structlog: silent below WARNING,
warnings to stderr)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

# warm-up (info), a scrape that stamps a market, a flusher run (info lines,
# bound to its consumer name), and a read of a snapshot holding a market that
# does not decode (a warning)
SCRIPT = """
import asyncio, json, sys
from datetime import datetime, timedelta, timezone

from availability.cache import MarketCache
from availability.flusher import Flusher
from availability.warm import warm

redis_url, database_url, prefix = sys.argv[1:4]
T0 = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)


def market(market_id, line):
    return {"betpawa_market_id": market_id, "betpawa_market_name": "M" + market_id, "line": line,
            "outcomes": [{"name": "Over", "odds": 1.85, "is_active": True},
                         {"name": "Under", "odds": 1.95, "is_active": True}]}


async def main():
    async with MarketCache.from_url(redis_url, prefix=prefix, shards=4) as cache:
        warmed = await warm(cache, database_url)
        await cache.apply_scrape(7, "betpawa", [market("18", 2.5), market("18", 3.5)], T0)
        outcome = await cache.apply_scrape(7, "betpawa", [market("18", 2.5)], T0 + timedelta(minutes=1))
        async with Flusher(cache, database_url, consumer="quiet") as flusher:
            flushed = await flusher.run_once()
        await cache.client.hset(cache.keys.markets(7, "betpawa"), "99@_", b"not msgpack")
        snapshot = await cache.get_snapshot(7, "betpawa")
        print(json.dumps({"warmed": warmed.snapshots, "stamped": len(outcome.became_unavailable),
                          "records": flushed.records, "markets": len(snapshot.markets)}))


asyncio.run(main())
"""


def test_library_calls_that_log_write_nothing_to_stdout_without_logging_configured(
    redis_url: str, database_url: str, key_prefix: str, redis_client
) -> None:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT), redis_url, database_url, key_prefix],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # stdout holds the script's own line and nothing the package logged
    assert json.loads(done.stdout) == {"warmed": 0, "stamped": 1, "records": 2, "markets": 2}
    # standard logging, unconfigured: the warning reaches stderr, the info lines (warm.done,
    # flusher.start, flusher.stop) are dropped
    assert "cache.undecodable_market" in done.stderr
    for quiet in ("warm.done", "flusher.start", "flusher.stop"):
        assert quiet not in done.stderr


@pytest.mark.parametrize("module", ["cache", "flusher", "warm", "storage.batch", "retention", "subscribe", "coordinator",
                                    "detection", "demo.workers", "harness.process"])
def test_library_modules_take_their_logger_from_availability_logs(module: str) -> None:
    import importlib

    from availability.logs import LibraryLogger

    loggers = [value for value in vars(importlib.import_module(f"availability.{module}")).values()
               if type(value).__name__ in ("LibraryLogger", "BoundLoggerLazyProxy")]
    assert loggers and all(isinstance(lg, LibraryLogger) for lg in loggers), (module, loggers)
