"""Reading commands: ``alerts``, ``compare``, ``history`` and ``timeline``.

The logic is in :mod:`availability.reader`, :mod:`availability.alerts` and
:mod:`availability.timeline`; these only wire options."""

from __future__ import annotations

import contextlib
from typing import Any, AsyncIterator

import click

from availability.cli.app import App, ConfigError, Failure, echo_json, one_line, pass_app, ping_database, stdout_console
from availability.errors import AvailabilityError

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
            await ping_database(database_url)
        reader = AvailabilityReader(cache, database_url, home_bookmaker=app.settings.home_bookmaker,
                                    bookmakers=bookmakers)
        await stack.enter_async_context(reader)
        yield reader


@click.command()
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
        echo_json({"count": len(found), "upcoming_only": not all_events, "source": source,
                    "events": [a.as_dict() for a in found]})
    else:
        from availability.alerts import render_alerts

        render_alerts(found, stdout_console(), source=source, upcoming_only=not all_events)


@click.command()
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
        echo_json(data)
    elif comparison.found:
        from availability.reader import render_comparison

        render_comparison(comparison, stdout_console(), gaps_only=gaps_only)
    if not comparison.found:
        raise Failure(f"event {event}: nothing stored in {source} (prefix {app.settings.prefix!r})"
                      if source == "redis" else f"event {event}: nothing stored in PostgreSQL")


@click.command()
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
        echo_json([t.as_dict() for t in transitions])
    else:
        from availability.reader import render_history

        render_history(event, transitions, stdout_console())


@click.command()
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
            raise error(f"--png: {one_line(exc)}") from None
        click.echo(f"wrote {png}")

