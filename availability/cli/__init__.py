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

The commands live in modules by role -- :mod:`~availability.cli.deploy`
(migrate, warm, prune, prune-rejections), :mod:`~availability.cli.run` (flush, demo),
:mod:`~availability.cli.inspect` (inspect, stats, keys, verify),
:mod:`~availability.cli.read` (alerts, compare, history, timeline) -- and what
they share in :mod:`~availability.cli.app`. Adding a command: decorate a
function in the module of its role with ``@click.command()`` and
``@pass_app``, and list it in this module's ``add_command`` loop;
:class:`App` holds the settings and builds what commands need
(``app.cache()``, ``app.database_url``, ``app.run(coroutine_function)``).
"""

from __future__ import annotations

from typing import Any, NoReturn

import click
import psycopg
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from availability.cli import deploy, inspect, read, run
from availability.cli.app import (App, ConfigError, Failure, Interrupted, Unreachable, one_line, pass_app,
                                  settings_from)
from availability.errors import AvailabilityError, CacheNotReady, ConfigurationError
from availability.logs import configure_logging, redact_text, redact_url
from availability.settings import Settings

__all__ = ["App", "cli", "main", "translate", "pass_app", "Failure", "ConfigError", "Interrupted", "Unreachable"]


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
    settings = settings_from(redis_url=redis_url or None, database_url=database_url or None, prefix=prefix,
                         shards=shards, log_level=log_level, log_json=json_logs)
    try:
        configure_logging(settings.log_level, settings.log_json)
    except ValueError as exc:
        raise ConfigError(f"--log-level: {exc}") from None
    ctx.obj = App(settings)



for _command in (deploy.migrate, deploy.warm, deploy.prune, deploy.prune_rejections, run.flush, run.demo,
                 inspect.verify, inspect.inspect,
                 inspect.stats, inspect.keys, read.alerts, read.compare, read.history, read.timeline):
    cli.add_command(_command)


def _redis_message(exc: BaseException, url: str) -> click.ClickException | None:
    """Redis errors that mean bad configuration rather than an outage."""
    from redis.exceptions import AuthenticationError, ResponseError

    text = one_line(exc)
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
            return Unreachable(f"cannot reach Redis at {redis_where}: {one_line(exc)}")
        return Failure(f"Redis: {one_line(exc)}")
    if isinstance(exc, sqlalchemy.exc.OperationalError) or isinstance(exc, psycopg.OperationalError):
        cause = getattr(exc, "orig", None) or exc
        return Unreachable(f"cannot reach PostgreSQL at {database_where}: {one_line(cause)}")
    if isinstance(exc, (psycopg.Error, sqlalchemy.exc.SQLAlchemyError)):
        return Failure(f"PostgreSQL: {one_line(exc)}")
    if isinstance(exc, (ConfigurationError, ServerStartError)):  # bad settings, or no server binaries to start
        return ConfigError(one_line(exc))
    if isinstance(exc, (CacheNotReady, AvailabilityError)):
        return Failure(one_line(exc))
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


