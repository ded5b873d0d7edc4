"""Deployment commands: ``migrate``, ``warm`` (after Redis lost its data) and ``prune`` (retention)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import click

from availability.cli.app import App, Failure, Unreachable, echo_stats, one_line, pass_app, ping_database
from availability.errors import ConfigurationError
from availability.logs import redact_url

# ---------------------------------------------------------------- migrate


@click.command()
@pass_app
def migrate(app: App) -> None:
    """Upgrade the PostgreSQL schema to the latest revision (alembic upgrade head).

    Also records the home bookmaker (AVAILABILITY_HOME_BOOKMAKER) in the database:
    the view market_odds_confirmed joins that bookmaker's snapshots."""
    import sqlalchemy.exc

    from availability.db.migrate import upgrade

    url = app.database_url
    try:
        upgrade(url, "head", home_bookmaker=app.settings.home_bookmaker)
    except sqlalchemy.exc.SQLAlchemyError as exc:
        if isinstance(exc, sqlalchemy.exc.OperationalError):
            raise  # unreachable: translated by main()
        raise Failure(f"migration failed on {redact_url(url)}: {one_line(exc)}") from None
    click.echo(f"migrated {redact_url(url)} to head (home bookmaker {app.settings.home_bookmaker})")



def _duration_option(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is None:
        return None
    from availability.retention import parse_duration

    try:
        return parse_duration(value, param.opts[0])
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
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
            await ping_database(database_url)
            return await warm_cache(cache, database_url, home_bookmaker=app.settings.home_bookmaker,
                                    retention=keep)

    stats = app.run(main)
    echo_stats("warmed", asdict(stats), as_json)


# ---------------------------------------------------------------- prune


@click.command()
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
            await ping_database(database_url)
            return await prune_events(database_url, period, batch_size=batch_size)
        async with app.cache(create=False) as cache:
            await ping_database(database_url)
            return await prune_events(database_url, period, batch_size=batch_size, cache=cache)

    stats = app.run(main)
    echo_stats("pruned", stats.as_dict(), as_json)



# ---------------------------------------------------------------- prune-rejections


@click.command("prune-rejections")
@click.option("--days", type=click.FloatRange(0), required=True,
              help="Delete the market_rejections rows whose market was not rejected again for this many days.")
@pass_app
def prune_rejections(app: App, days: float) -> None:
    """Keep market_rejections bounded: delete the rows not rejected again for --days days."""
    import psycopg

    from availability.db.rejections import prune_rejections as prune_rows

    url = app.database_url
    try:
        deleted = prune_rows(url, days)
    except psycopg.OperationalError as exc:
        raise Unreachable(f"cannot reach PostgreSQL at {redact_url(url)}: {one_line(exc)}") from None
    except psycopg.Error as exc:
        raise Failure(f"prune-rejections failed on {redact_url(url)}: {one_line(exc)}") from None
    click.echo(f"deleted {deleted} market_rejections rows not seen for {days:g} days")
