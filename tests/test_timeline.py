"""The timeline of a real event: intervals from history and current state, one
self-contained HTML page, rendered in a real headless browser when one is installed."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest

from availability.reader import AvailabilityReader
from availability.timeline import (
    GAP_COLOUR,
    TimelineError,
    dump_dom,
    find_browser,
    page_size,
    render_html,
    render_svg,
    screenshot,
)
import reading
from factory import availability
from reading import at, build_event, flush, market
BROWSER = find_browser()
needs_browser = pytest.mark.skipif(
    BROWSER is None,
    reason="no headless Chromium on PATH (Debian: apt-get install chromium): the rendered timeline is not checked",
)

SHARDS = reading.SHARDS  # the conftest ``cache`` fixture builds the cache with the module's SHARDS


@pytest.fixture
async def reader(cache, database_url):
    async with AvailabilityReader(cache, database_url) as r:
        yield r


def lanes_of(timeline):
    return {(r.field, lane.bookmaker): [(i.start, i.end, i.kind) for i in lane.intervals]
            for r in timeline.rows for lane in r.lanes}


async def test_intervals_come_from_history_and_current_state(cache, database_url, reader):
    await build_event(cache, database_url)

    t = await reader.timeline(1)

    assert (t.start, t.end) == (at(0), at(12))
    lanes = lanes_of(t)
    assert lanes[("18@3.5", "betpawa")] == [(at(0), at(5), "offered"), (at(5), at(10), "unavailable"),
                                           (at(10), at(12), "offered")]
    assert lanes[("16@0.0", "betpawa")] == [(at(0), at(5), "offered"), (at(5), at(12), "unavailable")]
    # the event left sportybet's listing at 12:12: a gap from then on
    assert lanes[("18@2.5", "sportybet")] == [(at(1), at(12), "offered"), (at(12), at(12), "unavailable")]
    # 1@_'s odds changed at 12:05 and it has no transition: before that, nothing says it was offered
    assert lanes[("1@_", "betpawa")] == [(at(0), at(5), "unrecorded"), (at(5), at(12), "offered")]
    # 16@_ first appeared at sportybet at 12:06
    assert lanes[("16@_", "sportybet")] == [(at(1), at(6), "unrecorded"), (at(6), at(12), "offered"),
                                           (at(12), at(12), "unavailable")]
    assert lanes[("1@_", "bet9ja")] == [] and lanes[("16@_", "betpawa")] == []
    latest = t.rows[0].lanes[0].intervals[-1]
    assert latest.latest and latest.outcomes == (("Home", 1.9, True), ("Away", 2.05, True))


async def test_rows_can_be_chosen_by_market_and_by_gaps(cache, database_url, reader):
    await build_event(cache, database_url)
    await cache.apply_scrape(3, "betpawa", [market("1"), market("18", 2.5)], at(0))
    await cache.apply_scrape(3, "betpawa", [market("1")], at(5))
    for b in ("sportybet", "bet9ja"):
        await cache.apply_scrape(3, b, [market("1"), market("18", 2.5)], at(1))
    await flush(cache, database_url)

    assert [r.field for r in (await reader.timeline(1, markets=["18"])).rows] == ["18@2.5", "18@3.5"]
    assert [r.field for r in (await reader.timeline(1, markets=["16@_", "1"])).rows] == ["1@_", "16@_"]
    assert [r.field for r in (await reader.timeline(3)).rows] == ["1@_", "18@2.5"]
    assert [r.field for r in (await reader.timeline(3, gaps_only=True)).rows] == ["18@2.5"]
    with pytest.raises(TimelineError, match="event 99: nothing recorded"):
        await reader.timeline(99)


class _Rects(HTMLParser):
    """The ``<rect class="bar ...">`` elements of a page, with their ``<title>`` text."""

    def __init__(self) -> None:
        super().__init__()
        self.rects: list[dict[str, str]] = []
        self._in: dict[str, str] | None = None
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "rect" and "bar" in a.get("class", "").split():
            self._in = a
            self.rects.append(a)
        elif tag == "title" and self._in is not None:
            self._in["title"] = ""
        elif tag in ("script", "link", "img", "iframe"):
            self.text.append(f"<{tag}>")

    def handle_data(self, data):
        if self._in is not None and "title" in self._in:
            self._in["title"] += data

    def handle_endtag(self, tag):
        if tag == "rect":
            self._in = None


def find(rects, bookmaker, field, kind, start):
    hits = [r for r in rects if r["data-bookmaker"] == bookmaker and r["data-market"] == field
            and kind in r["class"].split() and r["data-start"] == start]
    assert len(hits) == 1, (bookmaker, field, kind, start, hits)
    return hits[0]


async def test_the_page_is_self_contained_with_exact_times_and_odds_on_hover(cache, database_url, reader):
    await build_event(cache, database_url)
    page = render_html(await reader.timeline(1))

    assert page.startswith("<!doctype html>") and "<svg" in page
    for external in ("http://", "https://", "<script", "<link", "src=", "@import", "url(http"):
        assert external not in page
    parsed = _Rects()
    parsed.feed(page)
    assert parsed.text == []
    gap = find(parsed.rects, "betpawa", "18@3.5", "gap", "2026-11-28T12:05:00.000000Z")
    assert gap["title"] == ("betpawa \u00b7 18@3.5 Market 18\n"
                            "unavailable 2026-11-28T12:05:00.000000Z \u2192 2026-11-28T12:10:00.000000Z (5 min)")
    now = find(parsed.rects, "betpawa", "1@_", "offered", "2026-11-28T12:05:00.000000Z")
    assert now["title"].splitlines()[1:] == ["offered since 2026-11-28T12:05:00.000000Z (first known), still offered",
                                             "odds: Home 1.9, Away 2.05"]
    gone = find(parsed.rects, "sportybet", "1@_", "gap", "2026-11-28T12:12:00.000000Z")
    assert gone["title"].splitlines()[1:] == ["unavailable since 2026-11-28T12:12:00.000000Z, still unavailable",
                                              "last odds: Home 1.8, Away 2.05"]
    assert 'class="removed" data-bookmaker="sportybet"' in page
    assert "never listed this event" in page  # bet9ja


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def _near(pixel, colour, tolerance=8) -> bool:
    return all(abs(p - c) <= tolerance for p, c in zip(pixel, colour))


@needs_browser
async def test_the_timeline_of_a_real_event_renders_in_a_headless_browser(cache, database_url, reader, tmp_path):
    Image = pytest.importorskip("PIL.Image", reason="Pillow (a test dependency) reads the screenshot")
    await build_event(cache, database_url)
    t = await reader.timeline(1)
    page = tmp_path / "timeline.html"
    page.write_text(render_html(t), encoding="utf-8")

    # the DOM after the browser loaded the page: every interval is a rect
    rendered = _Rects()
    rendered.feed(dump_dom(page))
    assert len(rendered.rects) == sum(len(lane.intervals) for r in t.rows for lane in r.lanes) == 15
    assert {r["data-bookmaker"] for r in rendered.rects} == {"betpawa", "sportybet"}
    find(rendered.rects, "betpawa", "18@3.5", "gap", "2026-11-28T12:05:00.000000Z")

    # the whole page as a user sees it
    width, height = page_size(t)
    png = screenshot(page, tmp_path / "timeline.png", width=width, height=height)
    image = Image.open(png).convert("RGB")
    assert image.size == (width, height)
    colours = image.getcolors(maxcolors=width * height)
    counts = {c: n for n, c in colours}
    for wanted in ("#1b9e77", "#d95f02", GAP_COLOUR):  # betpawa and sportybet bars, the hatched gaps
        assert sum(n for c, n in counts.items() if _near(c, _rgb(wanted))) > 200, wanted

    # the SVG alone at the page's origin: each bar is drawn where the layout put it
    svg_page = tmp_path / "svg.html"
    svg_page.write_text(f'<!doctype html><html><body style="margin:0">{render_svg(t)}</body></html>', encoding="utf-8")
    shot = Image.open(screenshot(svg_page, tmp_path / "svg.png", width=width, height=height)).convert("RGB")

    def centre(rect):
        return (int(float(rect["x"]) + float(rect["width"]) / 2), int(float(rect["y"]) + float(rect["height"]) / 2))

    svg_rects = _Rects()
    svg_rects.feed(render_svg(t))
    back = find(svg_rects.rects, "betpawa", "18@3.5", "offered", "2026-11-28T12:10:00.000000Z")
    assert _near(shot.getpixel(centre(back)), _rgb("#1b9e77"))
    sporty = find(svg_rects.rects, "sportybet", "18@2.5", "offered", "2026-11-28T12:01:00.000000Z")
    assert _near(shot.getpixel(centre(sporty)), _rgb("#d95f02"))
    unrecorded = find(svg_rects.rects, "betpawa", "1@_", "unrecorded", "2026-11-28T12:00:00.000000Z")
    faded = tuple(round(0.22 * c + 0.78 * 255) for c in _rgb("#1b9e77"))
    assert _near(shot.getpixel(centre(unrecorded)), faded)
    gap = find(svg_rects.rects, "betpawa", "18@3.5", "gap", "2026-11-28T12:05:00.000000Z")
    x0, y = int(float(gap["x"])) + 2, centre(gap)[1]
    stripe = [shot.getpixel((x, y)) for x in range(x0, x0 + int(float(gap["width"])) - 4)]
    assert any(_near(p, _rgb(GAP_COLOUR), 40) for p in stripe) and any(_near(p, (253, 231, 231), 12) for p in stripe)


# ---------------------------------------------------------------- the command line


async def test_cli_timeline_writes_the_page_and_says_clearly_when_it_cannot_take_a_screenshot(
        cache, database_url, tmp_path):
    await build_event(cache, database_url)
    out, png = tmp_path / "t.html", tmp_path / "t.png"

    result = availability("timeline", "1", "--out", str(out), "--png", str(png), "--browser", str(tmp_path / "nope"),
                     timeout=180, DATABASE_URL=database_url)

    assert result.returncode == 2
    assert result.stdout.startswith(f"wrote {out} (5 markets, 3 bookmakers, 2026-11-28 12:00:00 to 12:12:00 UTC)")
    assert result.stderr.strip() == (f"Error: --png: browser: no headless Chromium found ({tmp_path / 'nope'} not on "
                                     f"PATH; Debian: apt-get install chromium)")
    assert "<svg" in out.read_text() and not png.exists()
    nothing = availability("timeline", "99", "--out", str(tmp_path / "n.html"), timeout=180, DATABASE_URL=database_url)
    assert nothing.returncode == 1 and nothing.stderr.strip() == "Error: event 99: nothing recorded, no timeline to draw"


@needs_browser
async def test_cli_timeline_png(cache, database_url, tmp_path):
    await build_event(cache, database_url)
    out, png = tmp_path / "t.html", tmp_path / "t.png"

    result = availability("timeline", "1", "--out", str(out), "--png", str(png), "--gaps-only", timeout=180, DATABASE_URL=database_url)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == f"wrote {png}"
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
