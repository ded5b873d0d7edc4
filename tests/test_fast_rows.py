"""The flusher's one-pass conversion gives exactly the reference's result.

``fast_rows.entry_rows`` turns a stream entry into row values without building
a ``ChangeRecord``; the reference, ``rows.record_rows(records.decode_record(..))``,
stays the definition of every rule and error message. For arbitrary entries,
valid and invalid, the fast path must either decline (the reference decides)
or give the reference's ``_RecordRows`` (compared by ``repr``: NaN-safe, and
``-0.0`` differs from ``0.0``); ``entry_rows`` must give the reference's result
or raise its exception, message included. And the fast path must not simply
decline everything: the records the real script writes go its way.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factory import T0
from realistic import BOOKMAKERS, event_markets

from availability.cache import MarketCache, Scrape
from availability.fast_rows import _fast, entry_rows
from availability.model import coerce_market, encode_market, key_to_field, merge_markets, to_micros
from availability.records import decode_record
from availability.rows import build_rows, record_rows

HOME = "betpawa"

good_lines = [None, 0.0, -0.0, 2.5, -1.5, 1e300]
outcomes_ok = st.lists(st.tuples(st.sampled_from(["1", "X", "Over", "é"]),
                                 st.floats(0.5, 1000, allow_nan=False), st.booleans()).map(list), max_size=3)
bad_outcomes = st.one_of(
    st.lists(st.one_of(
        st.tuples(st.sampled_from(["1", "\ud800", 3]), st.one_of(st.floats(), st.integers(-2, 2)),
                  st.one_of(st.booleans(), st.integers(0, 1))).map(list),
        st.sampled_from([[], ["1", 1.5], ["1", 1.5, True, 4], "x", None]),
    ), min_size=1, max_size=3),
    st.sampled_from(["x", None, 3]),
)


@st.composite
def markets(draw: Any) -> list:
    """``[field, payload items, flags]`` of a market as the script writes it."""
    market_id = draw(st.sampled_from(["1", "18", "a@b", "", "é"]))
    line = draw(st.sampled_from(good_lines))
    items = [market_id, draw(st.sampled_from(["Total", "", "é"])), line,
             draw(st.sampled_from([None, "total", "asian"])), draw(st.sampled_from([None, 1.5, -0.0])),
             draw(st.sampled_from([None, -1.5, 0.0])), draw(outcomes_ok),
             draw(st.sampled_from([None, [], ["main"], ["main", "popular"]]))]
    flags = draw(st.sampled_from([b"n", b"c", b"a", b"u", b"na", b"ca", b"p"]))
    return [key_to_field((market_id, line)).encode(), items, flags]


# One flaw of a record: (what, the bad values to choose from). A market's flaw names the
# position of its payload item ("item 4"), or its field or flags; the others name an entry field.
MARKET_FLAWS: dict[str, list] = {
    "field": [b"1@_", b"nope", b"1@x", b"\xff@_", b"1@2.5", ["x"], 3],
    "flags": [b"", b"x", b"nu", "n", 3, b"\xff"],
    "item 0": ["1", 3, None, b"1"],
    "item 1": [None, 3, b"x", ["l"]],
    "item 2": [None, 2.5, 0, 2, "2.5", float("nan")],
    "item 3": [3, b"x", ["l"], ""],
    "item 4": [1, "1.5", b"1", True, float("nan"), float("inf"), "x", [1]],
    "item 5": [2, "x", float("-inf"), 10 ** 400 // 10 ** 380],
    "item 6": ["outcomes"],  # drawn from bad_outcomes
    "item 7": [["main", 3], [["x"]], "main", [None]],
    "shape": ["short", "long", "map", "int", "bytes"],
}
ENTRY_FLAWS: dict[Any, list] = {
    b"v": [b"1", "2", b"3", None],
    b"kind": [b"other", "scrape", b"\xff", None],
    b"event": [b" 12 ", b"1_0", b"x", 12, "\u0661\u0662", None],
    b"bookmaker": ["bet9ja", b"\xff", b"", None],
    b"scraped_at": [b"abc", 5, b"-5", "\u0661", None],
    b"completeness": [b"\xff", "complete", None],
    b"present": [b"", b"\xc0", b"\xdc\x00", "text", None, msgpack.packb({1: 2})],
    b"markets": [msgpack.packb([b"1@_"]), msgpack.packb(5), msgpack.packb(None), b"\xc1", b"", None],
    b"kickoff": [b"abc", "\u0661\u0662".encode(), 5, "12"],
    b"prev_complete": [b"x", 0, "5"],
    b"rejected": [msgpack.packb([[b"1@_", b"odds", b"x", b"invalid_value", b"bad"]]), b"\xc1", b"\x90"],
    b"extra": [b"1"],
    "v": [b"2", b"1"],
    b"\xff": [b"1"],
    "stream id": [b"\xff-0", 5],
}


def _pack_payload(items: list, shape: str | None) -> bytes:
    if shape == "short":
        items = items[:7]
    elif shape == "long":
        items = items + [1]
    elif shape == "map":
        return msgpack.packb(dict(enumerate(items[:3])), use_bin_type=True)
    elif shape == "int":
        return msgpack.packb(7)
    elif shape == "bytes":
        return b"\xc1"
    try:
        return msgpack.packb(items, use_bin_type=True)
    except Exception:  # a lone surrogate msgpack cannot encode: a payload it could never have been
        return msgpack.packb(items[:2], use_bin_type=True)


@st.composite
def entries(draw: Any) -> tuple[Any, dict]:
    """A record entry as the script writes it, then none, one or a few flaws."""
    ms = draw(st.lists(markets(), max_size=5))
    micros = draw(st.integers(0, 2 ** 53))
    present_len = draw(st.sampled_from([0, 1, 3, 20, 70000]))
    fields: dict[Any, Any] = {
        b"v": b"2",
        b"kind": draw(st.sampled_from([b"scrape", b"removed"])),
        b"event": draw(st.sampled_from([b"7000001", b"12"])),
        b"bookmaker": draw(st.sampled_from([b"betpawa", b"sportybet", b"bet9ja"])),
        b"scraped_at": str(micros).encode(),
        b"completeness": draw(st.sampled_from([b"complete", b"partial", b"empty"])),
        b"present": msgpack.packb([b"1@_"] * present_len),
    }
    for name, value in ((b"kickoff", str(micros + 7).encode()), (b"prev_complete", str(max(micros - 9, 0)).encode()),
                        (b"rejected", b"")):
        if draw(st.booleans()):
            fields[name] = draw(st.sampled_from([b"", value]))
    sid: Any = draw(st.sampled_from(["1-0", b"1-0"]))
    shapes: dict[int, str] = {}
    flaws = draw(st.lists(st.sampled_from(sorted(MARKET_FLAWS) + sorted(ENTRY_FLAWS, key=repr)), max_size=3))
    for flaw in flaws:
        if flaw in MARKET_FLAWS:
            if not ms:
                continue
            i = draw(st.integers(0, len(ms) - 1))
            if flaw == "field":
                ms[i][0] = draw(st.sampled_from(MARKET_FLAWS[flaw]))
            elif flaw == "flags":
                ms[i][2] = draw(st.sampled_from(MARKET_FLAWS[flaw]))
            elif flaw == "shape":
                shapes[i] = draw(st.sampled_from(MARKET_FLAWS[flaw]))
            elif flaw == "item 6":
                ms[i][1][6] = draw(bad_outcomes)
            else:
                ms[i][1][int(flaw[-1])] = draw(st.sampled_from(MARKET_FLAWS[flaw]))
        elif flaw == "stream id":
            sid = draw(st.sampled_from(ENTRY_FLAWS[flaw]))
        else:
            value = draw(st.sampled_from(ENTRY_FLAWS[flaw]))
            if value is None:
                fields.pop(flaw, None)
            else:
                fields[flaw] = value
    if b"markets" not in fields or fields[b"markets"] is None:
        flat: list = []
        for i, (field, items, flags) in enumerate(ms):
            flat += [field, _pack_payload(items, shapes.get(i)), flags]
        if b"markets" not in flaws:
            fields[b"markets"] = msgpack.packb(flat, use_bin_type=True)
    return sid, fields


def _reference(sid: Any, fields: dict, home: str) -> Any:
    try:
        return repr(record_rows(decode_record(sid, fields), home))
    except Exception as exc:
        return exc


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries(), st.sampled_from([HOME, "sportybet"]))
def test_the_fast_path_declines_or_agrees_with_the_reference(entry: tuple[Any, dict], home: str) -> None:
    sid, fields = entry
    expected = _reference(sid, fields, home)
    try:
        fast = _fast(sid, fields, home)
    except Exception:
        fast = None
    if fast is not None:
        assert not isinstance(expected, Exception), f"the fast path took what the reference refuses: {expected!r}"
        assert repr(fast) == expected
    try:
        got = repr(entry_rows(sid, fields, home))
    except Exception as exc:
        assert isinstance(expected, Exception), f"entry_rows refused what the reference takes: {exc!r}"
        assert (type(exc), str(exc)) == (type(expected), str(expected))
    else:
        assert got == expected


def _scrape_entries(bookmaker: str, version: int, *, prev: int | None, kickoff: int | None) -> dict:
    """An entry as apply_scrape.lua writes it (new markets, some stamped unavailable)."""
    markets = list(merge_markets(coerce_market(m) for m in event_markets(bookmaker, version)).values())
    flat: list = []
    for i, m in enumerate(markets):
        flat += [key_to_field(m.key).encode(), encode_market(m), [b"n", b"c", b"u", b"ca", b"p"][i % 5]]
    fields = {
        b"v": b"2", b"kind": b"scrape", b"event": b"7000001", b"bookmaker": bookmaker.encode(),
        b"scraped_at": str(to_micros(T0) + version).encode(), b"completeness": b"complete",
        b"present": msgpack.packb([key_to_field(m.key).encode() for m in markets]),
        b"markets": msgpack.packb(flat, use_bin_type=True),
        b"kickoff": b"" if kickoff is None else str(kickoff).encode(),
    }
    if prev is not None:
        fields[b"prev_complete"] = str(prev).encode()
    return fields


def test_the_fast_path_takes_every_record_of_the_common_shape() -> None:
    for bookmaker in BOOKMAKERS:
        for prev, kickoff in ((None, None), (to_micros(T0) - 10, to_micros(T0) + 3_600_000_000)):
            fields = _scrape_entries(bookmaker, 1, prev=prev, kickoff=kickoff)
            fast = _fast("5-0", fields, HOME)
            assert fast is not None and len(fast.markets) > 100
            assert repr(fast) == repr(record_rows(decode_record("5-0", fields), HOME))


async def test_records_the_script_writes_take_the_fast_path_and_build_the_same_rows(
        cache: MarketCache) -> None:
    """Real records (the Lua script's), several per snapshot: new, changed, stamped, back, partial."""
    for version in range(4):
        scrapes = [Scrape(7000001 + e, bm, event_markets(bm, version)[(version * 7) % 20:],
                          T0 + timedelta(minutes=version, seconds=e), complete=version != 2)
                   for e in range(3) for bm in BOOKMAKERS]
        await cache.apply_batch(scrapes)
    entries_ = []
    for shard in cache.keys.all_shards():
        entries_ += await cache.client.xrange(cache.keys.changes(shard))
    assert len(entries_) >= 30
    fast, reference = [], []
    for sid, fields in entries_:
        converted = _fast(sid, fields, HOME)
        assert converted is not None, fields
        fast.append(converted)
        reference.append(record_rows(decode_record(sid, fields), HOME))
    assert [repr(f) for f in fast] == [repr(r) for r in reference]
    assert repr(build_rows(fast)) == repr(build_rows(reference))
