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
                  is then the last known odds); "na"/"ca" combine.
    rejected      (only when the scrape quarantined markets) msgpack list of
                  [market field or nil, field, value, reason, message], one per
                  rejected market (see model.RejectedMarket); a record without
                  it, e.g. one written by older code, rejected none.
    kickoff       the event's kickoff in microseconds, or "" when not known (the
                  latest one the snapshot was given); records written before it
                  existed have no such field and decode with ``kickoff=None``

A record carries everything the flusher needs, so it can be written to
PostgreSQL in any order, more than once: each row it touches is written with
``scraped_at`` as its version and refuses older versions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

import msgpack

from availability.errors import AvailabilityError
from availability.model import CachedMarket, MarketKey, RejectedMarket, decode_market, field_to_key, from_micros

__all__ = ["ChangeRecord", "MarketChange", "RecordError", "decode_record"]


class RecordError(AvailabilityError):
    """A stream entry cannot be decoded into a change record."""


@dataclass(frozen=True)
class MarketChange:
    key: MarketKey
    market: CachedMarket  # the market's offer; unavailable_at set when it became unavailable
    odds_changed: bool  # new or changed odds: captured_at moves to this scrape
    is_new: bool
    became_available: bool
    became_unavailable: bool


@dataclass(frozen=True)
class ChangeRecord:
    stream_id: str
    kind: str
    event_id: int
    bookmaker: str
    scraped_at: datetime
    completeness: str
    present: tuple[MarketKey, ...]
    changes: tuple[MarketChange, ...]
    rejected: tuple[RejectedMarket, ...] = ()
    kickoff: datetime | None = None  # the event's start, when the scraper gave one

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


def decode_record(stream_id: bytes | str, fields: Mapping[bytes | str, bytes | str]) -> ChangeRecord:
    """Decode one stream entry; raises :class:`RecordError` when it cannot be."""
    sid = _text(stream_id)
    try:
        f = {_text(k): v for k, v in fields.items()}
        if _text(f["v"]) != "2":
            raise RecordError(f"record {sid}: v: unsupported record format {_text(f['v'])!r}")
        scraped_at = from_micros(int(f["scraped_at"]))
        present = tuple(field_to_key(x) for x in msgpack.unpackb(f["present"], raw=False) or ())
        flat = msgpack.unpackb(f["markets"], raw=True) or []
        if len(flat) % 3:
            raise RecordError(f"record {sid}: markets: expected triples, got {len(flat)} items")
        changes = []
        for i in range(0, len(flat), 3):
            key = field_to_key(flat[i])
            flags = _text(flat[i + 2])
            unavailable = "u" in flags
            market = decode_market(flat[i + 1], scraped_at if unavailable else None)
            if market.key != key:
                raise RecordError(f"record {sid}: market {key}: payload is for {market.key}")
            changes.append(
                MarketChange(
                    key=key,
                    market=market,
                    odds_changed="n" in flags or "c" in flags,
                    is_new="n" in flags,
                    became_available="a" in flags,
                    became_unavailable=unavailable,
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
            present=present,
            changes=tuple(changes),
            rejected=_rejections(sid, f.get("rejected")),
            kickoff=kickoff,
        )
    except RecordError:
        raise
    except Exception as exc:  # any malformed field: the record goes to the dead-letter stream
        raise RecordError(f"record {sid}: cannot decode: {type(exc).__name__}: {exc}") from exc
