"""Change records: what ``apply_scrape.lua`` appends to a shard's stream.

One record per applied scrape that changed or confirmed anything. Stream
entry fields (``XRANGE '{av:2}:changes' - +``)::

    v             "2" (record format; "2": payloads are schema-2 positional arrays,
                  see model.encode_market)
    kind          "scrape" or "removed"
    event         "1234"
    bookmaker     "betpawa"
    scraped_at    microseconds since the epoch
    completeness  "complete" | "partial" | "empty"
    present       msgpack list of market fields seen by this scrape (confirmed)
    markets       msgpack flat list [field, payload, flags, ...] of every market
                  whose stored state changed; flags: "n" new, "c" odds changed,
                  "a" became available again, "u" became unavailable (payload
                  is then the last known odds); "na"/"ca" combine; "p": listed
                  unchanged by a partial scrape (a confirmation of that market
                  alone: a partial scrape says nothing about the others).
    rejected      (only when the scrape quarantined markets) msgpack list of
                  [market field or nil, field, value, reason, message], one per
                  rejected market (see model.RejectedMarket); a record without
                  it, e.g. one written by older code, rejected none.
    kickoff       the event's kickoff in microseconds, or "" when not known (the
                  latest one the snapshot was given); records written before it
                  existed have no such field and decode with ``kickoff=None``
    prev_complete microseconds of the last complete scrape of this (event,
                  bookmaker) before this one, or "" (none, or a record written
                  before the field existed): a market stamped "u" here was
                  last seen no earlier than that scrape.

Confirmations are facts about a scrape, not about each market: a complete
scrape (``completeness`` "complete") saw every market it leaves available,
so the flusher records it once per (event, bookmaker) and derives each
market's last confirmation from it (the ``*_confirmed`` views, migration
0006). Only "p" markets are confirmed one by one.

A record carries everything the flusher needs, so it can be written to
PostgreSQL in any order, more than once: each row it touches is written with
``scraped_at`` as its version and refuses older versions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, Mapping

import msgpack

from availability.errors import AvailabilityError
from availability.model import CachedMarket, MarketKey, RejectedMarket, field_to_key, from_micros, market_from_fields

__all__ = ["ChangeRecord", "MarketChange", "RecordError", "decode_record"]


class RecordError(AvailabilityError):
    """A stream entry cannot be decoded into a change record."""


@dataclass(frozen=True)
class MarketChange:
    key: MarketKey
    # the payload's eight positional items (model.encode_market), as msgpack decoded them:
    # the flusher reads them as they are, without building a CachedMarket per market
    fields: list = field(repr=False)
    odds_changed: bool  # new or changed odds: captured_at moves to this scrape
    is_new: bool
    became_available: bool
    became_unavailable: bool
    confirmed_only: bool = False  # "p": listed unchanged by a partial scrape
    unavailable_at: datetime | None = None  # the scrape's time when it became unavailable

    @property
    def market(self) -> CachedMarket:
        """The market's offer (``unavailable_at`` set when it became unavailable)."""
        return market_from_fields(self.fields, self.unavailable_at)


@dataclass(frozen=True)
class ChangeRecord:
    stream_id: str
    kind: str
    event_id: int
    bookmaker: str
    scraped_at: datetime
    completeness: str
    present_blob: bytes = field(repr=False)  # msgpack list of the fields seen; decoded on demand
    changes: tuple[MarketChange, ...]
    rejected: tuple[RejectedMarket, ...] = ()
    kickoff: datetime | None = None  # the event's start, when the scraper gave one
    prev_complete: datetime | None = None  # the last complete scrape before this one (see module doc)
    lists_markets: bool = False  # the scrape listed at least one market (read from present's header)

    @property
    def present(self) -> tuple[MarketKey, ...]:
        """The markets this scrape listed (decoded when asked: the flusher does not need them)."""
        try:
            return tuple(_field_key(x) for x in msgpack.unpackb(self.present_blob, raw=True) or ())
        except Exception as exc:
            raise RecordError(f"record {self.stream_id}: present: cannot decode: {type(exc).__name__}: {exc}") from exc

    @property
    def transitions(self) -> list[tuple[MarketKey, str]]:
        """``(key, 'became_unavailable' | 'became_available')``, at ``scraped_at``."""
        out = []
        for c in self.changes:
            if c.became_unavailable:
                out.append((c.key, "became_unavailable"))
            if c.became_available:
                out.append((c.key, "became_available"))
        return out


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# Longest text a decoded rejection keeps, per part (the cache writes shorter ones).
_MAX_REJECTION_TEXT = 1000


def _rejection_text(value: Any) -> str | None:
    if value is None:
        return None
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return text[:_MAX_REJECTION_TEXT]


def _rejections(sid: str, blob: Any) -> tuple[RejectedMarket, ...]:
    """The record's rejections. Diagnostics only: an entry that does not decode
    is kept as far as it can be read (its key dropped), so it can never cost the
    record's markets their way to PostgreSQL."""
    if not blob:
        return ()
    try:
        items = msgpack.unpackb(blob, raw=True)
    except Exception as exc:
        return (RejectedMarket(None, None, None, "invalid_value", f"record {sid}: rejected: cannot decode: {exc}"[:200]),)
    if not isinstance(items, list):
        items = [items]
    out = []
    for item in items:
        parts = list(item) + [None] * 5 if isinstance(item, (list, tuple)) else [None, None, None, None, item]
        key: MarketKey | None
        try:
            key = None if parts[0] is None else field_to_key(parts[0])
        except Exception:
            key = None
        reason = _rejection_text(parts[3]) or "invalid_value"
        out.append(RejectedMarket(key, _rejection_text(parts[1]), _rejection_text(parts[2]), reason,
                                  _rejection_text(parts[4]) or ""))
    return tuple(out)


@lru_cache(maxsize=65536)
def _field_key(field_name: bytes | str) -> MarketKey:
    """A market field as a key, memoised: the same few thousand fields ("18@2.5")
    recur in every record of every event, and parsing a line is not free."""
    return field_to_key(field_name)


_FLAGS: dict[bytes, tuple[bool, bool, bool, bool, bool]] = {}  # flags -> (odds_changed, new, a, u, p)


def _flags(raw: bytes | str) -> tuple[bool, bool, bool, bool, bool]:
    found = _FLAGS.get(raw)  # type: ignore[arg-type]
    if found is None:
        text = _text(raw)
        if not text or set(text) - set("ncaup"):
            raise RecordError(f"flags: expected letters of 'ncaup', got {text!r}")
        found = ("n" in text or "c" in text, "n" in text, "a" in text, "u" in text, text == "p")
        if len(_FLAGS) < 64:
            _FLAGS[raw] = found  # type: ignore[index]
    return found


def decode_record(stream_id: bytes | str, fields: Mapping[bytes | str, bytes | str]) -> ChangeRecord:
    """Decode one stream entry; raises :class:`RecordError` when it cannot be."""
    sid = _text(stream_id)
    try:
        f = {_text(k): v for k, v in fields.items()}
        if _text(f["v"]) != "2":
            raise RecordError(f"record {sid}: v: unsupported record format {_text(f['v'])!r}")
        scraped_at = from_micros(int(f["scraped_at"]))
        present = f["present"]
        if not isinstance(present, bytes):
            raise RecordError(f"record {sid}: present: expected msgpack bytes")
        header = msgpack.Unpacker()
        header.feed(present)
        lists_markets = header.read_array_header() > 0  # the list itself is decoded only when asked
        prev = f.get("prev_complete")
        prev_complete = from_micros(int(prev)) if prev else None
        flat = msgpack.unpackb(f["markets"], raw=True) or []
        if len(flat) % 3:
            raise RecordError(f"record {sid}: markets: expected triples, got {len(flat)} items")
        changes = []
        for i in range(0, len(flat), 3):
            key = _field_key(flat[i])
            odds_changed, new, available, unavailable, confirmed_only = _flags(flat[i + 2])
            data = msgpack.unpackb(flat[i + 1], raw=False)
            if type(data) is not list or len(data) != 8 or type(data[6]) is not list:
                raise RecordError(f"record {sid}: market {key}: payload: expected a msgpack array of 8 items "
                                  f"(schema 2)")
            # the key the field names, compared without normalising the payload's again (the
            # script stored it under that field: a line is a float or nil, -0.0 == 0.0)
            if data[0] != key.betpawa_market_id or data[2] != key.line:
                raise RecordError(f"record {sid}: market {key}: payload is for {data[0]!r}@{data[2]!r}")
            changes.append(
                MarketChange(
                    key=key,
                    fields=data,
                    unavailable_at=scraped_at if unavailable else None,
                    odds_changed=odds_changed,
                    is_new=new,
                    became_available=available,
                    became_unavailable=unavailable,
                    confirmed_only=confirmed_only,
                )
            )
        kickoff_raw = _text(f.get("kickoff") or "")  # absent in records of older versions
        kickoff = from_micros(int(kickoff_raw)) if kickoff_raw else None
        kind = _text(f["kind"])
        if kind not in ("scrape", "removed"):
            raise RecordError(f"record {sid}: kind: expected scrape or removed, got {kind!r}")
        return ChangeRecord(
            stream_id=sid,
            kind=kind,
            event_id=int(f["event"]),
            bookmaker=_text(f["bookmaker"]),
            scraped_at=scraped_at,
            completeness=_text(f["completeness"]),
            present_blob=present,
            changes=tuple(changes),
            rejected=_rejections(sid, f.get("rejected")),
            kickoff=kickoff,
            prev_complete=prev_complete,
            lists_markets=lists_markets,
        )
    except RecordError:
        raise
    except Exception as exc:  # any malformed field: the record goes to the dead-letter stream
        raise RecordError(f"record {sid}: cannot decode: {type(exc).__name__}: {exc}") from exc
