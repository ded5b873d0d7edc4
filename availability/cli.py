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
configuration errors, 1 for failures (an unreachable server is named by its
URL, password masked).

Adding a command: decorate a function with ``@cli.command()`` and
``@pass_app``; :class:`App` holds the settings and builds what commands need
(``app.cache()``, ``app.database_url``, ``app.run(coroutine_function)``).
"""

from __future__ import annotations

import asyncio
import contextlib
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
from availability.logs import configure_logging, redact_text, redact_url
from availability.settings import Settings

__all__ = ["App", "cli", "main", "pass_app", "Failure", "ConfigError"]

T = TypeVar("T")


class Failure(click.ClickException):
    """A command failed (exit status 1)."""

    exit_code = 1


class ConfigError(click.ClickException):
    """Missing or bad configuration (exit status 2)."""

    exit_code = 2


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return redact_text(text)


@dataclass
class App:
    """What every command shares: the settings, and helpers built from them."""

    settings: Settings

    @property
    def keys(self) -> KeySchema:
        return KeySchema(self.settings.prefix, self.settings.shards)

    @property
    def redis_url(self) -> str:
        if not self.settings.redis_url:
            raise ConfigError("no Redis URL: pass --redis-url or set REDIS_URL (e.g. redis://127.0.0.1:6379/0)")
        return self.settings.redis_url

    @property
    def database_url(self) -> str:
        if not self.settings.database_url:
            raise ConfigError(
                "no database URL: pass --database-url or set DATABASE_URL (e.g. postgresql://user@127.0.0.1:5432/db)"
            )
        return self.settings.database_url

    @contextlib.asynccontextmanager
    async def cache(self, *, check: bool = True) -> AsyncIterator[Any]:
        """A connected :class:`~availability.cache.MarketCache` (pinged, shard count checked)."""
        from availability.cache import MarketCache

        cache = MarketCache.from_url(
            self.redis_url, prefix=self.settings.prefix, shards=self.settings.shards,
            cluster=self.settings.redis_cluster,
        )
        try:
            if check:
                await cache.client.ping()
                await cache.ensure_config()
            yield cache
        finally:
            with contextlib.suppress(Exception):
                await cache.close()

    def run(self, main: Callable[[], Awaitable[T]]) -> T:
        """Run a coroutine function, turning expected errors into one line on stderr."""
        try:
            return asyncio.run(main())
        except click.ClickException:
            raise
        except (RedisConnectionError, RedisTimeoutError) as exc:
            url = redact_url(self.settings.redis_url or "")
            raise Failure(f"cannot reach Redis at {url}: {_one_line(exc)}") from None
        except psycopg.OperationalError as exc:
            url = redact_url(self.settings.database_url or "")
            raise Failure(f"cannot reach PostgreSQL at {url}: {_one_line(exc)}") from None
        except psycopg.Error as exc:
            raise Failure(f"PostgreSQL: {_one_line(exc)}") from None
        except ConfigurationError as exc:
            raise ConfigError(_one_line(exc)) from None
        except (CacheNotReady, AvailabilityError) as exc:
            raise Failure(_one_line(exc)) from None
        except KeyboardInterrupt:
            raise Failure("interrupted") from None


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


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
    except sqlalchemy.exc.OperationalError as exc:
        raise Failure(f"cannot reach PostgreSQL at {redact_url(url)}: {_one_line(exc.orig or exc)}") from None
    except sqlalchemy.exc.SQLAlchemyError as exc:
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
@pass_app
def flush(app: App, once: bool, batch_size: int, consumer: str | None, claim_idle_ms: int, block_ms: int,
          metrics_port: int | None) -> None:
    """Write the change streams to PostgreSQL (runs until SIGTERM/SIGINT unless --once)."""
    from availability.flusher import Flusher

    database_url = app.database_url
    if metrics_port is not None:
        from availability.metrics import start_metrics_server

        try:
            start_metrics_server(metrics_port)
        except OSError as exc:
            raise Failure(f"--metrics-port {metrics_port}: {exc}") from None

    async def main() -> Any:
        async with app.cache() as cache:
            await _ping_database(database_url)
            async with Flusher(cache, database_url, home_bookmaker=app.settings.home_bookmaker,
                               batch_size=batch_size, consumer=consumer, claim_idle_ms=claim_idle_ms,
                               block_ms=block_ms) as flusher:
                if once:
                    return await flusher.run_once()
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, stop.set)
                return await flusher.run(stop)

    stats = app.run(main)
    click.echo(json.dumps({"flushed": asdict(stats)}))


async def _ping_database(url: str) -> None:
    """Fail early, with the URL in the message, when PostgreSQL cannot be reached."""
    from availability.db.engine import libpq_url

    try:
        conn = await psycopg.AsyncConnection.connect(libpq_url(url), connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise Failure(f"cannot reach PostgreSQL at {redact_url(url)}: {_one_line(exc)}") from None
    await conn.close()


# ---------------------------------------------------------------- warm


@cli.command()
@pass_app
def warm(app: App) -> None:
    """Reload the cache from PostgreSQL after Redis lost its data, then mark it ready.

    While a shard is cold, scrapes are refused (status "cold"), so no market is
    reported new and no disappearance is missed because the cache was empty.
    """
    from availability.warm import warm as warm_cache

    database_url = app.database_url

    async def main() -> Any:
        async with app.cache() as cache:
            await _ping_database(database_url)
            return await warm_cache(cache, database_url, home_bookmaker=app.settings.home_bookmaker)

    stats = app.run(main)
    click.echo(json.dumps({"warmed": asdict(stats)}))


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
        async with app.cache() as cache:
            await _ping_database(database_url)
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


def main(argv: list[str] | None = None) -> NoReturn:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="availability")
    raise SystemExit(0)  # pragma: no cover (click exits itself)


if __name__ == "__main__":
    main()
