"""``availability``: the command line.

    availability [--redis-url URL] [--database-url URL] [--prefix av] [--shards 16]
                 [--log-level INFO] [--json-logs] COMMAND ...

    availability migrate                      alembic upgrade head
    availability flush [--once] [--batch-size N] [--consumer NAME] [--claim-idle-ms MS] [--metrics-port P]
    availability warm                         reload the cache from PostgreSQL after Redis lost its data
    availability verify [--event ID ...] [--json]   exit 1 when Redis and PostgreSQL differ

Global options fall back to the environment (``REDIS_URL``, ``DATABASE_URL``,
``AVAILABILITY_*``, see :mod:`availability.settings`). Expected errors print
one line on stderr, without a traceback: exit status 2 for usage and
configuration errors and unreachable servers (named by their URL, password
masked), 1 for failures and mismatches, 130 for Ctrl-C. :func:`translate` is
the one place that maps exceptions to these, for every command (the group
class :class:`_Translating` applies it, whether from :func:`main` or click's
test runner).

Adding a command: decorate a function with ``@cli.command()`` and
``@pass_app``; :class:`App` holds the settings and builds what commands need
(``app.cache()``, ``app.database_url``, ``app.run(coroutine_function)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import signal
import sys
from dataclasses import asdict, dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, NoReturn, TypeVar

import click
import psycopg
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from availability.errors import AvailabilityError, CacheNotReady, ConfigurationError
from availability.keys import KeySchema
from availability.logs import configure_logging, get_logger, redact_text, redact_url
from availability.settings import Settings

__all__ = ["App", "cli", "main", "pass_app", "Failure", "ConfigError", "Interrupted", "Unreachable"]

T = TypeVar("T")

_log = get_logger("availability.cli")


class Failure(click.ClickException):
    """A command failed (exit status 1)."""

    exit_code = 1


class ConfigError(click.ClickException):
    """Missing or bad configuration (exit status 2)."""

    exit_code = 2


class Unreachable(click.ClickException):
    """A server cannot be reached (exit status 2, like bad configuration: nothing
    was checked, so a monitoring script can tell it from a failure or mismatch)."""

    exit_code = 2


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return redact_text(text)


class Interrupted(click.ClickException):
    """Ctrl-C or SIGTERM (exit status 130, as a shell reports a SIGINT)."""

    exit_code = 130


def _check_redis_url(url: str) -> None:
    """Refuse a Redis URL redis-py cannot use, naming the option and (without password) the URL."""
    from redis.asyncio.connection import parse_url

    where = f"--redis-url / REDIS_URL {redact_url(url)!r}"
    try:
        parsed = parse_url(url)
    except ValueError as exc:
        raise ConfigError(f"{where}: {_one_line(exc)} (e.g. redis://127.0.0.1:6379/0)") from None
    from urllib.parse import urlsplit

    path = urlsplit(url).path.strip("/") if not url.startswith("unix://") else ""
    if path and not path.isdigit():
        raise ConfigError(f"{where}: the path is the database index, a number from 0; got {path!r}")
    if url.startswith(("redis://", "rediss://")) and not parsed.get("host"):
        raise ConfigError(f"{where}: no host (e.g. redis://127.0.0.1:6379/0)")


@dataclass
class App:
    """What every command shares: the settings, and helpers built from them."""

    settings: Settings

    @property
    def keys(self) -> KeySchema:
        return KeySchema(self.settings.prefix, self.settings.shards)

    @property
    def redis_url(self) -> str:
        """The Redis URL, checked for form before anything connects."""
        url = self.settings.redis_url
        if not url:
            raise ConfigError("no Redis URL: pass --redis-url or set REDIS_URL (e.g. redis://127.0.0.1:6379/0)")
        _check_redis_url(url)
        return url

    @property
    def database_url(self) -> str:
        """The PostgreSQL URL, checked for form before anything connects."""
        url = self.settings.database_url
        if not url:
            raise ConfigError(
                "no database URL: pass --database-url or set DATABASE_URL (e.g. postgresql://user@127.0.0.1:5432/db)"
            )
        from availability.db.engine import libpq_url

        try:
            libpq_url(url)
        except ConfigurationError as exc:
            raise ConfigError(f"--database-url / DATABASE_URL: {_one_line(exc)}") from None
        return url

    @contextlib.asynccontextmanager
    async def cache(self, *, check: bool = True, create: bool = True) -> AsyncIterator[Any]:
        """A connected :class:`~availability.cache.MarketCache` (pinged, shard count checked).

        ``create=False`` for read-only commands: a missing deployment is an error, not created."""
        from availability.cache import MarketCache

        cache = MarketCache.from_url(
            self.redis_url, prefix=self.settings.prefix, shards=self.settings.shards,
            cluster=self.settings.redis_cluster,
        )
        try:
            if check:
                await cache.client.ping()
                await cache.ensure_config(create=create)
            yield cache
        finally:
            with contextlib.suppress(Exception):
                await cache.close()

    def run(self, main: Callable[[], Awaitable[T]]) -> T:
        """Run a coroutine function; what it raises is turned into one line by :func:`main`."""
        return asyncio.run(main())


pass_app = click.make_pass_decorator(App)


def _settings(**overrides: Any) -> Settings:
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"bad configuration in the environment: {problems}") from None
    update = {k: v for k, v in overrides.items() if v is not None}
    settings = settings.model_copy(update=update)
    try:
        KeySchema(settings.prefix, settings.shards)
    except ConfigurationError as exc:
        raise ConfigError(str(exc)) from None
    return settings


class _Translating(click.Group):
    """The command group: every command's exceptions go through :func:`translate`
    here, whether it runs from :func:`main` or from click's test runner."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (Exception, KeyboardInterrupt) as exc:
            app = ctx.obj if isinstance(ctx.obj, App) else None
            error = translate(exc, app.settings if app else None)
            if error is None:
                raise
            if error is exc:
                raise
            raise error from None


@click.group(cls=_Translating, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--redis-url", envvar="REDIS_URL", metavar="URL", help="redis://, rediss:// or unix:// URL [env REDIS_URL]")
@click.option("--database-url", envvar="DATABASE_URL", metavar="URL", help="postgresql:// URL [env DATABASE_URL]")
@click.option("--prefix", help="Key prefix of the deployment [env AVAILABILITY_PREFIX, default av]")
@click.option("--shards", type=int, help="Shard count, fixed per deployment [env AVAILABILITY_SHARDS, default 16]")
@click.option("--log-level", help="DEBUG, INFO, WARNING, ERROR [env AVAILABILITY_LOG_LEVEL, default INFO]")
@click.option("--json-logs/--console-logs", default=None, help="JSON log lines [env AVAILABILITY_LOG_JSON]")
@click.version_option(package_name="availability")
@click.pass_context
def cli(ctx: click.Context, redis_url: str | None, database_url: str | None, prefix: str | None,
        shards: int | None, log_level: str | None, json_logs: bool | None) -> None:
    """Shared cache of betting-market availability: Redis, with a write-behind flusher to PostgreSQL."""
    settings = _settings(redis_url=redis_url or None, database_url=database_url or None, prefix=prefix,
                         shards=shards, log_level=log_level, log_json=json_logs)
    try:
        configure_logging(settings.log_level, settings.log_json)
    except ValueError as exc:
        raise ConfigError(f"--log-level: {exc}") from None
    ctx.obj = App(settings)


async def _existing_deployment(app: App, cache: Any) -> None:
    """Refuse a prefix that holds no deployment: only ``warm``, ``demo`` and a
    worker's ``mark_ready`` create one, so a mistyped ``--prefix`` is one clear
    line (exit 2) instead of an all-cold table or a new, empty deployment."""
    from availability import ops

    if not await ops.check_deployment(cache):
        raise ConfigError(
            f"prefix {app.settings.prefix!r}: no deployment in Redis at {redact_url(app.settings.redis_url or '')}; "
            f"check --prefix / AVAILABILITY_PREFIX (only warm, demo or a worker's mark_ready create one)"
        )


# ---------------------------------------------------------------- migrate


@cli.command()
@pass_app
def migrate(app: App) -> None:
    """Upgrade the PostgreSQL schema to the latest revision (alembic upgrade head)."""
    import sqlalchemy.exc

    from availability.db.migrate import upgrade

    url = app.database_url
    try:
        upgrade(url, "head")
    except sqlalchemy.exc.SQLAlchemyError as exc:
        if isinstance(exc, sqlalchemy.exc.OperationalError):
            raise  # unreachable: translated by main()
        raise Failure(f"migration failed on {redact_url(url)}: {_one_line(exc)}") from None
    click.echo(f"migrated {redact_url(url)} to head")


# ---------------------------------------------------------------- flush


@cli.command()
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
            await _ping_database(database_url, patience_s=0.0 if once else 30.0, stop=stop)
            if stop.is_set():
                return FlushStats()
            async with Flusher(cache, database_url, home_bookmaker=app.settings.home_bookmaker,
                               batch_size=batch_size, consumer=consumer, claim_idle_ms=claim_idle_ms,
                               block_ms=block_ms) as flusher:
                if once:
                    return await flusher.run_once()
                return await flusher.run(stop)

    stats = app.run(main)
    _echo_stats("flushed", asdict(stats), as_json)


async def _flusher_deployment(app: App, cache: Any, once: bool) -> None:
    """A flusher never creates a deployment. ``--once`` refuses a prefix that
    holds none (a mistyped one); a long-running flusher only warns and waits
    for records, because after Redis lost its data the deployment is gone
    until ``availability warm`` runs, and a supervisor restarting a flusher
    then must not see it fail."""
    from availability import ops

    if once:
        await _existing_deployment(app, cache)
    elif not await ops.check_deployment(cache):
        _log.warning("flush.no_deployment", prefix=app.settings.prefix,
                     hint="nothing to flush until a worker, warm or demo creates it; check --prefix")
        return
    await cache.ensure_config(create=False)


async def _ping_database(url: str, *, patience_s: float = 0.0, stop: asyncio.Event | None = None) -> None:
    """Fail early, with the URL in the message, when PostgreSQL cannot be reached.

    ``patience_s``: keep trying that long first. A long-running flusher gets
    some, because a supervisor restarts it exactly when PostgreSQL restarts
    too ("the database system is starting up"); once running, the flusher
    waits out outages for ever on its own.
    """
    import time

    from availability.db.engine import libpq_url

    deadline = time.monotonic() + patience_s
    while True:
        try:
            conn = await psycopg.AsyncConnection.connect(libpq_url(url), connect_timeout=5)
            break
        except psycopg.OperationalError as exc:
            if time.monotonic() >= deadline:
                raise Unreachable(f"cannot reach PostgreSQL at {redact_url(url)}: {_one_line(exc)}") from None
            _log.warning("flush.waiting_for_postgres", url=redact_url(url), error=_one_line(exc))
            await asyncio.sleep(0.5)
            if stop is not None and stop.is_set():
                return
    await conn.close()


# ---------------------------------------------------------------- warm


def _echo_stats(what: str, stats: dict[str, Any], as_json: bool) -> None:
    """``flushed: records 12, batches 3, ...`` (``{"flushed": {...}}`` with --json), like every command's text."""
    if as_json:
        click.echo(json.dumps({what: stats}))
        return
    parts = [f"{name.replace('_', ' ')} {value:,}" if isinstance(value, int) else f"{name.replace('_', ' ')} {value}"
             for name, value in stats.items()]
    click.echo(f"{what}: {', '.join(parts)}")


def _duration_option(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is None:
        return None
    from availability.retention import parse_duration

    try:
        return parse_duration(value, param.opts[0])
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc)) from None


@cli.command()
@click.option("--all", "all_events", is_flag=True, help="Load every event, also those past retention.")
@click.option("--retention", callback=_duration_option, metavar="DURATION",
              help="Leave out events whose kickoff is older than this (14d, 36h, 90m) "
                   "[env AVAILABILITY_RETENTION, default 14d].")
@click.option("--json", "as_json", is_flag=True, help="Print what was loaded as JSON.")
@pass_app
def warm(app: App, all_events: bool, retention: Any, as_json: bool) -> None:
    """Reload the cache from PostgreSQL after Redis lost its data, then mark it ready.

    While a shard is cold, scrapes are refused (status "cold"), so no market is
    reported new and no disappearance is missed because the cache was empty.
    Events past retention (kickoff older than --retention) are not loaded unless --all.
    """
    from availability.warm import warm as warm_cache

    database_url = app.database_url
    keep = None if all_events else (retention or app.settings.retention)

    async def main() -> Any:
        async with app.cache() as cache:
            await _ping_database(database_url)
            return await warm_cache(cache, database_url, home_bookmaker=app.settings.home_bookmaker,
                                    retention=keep)

    stats = app.run(main)
    _echo_stats("warmed", asdict(stats), as_json)


# ---------------------------------------------------------------- prune


@cli.command()
@click.option("--older-than", callback=_duration_option, metavar="DURATION",
              help="Remove events whose kickoff is older than this (14d, 36h, 90m) "
                   "[env AVAILABILITY_RETENTION, default 14d].")
@click.option("--batch-size", type=click.IntRange(1), default=500, show_default=True,
              help="Events removed per PostgreSQL transaction.")
@click.option("--keep-redis", is_flag=True, help="Leave the events' Redis keys alone (PostgreSQL only).")
@click.option("--json", "as_json", is_flag=True, help="Print what was removed as JSON.")
@pass_app
def prune(app: App, older_than: Any, batch_size: int, keep_redis: bool, as_json: bool) -> None:
    """Remove the rows of events past retention from PostgreSQL (and their Redis keys).

    An event's kickoff is the latest any bookmaker's scrape gave; events that
    never got one are never pruned by age. Safe while flushers run: a late
    change record for a pruned event is left out, not half written.
    """
    from availability.retention import prune as prune_events

    database_url = app.database_url
    period = older_than or app.settings.retention

    async def main() -> Any:
        if keep_redis:
            await _ping_database(database_url)
            return await prune_events(database_url, period, batch_size=batch_size)
        async with app.cache(create=False) as cache:
            await _ping_database(database_url)
            return await prune_events(database_url, period, batch_size=batch_size, cache=cache)

    stats = app.run(main)
    _echo_stats("pruned", stats.as_dict(), as_json)


# ---------------------------------------------------------------- verify


@cli.command()
@click.option("--event", "events", type=click.IntRange(1), multiple=True, metavar="ID",
              help="Only this event (repeatable); default every snapshot.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per mismatch.")
@pass_app
def verify(app: App, events: tuple[int, ...], as_json: bool) -> None:
    """Compare Redis with PostgreSQL; exit status 1 when they differ."""
    from availability.verify import verify as verify_cache

    database_url = app.database_url

    async def main() -> Any:
        async with app.cache(check=False) as cache:
            await _existing_deployment(app, cache)
            await cache.ensure_config(create=False)
            await _ping_database(database_url)
            await _known_events(cache, database_url, events)
            return await verify_cache(cache, database_url, list(events) or None,
                                      home_bookmaker=app.settings.home_bookmaker)

    mismatches = app.run(main)
    for m in mismatches:
        click.echo(json.dumps(m.as_dict()) if as_json else str(m))
    if mismatches:
        click.echo(f"verify: {len(mismatches)} mismatches between Redis and PostgreSQL", err=True)
        sys.exit(1)
    if not as_json:
        click.echo("verify: Redis and PostgreSQL agree")


async def _known_events(cache: Any, database_url: str, events: tuple[int, ...]) -> None:
    """Refuse ``--event`` ids stored neither in Redis nor in PostgreSQL: "agree"
    about an event nobody has heard of would be a false all-clear."""
    from availability import storage
    from availability.db.engine import libpq_url

    if not events:
        return
    in_redis = {e for e in events if await cache.bookmakers_of(e)}
    async with await psycopg.AsyncConnection.connect(libpq_url(database_url), connect_timeout=5) as conn:
        in_postgres = await storage.stored_events(conn, events)
    unknown = sorted(set(events) - in_redis - in_postgres)
    if unknown:
        raise ConfigError(f"--event {', '.join(map(str, unknown))}: stored neither in Redis (prefix "
                          f"{cache.keys.prefix!r}) nor in PostgreSQL; check the event id and --prefix")


# ---------------------------------------------------------------- operator commands: inspect, stats, keys, demo
# The logic is in availability.ops and availability.demo; these only wire options.


class _TrimmedLines(io.TextIOBase):
    """A text stream that drops the spaces rich pads each line with: a pipe or a
    file gets lines as long as their text, not as wide as the table."""

    def __init__(self, out: Any) -> None:
        self._out = out
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self._out.write(line.rstrip() + "\n")
        return len(text)

    def flush(self) -> None:
        self._out.flush()


def _stdout_console() -> Any:
    from rich.console import Console

    if sys.stdout.isatty():
        return Console(highlight=False, emoji=False)
    # a pipe or a file gets whole lines (no 80-column guess), without trailing padding
    return Console(highlight=False, emoji=False, width=200, file=_TrimmedLines(sys.stdout))


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@cli.command()
@click.argument("event", type=click.IntRange(1))
@click.argument("bookmaker", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the decoded snapshots as JSON.")
@pass_app
def inspect(app: App, event: int, bookmaker: str | None, as_json: bool) -> None:
    """Show an event's cached markets: odds, available or unavailable since when.

    EVENT is the event id; BOOKMAKER (e.g. betpawa) limits it to one bookmaker.
    Reads Redis only, writes nothing. Exit status 1 when nothing is cached.
    """
    from availability import ops
    from availability.keys import validate_bookmaker

    if bookmaker is not None:
        try:
            validate_bookmaker(bookmaker)
        except AvailabilityError as exc:
            raise click.BadParameter(str(exc), param_hint="BOOKMAKER") from None

    async def main() -> Any:
        async with app.cache(check=False) as cache:
            await _existing_deployment(app, cache)
            return await ops.inspect_event(cache, event, bookmaker)

    report = app.run(main)
    if as_json:
        _echo_json(report)
    else:
        ops.render_inspect(report, _stdout_console())
    if not report["snapshots"]:
        where = f" at {bookmaker}" if bookmaker else ""
        raise Failure(f"event {event}{where}: nothing cached under prefix {app.settings.prefix!r}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as JSON.")
@click.option("--samples", type=click.IntRange(0), default=20, show_default=True,
              help="Snapshots measured with MEMORY USAGE for the bytes-per-market estimate.")
@pass_app
def stats(app: App, as_json: bool, samples: int) -> None:
    """Per shard: stream length, consumer lag, pending, dead letters, cached events and markets.

    Also Redis memory per cached market (MEMORY USAGE of sampled snapshots).
    Reads Redis only, writes nothing.
    """
    from availability import ops

    async def main() -> Any:
        async with app.cache(check=False) as cache:
            await _existing_deployment(app, cache)
            return await ops.shard_stats(cache, memory_samples=samples)

    report = app.run(main)
    if as_json:
        _echo_json(report)
    else:
        ops.render_stats(report, _stdout_console())


@cli.command()
@click.argument("event", type=click.IntRange(1))
@click.argument("bookmaker")
@click.option("--json", "as_json", is_flag=True, help="Print the key names and commands as JSON.")
@pass_app
def keys(app: App, event: int, bookmaker: str, as_json: bool) -> None:
    """Print the exact Redis keys of EVENT at BOOKMAKER and the redis-cli commands to read them.

    Needs no server: the names follow from --prefix and --shards alone (both
    must match the deployment's).
    """
    from availability import ops

    try:
        report = ops.key_listing(app.keys, event, bookmaker, app.settings.redis_url)
    except AvailabilityError as exc:
        raise click.BadParameter(str(exc), param_hint="BOOKMAKER") from None
    if as_json:
        _echo_json(report)
    else:
        ops.render_keys(report, _stdout_console())


@cli.command()
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
    out = _stdout_console()
    display = demo_mod.ProgressDisplay(err)

    def kept(running: Any, report: dict[str, Any]) -> None:
        display.stop()
        if as_json:
            _echo_json(report)
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
            _echo_json(report)
        else:
            demo_mod.render_report(report, out)
    if not report["ok"]:
        sys.exit(1)


# ---------------------------------------------------------------- reading: compare, history, timeline
# The logic is in availability.reader and availability.timeline; these only wire options.


def _market_filters(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[Any]:
    from availability.reader import InvalidQuery, parse_market_filter

    try:
        return [parse_market_filter(v) for v in values]
    except InvalidQuery as exc:
        raise click.BadParameter(str(exc)) from None


def _since_option(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """ISO 8601; a time without a zone is UTC (every time this tool prints is UTC)."""
    from datetime import datetime, timezone

    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(f"expected an ISO 8601 time such as 2026-11-28T12:00:00Z, got {value!r}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def _bookmaker_options(values: tuple[str, ...]) -> tuple[str, ...] | None:
    from availability.keys import validate_bookmaker

    try:
        return tuple(validate_bookmaker(v) for v in values) or None
    except AvailabilityError as exc:
        raise click.BadParameter(str(exc), param_hint="--bookmaker") from None


@contextlib.asynccontextmanager
async def _reader(app: App, *, redis: bool, postgres: bool, bookmakers: tuple[str, ...] | None = None
                  ) -> AsyncIterator[Any]:
    """An AvailabilityReader on what the command needs: Redis (read-only) and/or PostgreSQL."""
    from availability import ops
    from availability.reader import AvailabilityReader

    database_url = app.database_url if postgres else None
    async with contextlib.AsyncExitStack() as stack:
        cache = None
        if redis:
            cache = await stack.enter_async_context(app.cache(check=False))
            if not await ops.check_deployment(cache):
                raise ConfigError(f"prefix {app.settings.prefix!r}: no deployment in Redis; "
                                  f"check --prefix, or read PostgreSQL with --source postgres")
        if database_url is not None:
            await _ping_database(database_url)
        reader = AvailabilityReader(cache, database_url, home_bookmaker=app.settings.home_bookmaker,
                                    bookmakers=bookmakers)
        await stack.enter_async_context(reader)
        yield reader


@cli.command()
@click.option("--source", type=click.Choice(["redis", "postgres"]), default="redis", show_default=True,
              help="Read the cache's alerts index, or PostgreSQL's partial indexes (the same answer once flushed).")
@click.option("--bookmaker", metavar="B", help="Only events with unavailable markets at this bookmaker.")
@click.option("--all", "all_events", is_flag=True, help="Also events whose kickoff has passed.")
@click.option("--json", "as_json", is_flag=True, help="Print the count and the events as JSON.")
@pass_app
def alerts(app: App, source: str, bookmaker: str | None, all_events: bool, as_json: bool) -> None:
    """List the events with unavailable markets: upcoming ones (kickoff not passed, or not known) unless --all."""
    if bookmaker is not None:
        _bookmaker_options((bookmaker,))

    async def main() -> Any:
        async with _reader(app, redis=source == "redis", postgres=source == "postgres") as reader:
            return await reader.events_with_unavailable(bookmaker, not all_events, source=source)

    found = app.run(main)
    if as_json:
        _echo_json({"count": len(found), "upcoming_only": not all_events, "source": source,
                    "events": [a.as_dict() for a in found]})
    else:
        from availability.alerts import render_alerts

        render_alerts(found, _stdout_console(), source=source, upcoming_only=not all_events)


@cli.command()
@click.argument("event", type=click.IntRange(1))
@click.option("--source", type=click.Choice(["redis", "postgres"]), default="redis", show_default=True,
              help="Read the cache, or the PostgreSQL tables (the same answer once the flushers caught up).")
@click.option("--bookmaker", "bookmakers", multiple=True, metavar="B",
              help="Bookmakers to show, in order (repeatable) [default: betpawa sportybet bet9ja, then any other found].")
@click.option("--gaps-only", is_flag=True, help="Only markets unavailable now at some bookmaker.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@pass_app
def compare(app: App, event: int, source: str, bookmakers: tuple[str, ...], gaps_only: bool, as_json: bool) -> None:
    """Compare EVENT across bookmakers: per market, available (odds), unavailable since when, or never offered.

    Also shows, per bookmaker, whether the event left its listing. Reads only.
    Exit status 1 when nothing is stored for the event.
    """
    wanted = _bookmaker_options(bookmakers)

    async def main() -> Any:
        async with _reader(app, redis=source == "redis", postgres=source == "postgres", bookmakers=wanted) as reader:
            return await reader.compare(event, source=source)

    comparison = app.run(main)
    if as_json:
        data = comparison.as_dict()
        if gaps_only:
            data["markets"] = [m.as_dict() for m in comparison.markets if m.unavailable_somewhere]
        _echo_json(data)
    elif comparison.found:
        from availability.reader import render_comparison

        render_comparison(comparison, _stdout_console(), gaps_only=gaps_only)
    if not comparison.found:
        raise Failure(f"event {event}: nothing stored in {source} (prefix {app.settings.prefix!r})"
                      if source == "redis" else f"event {event}: nothing stored in PostgreSQL")


@cli.command()
@click.argument("event", type=click.IntRange(1))
@click.option("--bookmaker", metavar="B", help="Only this bookmaker.")
@click.option("--market", "markets", multiple=True, metavar="ID[@LINE]", callback=_market_filters,
              help="Only this market: 18 (every line), 18@2.5, 1@_ (no line); repeatable.")
@click.option("--since", callback=_since_option, metavar="TIME",
              help="Only transitions at or after TIME (ISO 8601; without a zone: UTC).")
@click.option("--json", "as_json", is_flag=True, help="Print the transitions as JSON.")
@pass_app
def history(app: App, event: int, bookmaker: str | None, markets: list[Any], since: Any, as_json: bool) -> None:
    """List EVENT's availability transitions from PostgreSQL (market_availability_history), oldest first."""
    if bookmaker is not None:
        _bookmaker_options((bookmaker,))

    async def main() -> Any:
        async with _reader(app, redis=False, postgres=True) as reader:
            if not markets:
                return await reader.history(event, bookmaker, None, since)
            found = [t for m in markets for t in await reader.history(event, bookmaker, m, since)]
            unique = {(t.at, t.bookmaker, t.key, t.transition): t for t in found}
            return sorted(unique.values(), key=lambda t: (t.at, t.bookmaker, t.field, t.transition))

    transitions = app.run(main)
    if as_json:
        _echo_json([t.as_dict() for t in transitions])
    else:
        from availability.reader import render_history

        render_history(event, transitions, _stdout_console())


@cli.command()
@click.argument("event", type=click.IntRange(1))
@click.option("--out", type=click.Path(dir_okay=False, writable=True), metavar="PATH",
              help="The HTML page to write [default: timeline-EVENT.html].")
@click.option("--png", type=click.Path(dir_okay=False, writable=True), metavar="PATH",
              help="Also a screenshot of the page (needs a headless Chromium, e.g. Debian's chromium).")
@click.option("--market", "markets", multiple=True, metavar="ID[@LINE]", callback=_market_filters,
              help="Only this market: 18 (every line), 18@2.5, 1@_ (no line); repeatable.")
@click.option("--gaps-only", is_flag=True, help="Only markets that were unavailable at some time at some bookmaker.")
@click.option("--bookmaker", "bookmakers", multiple=True, metavar="B",
              help="Lanes, in order (repeatable) [default: betpawa sportybet bet9ja, then any other found].")
@click.option("--browser", metavar="PATH", help="The Chromium to use for --png [default: found on PATH].")
@pass_app
def timeline(app: App, event: int, out: str | None, png: str | None, markets: list[Any], gaps_only: bool,
             bookmakers: tuple[str, ...], browser: str | None) -> None:
    """Draw EVENT's availability as one self-contained HTML page (inline SVG, no network).

    A row per market, a lane per bookmaker: a bar while the market was
    offered, a gap while it was unavailable; hover for exact times and odds.
    Reads PostgreSQL (the history lives there).
    """
    from pathlib import Path

    from availability.timeline import TimelineError, page_size, render_html, screenshot

    wanted = _bookmaker_options(bookmakers)

    async def main() -> Any:
        async with _reader(app, redis=False, postgres=True, bookmakers=wanted) as reader:
            return await reader.timeline(event, markets=markets, gaps_only=gaps_only)

    drawn = app.run(main)
    page = Path(out or f"timeline-{event}.html")
    try:
        page.write_text(render_html(drawn), encoding="utf-8")
    except OSError as exc:
        raise Failure(f"--out {page}: {exc.strerror or exc}") from None
    click.echo(f"wrote {page} ({len(drawn.rows)} markets, {len(drawn.bookmakers)} bookmakers, "
               f"{drawn.start:%Y-%m-%d %H:%M:%S} to {drawn.end:%H:%M:%S} UTC)")
    if png is not None:
        width, height = page_size(drawn)
        try:
            screenshot(page, png, width=width, height=height, browser=browser)
        except TimelineError as exc:
            error = ConfigError if "no headless Chromium" in str(exc) else Failure
            raise error(f"--png: {_one_line(exc)}") from None
        click.echo(f"wrote {png}")


def _redis_message(exc: BaseException, url: str) -> click.ClickException | None:
    """Redis errors that mean bad configuration rather than an outage."""
    from redis.exceptions import AuthenticationError, ResponseError

    text = _one_line(exc)
    has_password = bool(url) and "@" in url and ":" in url.split("://", 1)[-1].split("@", 1)[0]
    if isinstance(exc, AuthenticationError) or "NOAUTH" in text or "HELLO must be called" in text:
        if "WRONGPASS" in text or "invalid password" in text or has_password:
            return ConfigError(f"Redis at {redact_url(url)} refused the user name or password in the URL")
        return ConfigError(f"Redis at {redact_url(url)} needs a password: give it in the URL, "
                           f"e.g. redis://:PASSWORD@host:6379/0 (or redis://USER:PASSWORD@... for an ACL user)")
    if isinstance(exc, ResponseError) and "DB index is out of range" in text:
        db = url.rsplit("/", 1)[-1] if url.count("/") >= 3 else "?"
        return ConfigError(f"--redis-url / REDIS_URL {redact_url(url)!r}: database {db} does not exist on that "
                           f"server (DB index is out of range)")
    return None


def translate(exc: BaseException, settings: Settings | None = None) -> click.ClickException | None:
    """The one place where an exception becomes an exit status and one line on stderr.

    2 for usage and configuration errors and unreachable servers (nothing was
    checked, so a monitoring script can tell that from a finding), 1 for
    failures, 130 for Ctrl-C / SIGTERM. None for anything unexpected: a bug
    keeps its traceback.
    """
    import sqlalchemy.exc
    from redis.exceptions import RedisError

    from availability.errors import ServerStartError

    redis_url = (settings.redis_url if settings else None) or ""
    database_url = (settings.database_url if settings else None) or ""
    redis_where = redact_url(redis_url) if redis_url else "the embedded server"
    database_where = redact_url(database_url) if database_url else "the embedded server"
    if isinstance(exc, click.ClickException):
        return exc
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted("interrupted")
    if isinstance(exc, RedisError):
        known = _redis_message(exc, redis_url)
        if known is not None:
            return known
        if isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
            return Unreachable(f"cannot reach Redis at {redis_where}: {_one_line(exc)}")
        return Failure(f"Redis: {_one_line(exc)}")
    if isinstance(exc, sqlalchemy.exc.OperationalError) or isinstance(exc, psycopg.OperationalError):
        cause = getattr(exc, "orig", None) or exc
        return Unreachable(f"cannot reach PostgreSQL at {database_where}: {_one_line(cause)}")
    if isinstance(exc, (psycopg.Error, sqlalchemy.exc.SQLAlchemyError)):
        return Failure(f"PostgreSQL: {_one_line(exc)}")
    if isinstance(exc, (ConfigurationError, ServerStartError)):  # bad settings, or no server binaries to start
        return ConfigError(_one_line(exc))
    if isinstance(exc, (CacheNotReady, AvailabilityError)):
        return Failure(_one_line(exc))
    return None


def main(argv: list[str] | None = None) -> NoReturn:
    """Console-script entry point.

    Every expected error is one line on stderr: click's usage errors too
    (``Error: No such option: --prefx (availability demo --help)``), exit 2;
    see :func:`translate` for the rest."""
    try:
        # without standalone mode, click returns the code of --help/--version/ctx.exit
        code = cli.main(args=argv, prog_name="availability", standalone_mode=False)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "availability"
        message = redact_text(" ".join(exc.format_message().split()))
        click.echo(f"Error: {message} (see '{where} --help')", err=True)
        raise SystemExit(exc.exit_code) from None
    except click.Abort as exc:  # click's own wrapping of KeyboardInterrupt (and EOF at a prompt)
        interrupted = isinstance(exc.__context__, KeyboardInterrupt)
        click.echo("Error: interrupted" if interrupted else "Error: aborted", err=True)
        raise SystemExit(130 if interrupted else 1) from None
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
