"""Long-running commands: ``flush`` (the write-behind flusher) and ``demo``."""

from __future__ import annotations

import asyncio
import signal
import sys
from dataclasses import asdict
from typing import Any

import click

from availability.cli.app import (App, Interrupted, echo_json, echo_stats, existing_deployment, pass_app,
                                  ping_database, stdout_console)
from availability.logs import configure_logging, get_logger

_log = get_logger("availability.cli")

# ---------------------------------------------------------------- flush


@click.command()
@click.option("--once", is_flag=True, help="Flush what is there now (idle pending records too), then exit.")
@click.option("--batch-size", type=click.IntRange(1), default=500, show_default=True,
              help="Records per PostgreSQL transaction.")
@click.option("--consumer", help="Consumer name in the 'flushers' group [default: host-pid-random].")
@click.option("--claim-idle-ms", type=click.IntRange(0), default=60_000, show_default=True,
              help="Take over records another flusher left pending this long.")
@click.option("--block-ms", type=click.IntRange(1), default=1000, show_default=True,
              help="How long to wait for new records.")
@click.option("--metrics-port", type=click.IntRange(1, 65535), help="Serve Prometheus /metrics on this port.")
@click.option("--json", "as_json", is_flag=True, help="Print what was flushed as JSON.")
@pass_app
def flush(app: App, once: bool, batch_size: int, consumer: str | None, claim_idle_ms: int, block_ms: int,
          metrics_port: int | None, as_json: bool) -> None:
    """Write the change streams to PostgreSQL (runs until SIGTERM/SIGINT unless --once)."""
    from availability.flusher import Flusher

    database_url = app.database_url
    if metrics_port is not None:
        from availability.metrics import start_metrics_server

        start_metrics_server(metrics_port)  # a busy port: ConfigurationError naming it

    async def main() -> Any:
        from availability.flusher import FlushStats

        stop = asyncio.Event()
        if not once:  # first thing: a SIGTERM while still starting is a clean stop too
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
        async with app.cache(check=False) as cache:
            await _flusher_deployment(app, cache, once)
            await ping_database(database_url, patience_s=0.0 if once else 30.0, stop=stop)
            if stop.is_set():
                return FlushStats()
            async with Flusher(cache, database_url, home_bookmaker=app.settings.home_bookmaker,
                               batch_size=batch_size, consumer=consumer, claim_idle_ms=claim_idle_ms,
                               block_ms=block_ms) as flusher:
                if once:
                    return await flusher.run_once()
                return await flusher.run(stop)

    stats = app.run(main)
    echo_stats("flushed", asdict(stats), as_json)


async def _flusher_deployment(app: App, cache: Any, once: bool) -> None:
    """A flusher never creates a deployment. ``--once`` refuses a prefix that
    holds none (a mistyped one); a long-running flusher only warns and waits
    for records, because after Redis lost its data the deployment is gone
    until ``availability warm`` runs, and a supervisor restarting a flusher
    then must not see it fail."""
    from availability import ops

    if once:
        await existing_deployment(app, cache)
    elif not await ops.check_deployment(cache):
        _log.warning("flush.no_deployment", prefix=app.settings.prefix,
                     hint="nothing to flush until a worker, warm or demo creates it; check --prefix")
        return
    await cache.ensure_config(create=False)



# ---------------------------------------------------------------- demo
# The logic is in availability.demo; this only wires options.


@click.command()
@click.option("--events", type=click.IntRange(1, 100_000), default=60, show_default=True,
              help="Events in the synthetic feed (production: ~1,300).")
@click.option("--cycles", type=click.IntRange(1, 10_000), default=6, show_default=True,
              help="Scrape cycles (5 minutes of feed time each).")
@click.option("--workers", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Scraper worker processes.")
@click.option("--flushers", type=click.IntRange(1, 16), default=2, show_default=True,
              help="Flusher processes.")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the feed: same seed, same run.")
@click.option("--market-scale", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True,
              help="Share of the ~170 BetPawa / ~72 competitor markets per event.")
@click.option("--keep", is_flag=True, help="Leave the servers up afterwards, print how to reach them, wait for Ctrl-C.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--metrics-port", type=click.IntRange(1, 65535),
              help="Serve the flushers' Prometheus metrics on PORT, PORT+1, ...")
@click.pass_context
def demo(ctx: click.Context, events: int, cycles: int, workers: int, flushers: int, seed: int,
         market_scale: float, keep: bool, as_json: bool, metrics_port: int | None) -> None:
    """Run the whole pipeline on a synthetic feed, then verify it.

    Without REDIS_URL / DATABASE_URL, real Redis and PostgreSQL servers are
    started for the run and stopped afterwards (also on Ctrl-C). Worker
    processes scrape the feed (some slow, delivering late and twice, so stale
    scrapes are refused), flusher processes write PostgreSQL; then the
    streams are drained and the cache is checked against the feed's pure
    reference replay and against PostgreSQL (verify).

    Exit status 0 when everything agrees, 1 when anything differs.
    """
    import os
    import time

    from rich.console import Console

    from availability import demo as demo_mod

    app: App = ctx.obj
    settings = app.settings
    if settings.redis_url:
        _ = app.redis_url  # checked for form before any server starts
    if settings.database_url:
        _ = app.database_url
    root = ctx.find_root().params
    # the demo's own output is the progress line and the report; logs only when asked for
    explicit_level = root.get("log_level") or os.environ.get("AVAILABILITY_LOG_LEVEL")
    configure_logging(explicit_level or "WARNING", settings.log_json)
    options = demo_mod.DemoOptions(
        events=events, cycles=cycles, workers=workers, flushers=flushers, seed=seed,
        market_scale=market_scale, prefix=settings.prefix, shards=settings.shards,
        metrics_port=metrics_port, log_level=explicit_level or "ERROR",
    )
    err = Console(stderr=True, highlight=False, emoji=False)
    out = stdout_console()
    display = demo_mod.ProgressDisplay(err)

    def kept(running: Any, report: dict[str, Any]) -> None:
        display.stop()
        if as_json:
            echo_json(report)
        else:
            demo_mod.render_report(report, out, servers_kept=bool(running.started))
        lines = demo_mod.keep_servers_hint(running, report, err)
        if not running.started:
            lines = ["(the servers are yours, not the demo's: nothing to keep up)", *lines]
        else:
            lines = ["", "servers left running; press Ctrl-C to stop them:", *lines]
        for line in lines:
            err.print(line, highlight=False, markup=False, soft_wrap=True)
        if not running.started:
            return
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            err.print("stopping the servers")

    def terminated(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM: the same clean stop as Ctrl-C

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        report = demo_mod.run(options, settings.redis_url, settings.database_url, show=display,
                              keep=kept if keep else None)
    except KeyboardInterrupt:
        raise Interrupted("interrupted: every server and process the demo started was stopped") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        display.stop()
    if not keep:
        if as_json:
            echo_json(report)
        else:
            demo_mod.render_report(report, out)
    if not report["ok"]:
        sys.exit(1)

