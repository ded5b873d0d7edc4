"""Commands that look at a deployment: ``inspect``, ``stats``, ``keys`` and ``verify``.

The logic is in :mod:`availability.ops` and :mod:`availability.verify`; these only wire options."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
import psycopg

from availability.cli.app import App, ConfigError, Failure, echo_json, existing_deployment, pass_app, ping_database, stdout_console
from availability.errors import AvailabilityError

# ---------------------------------------------------------------- verify


@click.command()
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
            await existing_deployment(app, cache)
            await cache.ensure_config(create=False)
            await ping_database(database_url)
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



# ---------------------------------------------------------------- inspect, stats, keys


@click.command()
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
            await existing_deployment(app, cache)
            return await ops.inspect_event(cache, event, bookmaker)

    report = app.run(main)
    if as_json:
        echo_json(report)
    else:
        ops.render_inspect(report, stdout_console())
    if not report["snapshots"]:
        where = f" at {bookmaker}" if bookmaker else ""
        raise Failure(f"event {event}{where}: nothing cached under prefix {app.settings.prefix!r}")


@click.command()
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
            await existing_deployment(app, cache)
            return await ops.shard_stats(cache, memory_samples=samples)

    report = app.run(main)
    if as_json:
        echo_json(report)
    else:
        ops.render_stats(report, stdout_console())


@click.command()
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
        echo_json(report)
    else:
        ops.render_keys(report, stdout_console())

