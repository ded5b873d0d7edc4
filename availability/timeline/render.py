"""Drawing a timeline: inline SVG in one self-contained HTML page (no script, no network)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime, timedelta

from availability.model import format_ts
from availability.timeline.model import GAP, OFFERED, UNRECORDED, EventTimeline, Interval

__all__ = ["GAP_COLOUR", "colour_of", "geometry", "page_size", "render_svg", "render_html"]


_PALETTE = {"betpawa": "#1b9e77", "sportybet": "#d95f02", "bet9ja": "#7570b3"}
_MORE_COLOURS = ("#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#1f78b4")
GAP_COLOUR = "#c62828"

LABEL_W = 330
CHART_W = 900
RIGHT_PAD = 24
AXIS_H = 40
LANE_H = 10
LANE_GAP = 3
ROW_PAD = 6
BOTTOM = 16
TAIL = 0.05  # share of the chart after the last record


def colour_of(bookmaker: str, order: Sequence[str]) -> str:
    if bookmaker in _PALETTE:
        return _PALETTE[bookmaker]
    others = [b for b in order if b not in _PALETTE]
    return _MORE_COLOURS[others.index(bookmaker) % len(_MORE_COLOURS)] if bookmaker in others else "#555555"


def _short(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _duration(delta: timedelta) -> str:
    s = int(delta.total_seconds())
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s" if s % 60 else f"{s // 60} min"
    h, rest = divmod(s, 3600)
    return f"{h} h {rest // 60:02d} min"


def _odds(outcomes: Sequence[tuple[str, float, bool]]) -> str:
    return ", ".join(f"{n} {o:g}" + ("" if a else " (inactive)") for n, o, a in outcomes) or "none"


_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800)


def _ticks(start: datetime, end: datetime) -> list[datetime]:
    span = max((end - start).total_seconds(), 1.0)
    step = next((s for s in _STEPS if span / s <= 10), _STEPS[-1])
    epoch = datetime(1970, 1, 1, tzinfo=start.tzinfo)
    first = int((start - epoch).total_seconds() // step + 1) * step
    out = []
    t = epoch + timedelta(seconds=first)
    while t <= end:
        out.append(t)
        t += timedelta(seconds=step)
    return out


def page_size(timeline: EventTimeline) -> tuple[int, int]:
    """A browser window that shows the whole page: the SVG plus the header above it."""
    width, height = geometry(timeline)
    return width + 40, height + 190 + 22 * len(timeline.bookmakers)


def geometry(timeline: EventTimeline) -> tuple[int, int]:
    """``(width, height)`` of the SVG, in CSS pixels."""
    lanes = len(timeline.bookmakers)
    row_h = lanes * LANE_H + (lanes - 1) * LANE_GAP + 2 * ROW_PAD
    return LABEL_W + CHART_W + RIGHT_PAD, AXIS_H + max(1, len(timeline.rows)) * row_h + BOTTOM


def render_svg(timeline: EventTimeline) -> str:
    e = html.escape
    order = [b.bookmaker for b in timeline.bookmakers]
    width, height = geometry(timeline)
    # the last 5% of the width is "after the last record": the latest interval of
    # every lane runs on to the right edge, so a gap that opened at the very end shows
    recorded = max((timeline.end - timeline.start).total_seconds(), 1.0)
    span = recorded / (1 - TAIL)
    lanes = len(order)
    row_h = lanes * LANE_H + (lanes - 1) * LANE_GAP + 2 * ROW_PAD

    def x(t: datetime) -> float:
        return LABEL_W + (t - timeline.start).total_seconds() / span * CHART_W

    out = [
        f'<svg class="timeline" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="availability timeline of event {timeline.event_id}">',
        "<defs>"
        f'<pattern id="gap" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
        f'<rect width="6" height="6" fill="#fde7e7"/><rect width="2" height="6" fill="{GAP_COLOUR}"/></pattern>'
        "</defs>",
    ]
    # axis and grid
    out.append(f'<g class="axis"><line x1="{LABEL_W}" y1="{AXIS_H - 4}" x2="{LABEL_W + CHART_W}" '
               f'y2="{AXIS_H - 4}" stroke="#888"/>')
    ticks = _ticks(timeline.start, timeline.start + timedelta(seconds=span))
    multi_day = timeline.start.date() != timeline.end.date()
    for t in ticks:
        tx = x(t)
        label = t.strftime("%d %b %H:%M" if multi_day else ("%H:%M:%S" if t.second else "%H:%M"))
        out.append(f'<line x1="{tx:.1f}" y1="{AXIS_H - 8}" x2="{tx:.1f}" y2="{height - BOTTOM}" stroke="#e4e4e4"/>'
                   f'<text x="{tx:.1f}" y="{AXIS_H - 12}" text-anchor="middle">{e(label)}</text>')
    out.append(f'<text x="{LABEL_W - 8}" y="{AXIS_H - 12}" text-anchor="end" class="muted">UTC</text>')
    last_x = x(timeline.end)
    out.append(f'<line class="last-record" x1="{last_x:.2f}" y1="{AXIS_H - 4}" x2="{last_x:.2f}" '
               f'y2="{height - BOTTOM}" stroke="#999" stroke-dasharray="1 2"><title>last record: '
               f'{format_ts(timeline.end)}</title></line></g>')

    for i, row in enumerate(timeline.rows):
        top = AXIS_H + i * row_h
        out.append(f'<g class="row" data-market="{e(row.field)}">')
        if i % 2:
            out.append(f'<rect class="stripe" x="0" y="{top}" width="{width}" height="{row_h}" fill="#f6f7f9"/>')
        label = f"{row.field}  {row.name}"
        shown = label if len(label) <= 40 else label[:39] + "\u2026"
        out.append(f'<text x="8" y="{top + ROW_PAD + LANE_H}" class="market"><title>{e(label)}</title>'
                   f"{e(shown)}</text>")
        for j, lane in enumerate(row.lanes):
            y = top + ROW_PAD + j * (LANE_H + LANE_GAP)
            colour = colour_of(lane.bookmaker, order)
            out.append(f'<text x="{LABEL_W - 8}" y="{y + LANE_H - 1}" text-anchor="end" class="lane">'
                       f"{e(lane.bookmaker)}</text>")
            where = f"{lane.bookmaker} \u00b7 {row.field} {row.name}"
            data = f'data-bookmaker="{e(lane.bookmaker)}" data-market="{e(row.field)}"'
            if not lane.intervals:
                out.append(f'<rect class="never" {data} x="{LABEL_W}" y="{y + LANE_H / 2 - 0.5}" '
                           f'width="{CHART_W}" height="1" fill="#d0d0d0"><title>{e(where)}\nnever offered'
                           f"</title></rect>")
                continue
            for k, iv in enumerate(lane.intervals):
                x0, x1 = x(iv.start), (LABEL_W + CHART_W if iv.latest else x(iv.end))
                w = max(x1 - x0, 1.5)
                first = all(p.kind == UNRECORDED for p in lane.intervals[:k])
                nxt = lane.intervals[k + 1] if k + 1 < len(lane.intervals) else None
                title = _interval_title(where, iv, first=first, after=nxt)
                attrs = (f'{data} data-start="{format_ts(iv.start)}" data-end="{format_ts(iv.end)}" '
                         f'x="{x0:.2f}" y="{y}" width="{w:.2f}" height="{LANE_H}"')
                if iv.kind == OFFERED:
                    out.append(f'<rect class="bar offered" {attrs} fill="{colour}"><title>{e(title)}</title></rect>')
                elif iv.kind == UNRECORDED:
                    out.append(f'<rect class="bar unrecorded" {attrs} fill="{colour}" fill-opacity="0.22">'
                               f"<title>{e(title)}</title></rect>")
                else:
                    out.append(f'<rect class="bar gap" {attrs} fill="url(#gap)" stroke="{GAP_COLOUR}" '
                               f'stroke-width="0.5"><title>{e(title)}</title></rect>')
        out.append("</g>")

    for b in timeline.bookmakers:
        if b.removed_at is None:
            continue
        rx = x(b.removed_at)
        colour = colour_of(b.bookmaker, order)
        out.append(f'<line class="removed" data-bookmaker="{e(b.bookmaker)}" x1="{rx:.2f}" y1="{AXIS_H - 4}" '
                   f'x2="{rx:.2f}" y2="{height - BOTTOM}" stroke="{colour}" stroke-width="2" stroke-dasharray="5 3">'
                   f"<title>{e(b.bookmaker)}: the event left the listing at {format_ts(b.removed_at)}</title></line>")
    out.append("</svg>")
    return "".join(out)


def _interval_title(where: str, iv: Interval, *, first: bool, after: Interval | None) -> str:
    lines = [where]
    if iv.kind == UNRECORDED:
        if after is not None and after.kind == GAP:
            lines.append(f"offered at some time before {format_ts(iv.end)}, since when was not recorded")
        else:
            lines.append(f"before {format_ts(iv.end)}: not recorded whether it was offered "
                         f"(PostgreSQL keeps when its odds last changed, not when it was first seen)")
        return "\n".join(lines)
    # a lane's first bar starts at the earliest time known, not necessarily the first sighting
    since = f"{format_ts(iv.start)}{' (first known)' if first else ''}"
    if iv.kind == OFFERED:
        if iv.latest:
            lines.append(f"offered since {since}, still offered")
        else:
            lines.append(f"offered {since} \u2192 {format_ts(iv.end)} ({_duration(iv.end - iv.start)})")
        if iv.latest:
            lines.append(f"odds: {_odds(iv.outcomes)}")
    elif iv.latest:
        lines.append(f"unavailable since {format_ts(iv.start)}, still unavailable")
        lines.append(f"last odds: {_odds(iv.outcomes)}")
    else:
        lines.append(f"unavailable {format_ts(iv.start)} \u2192 {format_ts(iv.end)} ({_duration(iv.end - iv.start)})")
    return "\n".join(lines)


_CSS = """
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; margin: 16px; }
h1 { font-size: 20px; margin: 0 0 4px; }
p.note { color: #555; margin: 0 0 10px; max-width: 1200px; }
table.bookmakers { border-collapse: collapse; margin: 8px 0 12px; }
table.bookmakers td, table.bookmakers th { padding: 2px 12px 2px 0; text-align: left; font-size: 13px; }
.swatch { display: inline-block; width: 22px; height: 10px; vertical-align: middle; margin-right: 4px; }
.legend span { margin-right: 16px; font-size: 13px; }
svg.timeline text { font: 11px system-ui, sans-serif; fill: #333; }
svg.timeline text.market { font-size: 12px; }
svg.timeline text.lane { fill: #777; font-size: 10px; }
svg.timeline text.muted { fill: #999; }
svg.timeline rect.bar:hover { stroke: #000; stroke-width: 1; }
"""


def render_html(timeline: EventTimeline, *, title: str | None = None) -> str:
    """The whole page: header, bookmaker table, legend, the SVG. Self-contained."""
    e = html.escape
    order = [b.bookmaker for b in timeline.bookmakers]
    heading = title or f"Event {timeline.event_id}: market availability"
    rows = []
    for b in timeline.bookmakers:
        colour = colour_of(b.bookmaker, order)
        if not b.listed:
            rows.append(f'<tr><td><span class="swatch" style="background:{colour}"></span>{e(b.bookmaker)}</td>'
                        f"<td colspan=3>never listed this event</td></tr>")
            continue
        left = f"left the listing at {_short(b.removed_at)}" if b.removed_at else "listed"
        rows.append(
            f'<tr><td><span class="swatch" style="background:{colour}"></span>{e(b.bookmaker)}</td>'
            f"<td>{b.markets} markets, {b.unavailable} unavailable now</td>"
            f"<td>last scrape {e(_short(b.last_scraped_at)) if b.last_scraped_at else '-'}</td>"
            f"<td>{e(left)}</td></tr>"
        )
    legend = (
        '<p class="legend">'
        '<span><span class="swatch" style="background:#1b9e77"></span>offered (colour of the bookmaker)</span>'
        '<span><span class="swatch" style="background:#1b9e77;opacity:.22"></span>not recorded (before the first '
        'time it is known to have been offered)</span>'
        f'<span><span class="swatch" style="background:repeating-linear-gradient(45deg,{GAP_COLOUR} 0 2px,'
        '#fde7e7 2px 6px)"></span>unavailable</span>'
        '<span><span class="swatch" style="background:#d0d0d0;height:2px"></span>never offered</span>'
        '<span><span class="swatch" style="border-top:2px dashed #555;height:0"></span>event left a listing</span>'
        "</p>"
    )
    empty = "" if timeline.rows else "<p>No market matches.</p>"
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(heading)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{e(heading)}</h1>"
        f'<p class="note">{_short(timeline.start)} to {_short(timeline.end)} UTC, {len(timeline.rows)} markets. '
        "Hover a bar for exact times and odds. A lane's bar starts at the earliest time the market is known "
        "to have been offered: its odds last changed then, or its first transition (PostgreSQL keeps no "
        "first-seen time per market). Only the latest bar of a lane shows odds: only the current or last "
        "odds are stored. The dotted line is the last record; the current state runs on to the right edge.</p>"
        f'<table class="bookmakers">{"".join(rows)}</table>{legend}{empty}'
        f"{render_svg(timeline)}</body></html>\n"
    )
