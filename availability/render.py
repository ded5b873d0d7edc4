"""The reader's answers for humans: a ``rich`` table of a comparison, a list of
transitions (``availability compare`` / ``availability history`` without --json)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from availability.answers import AVAILABLE, UNAVAILABLE, EventComparison, Transition

def _when(value: datetime | None, day: Any = None) -> str:
    """``12:05:11`` when on ``day``, else ``2026-11-28 12:05:11`` (full precision is in --json)."""
    if value is None:
        return "-"
    return value.strftime("%H:%M:%S" if value.date() == day else "%Y-%m-%d %H:%M:%S")


def _odds_text(outcomes: Sequence[tuple[str, float, bool]]) -> str:
    return " / ".join(f"{o:g}" if active else f"{o:g}\u2020" for _, o, active in outcomes)


def render_comparison(comparison: EventComparison, console: Any, *, gaps_only: bool = False) -> None:
    """Print the comparison to a ``rich`` console: the bookmakers, then one row per market
    (``gaps_only``: per market unavailable now at some bookmaker)."""
    from rich import box
    from rich.table import Table

    times = [b.last_scraped_at for b in comparison.bookmakers if b.last_scraped_at]
    day = max(times).date() if times else None
    heads = Table(title=f"event {comparison.event_id} from {comparison.source} (times UTC"
                        f"{', ' + day.isoformat() if day else ''})",
                  title_justify="left", box=box.SIMPLE_HEAD)
    for name in ("bookmaker", "markets", "unavailable", "last scrape", "listing"):
        heads.add_column(name)
    for b in comparison.bookmakers:
        if not b.listed:
            heads.add_row(b.bookmaker, "-", "-", "-", "[dim]never listed this event[/dim]")
            continue
        listing = f"[red]left at {_when(b.removed_at, day)}[/red]" if b.removed_at else "listed"
        heads.add_row(b.bookmaker, str(b.markets), str(b.unavailable), _when(b.last_scraped_at, day), listing)
    console.print(heads)

    rows = [m for m in comparison.markets if not gaps_only or m.unavailable_somewhere]
    table = Table(box=box.SIMPLE_HEAD, caption="odds in outcome order; \u2020 inactive outcome",
                  caption_justify="left")
    table.add_column("key", no_wrap=True)
    table.add_column("market", min_width=10)
    for b in comparison.bookmakers:
        table.add_column(b.bookmaker, min_width=12)
    for m in rows:
        cells = []
        for s in m.states:
            if s.status == AVAILABLE:
                cells.append(_odds_text(s.outcomes) + (" [yellow](suspended)[/yellow]" if s.suspended else ""))
            elif s.status == UNAVAILABLE:
                cells.append(f"[red]gone since {_when(s.unavailable_since, day)}[/red] (was {_odds_text(s.outcomes)})")
            else:
                cells.append("[dim]never offered[/dim]")
        table.add_row(m.field, m.name, *cells)
    console.print(table)
    shown = f"{len(rows)} of {len(comparison.markets)} markets" if gaps_only else f"{len(rows)} markets"
    console.print(f"{shown}; available everywhere: {sum(1 for m in comparison.markets if m.everywhere_available)}")


def render_history(event_id: int, transitions: Sequence[Transition], console: Any) -> None:
    from rich import box
    from rich.table import Table

    table = Table(title=f"event {event_id}: {len(transitions)} transitions (times UTC)", title_justify="left",
                  box=box.SIMPLE_HEAD)
    for name in ("at", "bookmaker", "market", "transition"):
        table.add_column(name, no_wrap=True)
    for t in transitions:
        what = "[red]became unavailable[/red]" if t.transition == "became_unavailable" else "[green]became available[/green]"
        table.add_row(t.at.strftime("%Y-%m-%d %H:%M:%S.%f"), t.bookmaker, t.field, what)
    console.print(table)
