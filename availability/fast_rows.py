"""Stream entry -> row values in one pass: the flusher's path for the common record.

The reference is two steps, :func:`availability.records.decode_record` (an
entry into a :class:`~availability.records.ChangeRecord`, one
:class:`~availability.records.MarketChange` per market, its payload kept as
msgpack decoded it) then :func:`availability.rows.record_rows` (row values).
They stay the definition of every rule and error message.

:func:`entry_rows` gives their result without the intermediate objects: each
market's payload is unpacked, checked and turned into its row values at once,
and only atoms and tuples of atoms outlive the record. That matters more than
the calls saved: a first cycle's batch holds ~50,000 markets, and the lists of
decoded payloads kept alive until the batch was written made the garbage
collector's passes over them cost more than the decoding itself.

Any entry it does not handle -- one with rejections, a field it does not know,
anything the reference would refuse -- goes the reference's way, which then
decides, error message included. ``tests/test_fast_rows.py`` proves, for
arbitrary entries valid and invalid, that the fast path either declines or
gives exactly the reference's result.
"""

from __future__ import annotations

from typing import Any, Mapping

import msgpack

from availability.db.convert import HOME_BOOKMAKER
from availability.model import from_micros
from availability.records import _field_key, _flags, decode_record
from availability.rows import _groups_json, _outcomes_json, _RecordRows, record_rows

__all__ = ["entry_rows"]

# The fields a record may carry (availability.records); an entry with any other goes the reference's way.
_KNOWN = frozenset(
    (b"v", b"kind", b"event", b"bookmaker", b"scraped_at", b"completeness", b"present", b"markets", b"rejected",
     b"kickoff", b"prev_complete")
)
_KINDS = {b"scrape": "scrape", b"removed": "removed"}
_unpackb = msgpack.unpackb


def entry_rows(stream_id: bytes | str, fields: Mapping[Any, Any],
               home_bookmaker: str = HOME_BOOKMAKER) -> _RecordRows:
    """``record_rows(decode_record(stream_id, fields), home_bookmaker)``, in one pass
    when it can be; raises what the reference raises."""
    try:
        fast = _fast(stream_id, fields, home_bookmaker)
    except Exception:  # the reference decides, and words the error
        fast = None
    if fast is not None:
        return fast
    return record_rows(decode_record(stream_id, fields), home_bookmaker)


def _fast(stream_id: bytes | str, fields: Mapping[Any, Any], home_bookmaker: str) -> _RecordRows | None:
    """The one-pass conversion, or ``None`` (or an exception): the reference decides."""
    if type(stream_id) is bytes:
        stream_id.decode()  # the reference's ChangeRecord.stream_id: refused if it is not UTF-8
    for k in fields:
        if type(k) is not bytes or k not in _KNOWN:
            return None
    get = fields.get
    if get(b"v") != b"2" or get(b"rejected"):  # rejections: rare, the reference's way
        return None
    kind = _KINDS.get(get(b"kind"))  # type: ignore[arg-type]
    present, bookmaker, completeness = get(b"present"), get(b"bookmaker"), get(b"completeness")
    kickoff_raw = get(b"kickoff") or b""
    if (kind is None or type(present) is not bytes or type(bookmaker) is not bytes
            or type(completeness) is not bytes or type(kickoff_raw) is not bytes):
        return None
    scraped_at = from_micros(int(fields[b"scraped_at"]))
    header = msgpack.Unpacker()
    header.feed(present)
    lists_markets = header.read_array_header() > 0
    prev = get(b"prev_complete")
    prev_complete = from_micros(int(prev)) if prev else None
    flat = _unpackb(fields[b"markets"], raw=True) or []
    if type(flat) is not list or len(flat) % 3:
        return None
    kickoff_text = kickoff_raw.decode()
    kickoff = from_micros(int(kickoff_text)) if kickoff_text else None
    event_id = int(fields[b"event"])
    bookmaker_text = bookmaker.decode()
    completeness_text = completeness.decode()

    source = None if bookmaker_text == home_bookmaker else bookmaker_text
    at = scraped_at
    markets = []
    transitions = []
    any_odds_changed = False
    all_new = True
    for i in range(0, len(flat), 3):
        key = _field_key(flat[i])
        odds_changed, new, available, unavailable, _ = _flags(flat[i + 2])
        data = _unpackb(flat[i + 1], raw=False)
        if type(data) is not list or len(data) != 8:
            return None
        market_id, name, line, handicap_type, home, away, outcomes, groups = data
        key_id, key_line = key
        if (type(outcomes) is not list or market_id != key_id or line != key_line or type(name) is not str
                or (handicap_type is not None and type(handicap_type) is not str)):
            return None
        values = (
            name,
            handicap_type,
            None if home is None else float(home),
            None if away is None else float(away),
            _outcomes_json(outcomes),
            None if groups is None else _groups_json(tuple(groups)),
        )
        if odds_changed:
            any_odds_changed = True
        if not new:
            all_new = False
        markets.append(((source, event_id, key_id, key_line), values, at if odds_changed else None,
                        prev_complete if unavailable else at, unavailable))
        if unavailable:
            transitions.append((key_id, key_line, "became_unavailable"))
        if available:
            transitions.append((key_id, key_line, "became_available"))
    return _RecordRows(event_id, bookmaker_text, at, kind, completeness_text, lists_markets, kickoff,
                       any_odds_changed, all_new, tuple(markets), tuple(transitions), ())
