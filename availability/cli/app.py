"""What every command shares: the settings, the :class:`App` handed to each
command, the exit-status exceptions, and the console and JSON output helpers."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sys
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

import click
import psycopg
from pydantic import ValidationError

from availability.errors import ConfigurationError
from availability.keys import KeySchema
from availability.logs import get_logger, redact_text, redact_url
from availability.settings import Settings

__all__ = ["App", "pass_app", "Failure", "ConfigError", "Interrupted", "Unreachable", "one_line", "settings_from",
           "existing_deployment", "ping_database", "echo_stats", "echo_json", "stdout_console"]

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


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return redact_text(text)


class Interrupted(click.ClickException):
    """Ctrl-C or SIGTERM (exit status 130, as a shell reports a SIGINT)."""

    exit_code = 130


def check_redis_url(url: str) -> None:
    """Refuse a Redis URL redis-py cannot use, naming the option and (without password) the URL."""
    from redis.asyncio.connection import parse_url

    where = f"--redis-url / REDIS_URL {redact_url(url)!r}"
    try:
        parsed = parse_url(url)
    except ValueError as exc:
        raise ConfigError(f"{where}: {one_line(exc)} (e.g. redis://127.0.0.1:6379/0)") from None
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
        check_redis_url(url)
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
            raise ConfigError(f"--database-url / DATABASE_URL: {one_line(exc)}") from None
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


def settings_from(**overrides: Any) -> Settings:
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



async def existing_deployment(app: App, cache: Any) -> None:
    """Refuse a prefix that holds no deployment: only ``warm``, ``demo`` and a
    worker's ``mark_ready`` create one, so a mistyped ``--prefix`` is one clear
    line (exit 2) instead of an all-cold table or a new, empty deployment."""
    from availability import ops

    if not await ops.check_deployment(cache):
        raise ConfigError(
            f"prefix {app.settings.prefix!r}: no deployment in Redis at {redact_url(app.settings.redis_url or '')}; "
            f"check --prefix / AVAILABILITY_PREFIX (only warm, demo or a worker's mark_ready create one)"
        )



async def ping_database(url: str, *, patience_s: float = 0.0, stop: asyncio.Event | None = None) -> None:
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
                raise Unreachable(f"cannot reach PostgreSQL at {redact_url(url)}: {one_line(exc)}") from None
            _log.warning("flush.waiting_for_postgres", url=redact_url(url), error=one_line(exc))
            await asyncio.sleep(0.5)
            if stop is not None and stop.is_set():
                return
    await conn.close()



def echo_stats(what: str, stats: dict[str, Any], as_json: bool) -> None:
    """``flushed: records 12, batches 3, ...`` (``{"flushed": {...}}`` with --json), like every command's text."""
    if as_json:
        click.echo(json.dumps({what: stats}))
        return
    parts = [f"{name.replace('_', ' ')} {value:,}" if isinstance(value, int) else f"{name.replace('_', ' ')} {value}"
             for name, value in stats.items()]
    click.echo(f"{what}: {', '.join(parts)}")



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


def stdout_console() -> Any:
    from rich.console import Console

    if sys.stdout.isatty():
        return Console(highlight=False, emoji=False)
    # a pipe or a file gets whole lines (no 80-column guess), without trailing padding
    return Console(highlight=False, emoji=False, width=200, file=_TrimmedLines(sys.stdout))


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))

