"""A picture of an event's availability: one self-contained HTML page.

A row per market, a lane per bookmaker; a bar while the market was offered,
a hatched gap while it was unavailable, a dashed line where the event left a
bookmaker's listing. Hovering any bar shows exact times and odds (SVG
``<title>``). Inline SVG and CSS only: no script, no network.

The intervals come from PostgreSQL (:meth:`AvailabilityReader.timeline`):
``market_availability_history`` gives the transitions, the market rows the
current state and odds. PostgreSQL keeps no "first seen" time per market,
so a lane's first bar begins at the earliest time the market is known to
have been offered: the row's ``captured_at`` (odds last changed) or its first
transition, whichever is earlier. Before that, back to the earliest record
of that bookmaker, the lane is drawn faded: *not recorded* (offered or not).
Only the current (or last) odds are stored, so only a lane's latest bar
shows odds. The latest interval of each lane runs on past the last record
to the right edge: that is the state now.

``screenshot`` renders the page to PNG with a headless Chromium when one is
installed (Debian package ``chromium``); nothing else needs a browser.

The package: :mod:`~availability.timeline.model` (the intervals, pure),
:mod:`~availability.timeline.render` (SVG and HTML),
:mod:`~availability.timeline.browser` (the headless Chromium).
"""

from availability.timeline.browser import BROWSER_NAMES, MAX_SCREENSHOT_HEIGHT, dump_dom, find_browser, screenshot
from availability.timeline.model import (
    GAP,
    OFFERED,
    UNRECORDED,
    EventTimeline,
    Interval,
    Lane,
    TimelineError,
    TimelineRow,
    build_timeline,
)
from availability.timeline.render import GAP_COLOUR, colour_of, geometry, page_size, render_html, render_svg

__all__ = [
    "Interval",
    "Lane",
    "TimelineRow",
    "EventTimeline",
    "TimelineError",
    "build_timeline",
    "render_html",
    "render_svg",
    "page_size",
    "find_browser",
    "screenshot",
    "dump_dom",
    "BROWSER_NAMES",
    "MAX_SCREENSHOT_HEIGHT",
    "GAP_COLOUR",
    "GAP",
    "OFFERED",
    "UNRECORDED",
    "colour_of",
    "geometry",
]
