"""What a scrape is and what applying it answered (:class:`Scrape`,
:class:`ScrapeOutcome`), the script's prepared arguments, their digest (what makes an
exact re-delivery recognisable), a worker's memory of the snapshots it applied (what
lets it send the script's short form) and the decoding of a snapshot's hashes."""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from collections.abc import Sequence
from typing import Any

import msgpack

from availability.logs import get_logger
from availability.model import (
    CachedMarket,
    CachedSnapshot,
    MarketKey,
    RejectedMarket,
    decode_market,
    encode_checked,
    from_micros,
    key_sort_order,
    key_to_field,
    parse_ts,
)


log = get_logger("availability.cache")


APPLIED = "applied"
DUPLICATE = "duplicate"
STALE = "stale"
IGNORED_EMPTY = "ignored_empty"
INVALID = "invalid"
COLD = "cold"
ERROR = "error"
RESEND = "resend"  # the script's reply to a short form it cannot apply (never an outcome)

# Snapshots a MarketCache remembers (SnapshotMemory): a production cycle is ~3,900
# (1,300 events x 3 bookmakers), spread over the workers.
DEFAULT_MEMORY = 4096


def _is_resend(reply: Any) -> bool:
    return isinstance(reply, list) and len(reply) == 1 and reply[0] in (b"resend", RESEND)


def _encode(market: CachedMarket, where: str) -> bytes:
    """:func:`availability.model.encode_checked` (kept under its old name)."""
    return encode_checked(market, where)


# Longest validation message a rejection carries into the change record.
_MAX_REJECTION_MESSAGE = 1000
# Rejections named one by one in the log line of one scrape (all are counted).
_LOGGED_REJECTIONS = 10


def _rejections_blob(rejected: Sequence[RejectedMarket]) -> bytes:
    """The ``rejected`` field of the change record: msgpack list of
    ``[market field or nil, field, value, reason, message]`` (see records.py)."""
    if not rejected:
        return b""
    return msgpack.packb(
        [[None if r.key is None else key_to_field(r.key), r.field, r.value, r.reason,
          r.message[:_MAX_REJECTION_MESSAGE]] for r in rejected],
        use_bin_type=True,
    )


@dataclass(frozen=True)
class Scrape:
    """One scrape of one event at one bookmaker, as handed to :meth:`MarketCache.apply_batch`.

    ``complete=False`` marks a partial page: its markets are stored, nothing is
    stamped (a market whose key cannot be read makes a scrape partial too). An empty ``markets`` list stamps nothing unless ``confirmed_empty``
    says the event really has no markets left (a flaky endpoint returning
    ``[]`` must not wipe an event).
    """

    event_id: int
    bookmaker: str
    markets: Sequence[Any]
    scraped_at: datetime
    complete: bool = True
    confirmed_empty: bool = False
    expires_at: datetime | None = None
    kickoff: datetime | None = None  # the event's start; None: not known (kept as stored)


@dataclass(frozen=True)
class ScrapeOutcome:
    """What one scrape did.

    ``status`` is ``applied``, ``duplicate`` (this exact scrape -- same event,
    bookmaker, time and content -- was already the last one applied, e.g. a
    call retried after its reply was lost: the outcome is what that
    application did, transitions included, and nothing changed now),
    ``stale`` (not newer than the last applied
    scrape: nothing changed), ``ignored_empty`` (an empty list without
    ``confirmed_empty``: nothing changed), ``invalid`` or ``error`` (see
    ``error``; nothing written), or ``cold`` (the shard must be warmed first).

    ``rejected`` lists the markets of the scrape that were quarantined (see
    :class:`~availability.model.RejectedMarket`): not stored, but a market
    whose key could be read counted as present (never stamped, its last good
    payload kept). ``partial`` is true when the scrape was applied without
    stamping anything: the caller said ``complete=False``, or a rejected
    market's key could not be read (a ``rejected`` entry with ``key=None``).
    """

    event_id: int | None
    bookmaker: str | None
    scraped_at: datetime | None
    status: str
    became_unavailable: tuple[MarketKey, ...] = ()
    became_available: tuple[MarketKey, ...] = ()
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    stream_id: str | None = None
    last_scraped_at: datetime | None = None
    error: Exception | None = field(default=None, compare=False)
    rejected: tuple[RejectedMarket, ...] = ()
    partial: bool = False

    @property
    def applied(self) -> bool:
        return self.status == APPLIED

    @property
    def stale(self) -> bool:
        return self.status == STALE

    @property
    def duplicate(self) -> bool:
        return self.status == DUPLICATE

    @property
    def ok(self) -> bool:
        return self.status in (APPLIED, DUPLICATE, STALE, IGNORED_EMPTY)

    @property
    def changed_anything(self) -> bool:
        return bool(self.new or self.changed or self.became_unavailable or self.became_available)


@dataclass(frozen=True)
class _Prepared:
    """A validated scrape ready for the script, or the outcome it already has."""

    keys: list[str] | None
    args: list[Any] | None
    event_id: int | None
    bookmaker: str | None
    scraped_at: datetime | None
    outcome: ScrapeOutcome | None = None
    rejected: tuple[RejectedMarket, ...] = ()
    partial: bool = False
    # a complete scrape without held markets: its application leaves a snapshot whose
    # stored markets the worker can know (SnapshotMemory), and it may go in the short form
    rememberable: bool = False


# ARGV positions of apply_scrape.lua's header
_N = 10  # n, the number of (key, payload) pairs sent
_FIRST = 11  # key_1


@dataclass(frozen=True)
class ShortForm:
    """What a short form was built from: the stored fields it did not list, and the
    remembered markets (field -> payload hash, or ``None``: payload not known)."""

    missing: list[str]
    known: dict[str, int | None]


class SnapshotMemory:
    """What a worker knows of the snapshots it applied last: bounded (LRU), never a
    source of a wrong result, only of a second round trip.

    After a complete scrape without held markets is applied, the snapshot's stored
    markets are exactly its markets (with the payloads the worker sent) plus the stored
    ones it did not list (their fields are in the reply; their payloads are unknown
    here), and the snapshot's meta ``applied_id`` is the reply's stream id. The next
    complete scrape of that snapshot then goes in apply_scrape.lua's short form: the
    ``applied_id`` remembered, the markets whose payload differs from the remembered one
    (or is unknown), how many are listed, and the stored fields not listed. The script
    applies it only when ``applied_id`` is still that one (no other application since:
    another worker's scrape, a warm-up, an expiry), else it answers ``resend`` having
    written nothing and the worker sends the full form.

    A payload is remembered by Python's ``hash`` of its bytes (SipHash, 64 bits, keyed
    per process): a changed payload is taken for the remembered one only if the two
    collide, about 2**-64 per market. ``capacity`` snapshots at most (0: none, every
    call in the full form); each costs ~130 bytes per market.
    """

    __slots__ = ("capacity", "_entries")

    def __init__(self, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ValueError(f"memory: expected a number of snapshots >= 0, got {capacity!r}")
        self.capacity = capacity
        self._entries: OrderedDict[tuple[int, str], tuple[bytes, dict[str, int | None]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def short_args(self, prepared: _Prepared) -> tuple[list[Any], ShortForm] | None:
        """The short form of a prepared scrape's arguments, and what :meth:`update` needs
        to know of it, or ``None`` (send the full form)."""
        if not prepared.rememberable or not self.capacity:
            return None
        name = (prepared.event_id, prepared.bookmaker)
        entry = self._entries.get(name)  # type: ignore[arg-type]
        if entry is None:
            return None
        self._entries.move_to_end(name)  # type: ignore[arg-type]
        base_id, known = entry
        args = prepared.args
        assert args is not None
        n = int(args[_N])
        fields = args[_FIRST : _FIRST + 2 * n : 2]
        payloads = args[_FIRST + 1 : _FIRST + 2 * n : 2]
        sent: list[Any] = []
        get = known.get
        for name_, payload in zip(fields, payloads):
            if get(name_) != hash(payload):
                sent.append(name_)
                sent.append(payload)
        listed = set(fields)
        missing = [f for f in known if f not in listed]
        return [*args[:_N], str(len(sent) // 2), *sent, args[-1], base_id, str(n),
                msgpack.packb(missing, use_bin_type=True)], ShortForm(missing, known)

    def update(self, prepared: _Prepared, reply: Any, short: ShortForm | None = None) -> None:
        """Remember what an applied complete scrape left, forget the snapshot otherwise.

        ``short``: what the short form was built from (``None``: the full form was sent,
        and its reply lists the stored fields not listed, payloads unknown). A short form
        was applied on the very state it was built from, so the markets it did not list
        keep the payloads remembered then."""
        if not self.capacity or prepared.event_id is None or prepared.bookmaker is None:
            return
        name = (prepared.event_id, prepared.bookmaker)
        status = reply[0] if isinstance(reply, list) and reply else None
        if (not prepared.rememberable or status not in (b"applied", APPLIED) or len(reply) < 7 or not reply[6]
                or (short is None and len(reply) < 8)):
            self._entries.pop(name, None)
            return
        args = prepared.args
        assert args is not None
        n = int(args[_N])
        known: dict[str, int | None] = dict(zip(args[_FIRST : _FIRST + 2 * n : 2],
                                               map(hash, args[_FIRST + 1 : _FIRST + 2 * n : 2])))
        if short is None:
            for f in reply[7]:
                known.setdefault(f.decode() if isinstance(f, bytes) else f, None)
        else:
            for f in short.missing:
                known[f] = short.known.get(f)
        base_id = reply[6]
        self._entries[name] = (base_id.encode() if isinstance(base_id, str) else base_id, known)
        self._entries.move_to_end(name)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def forget(self) -> None:
        """Forget every snapshot (the next call of each goes in the full form)."""
        self._entries.clear()


def _digest(head: list[Any], pairs: list[Any]) -> bytes:
    """A digest of a scrape's script arguments: equal for an exact re-delivery only.

    Each part length-prefixed (4 bytes, big-endian), hashed in one call over the
    joined bytes rather than two ``update`` calls per part (the hot path hashes
    two parts per market): the same digest as :func:`_digest_reference`."""
    chunks: list[bytes] = []
    add = chunks.append
    for part in (*head, *pairs):
        data = part.encode() if isinstance(part, str) else part
        add(_LENGTH(len(data)))
        add(data)
    return hashlib.blake2b(b"".join(chunks), digest_size=16).hexdigest().encode()


_LENGTH = struct.Struct(">I").pack


def _digest_fields(head: list[Any], fields: list[str], payloads: list[bytes]) -> bytes:
    """``_digest(head, pairs)`` for the pairs ``[fields[0], payloads[0], fields[1], ...]``
    (what the script call carries), with the per-market work in C (``map``, slice
    assignment) instead of a Python loop over every part: the same digest as
    :func:`_digest_reference` of the interleaved pairs (``tests/test_fast_path.py``)."""
    if len(fields) != len(payloads):
        raise ValueError(f"{len(fields)} fields for {len(payloads)} payloads")
    encoded = list(map(str.encode, fields))
    chunks: list[bytes] = [b""] * (4 * len(encoded))
    chunks[0::4] = map(_LENGTH, map(len, encoded))
    chunks[1::4] = encoded
    chunks[2::4] = map(_LENGTH, map(len, payloads))
    chunks[3::4] = payloads
    h = hashlib.blake2b(digest_size=16)
    for part in head:
        data = part.encode() if isinstance(part, str) else part
        h.update(_LENGTH(len(data)))
        h.update(data)
    h.update(b"".join(chunks))
    return h.hexdigest().encode()


def _digest_reference(head: list[Any], pairs: list[Any]) -> bytes:
    """The digest as first written, kept as the reference a test compares :func:`_digest` with."""
    h = hashlib.blake2b(digest_size=16)
    for part in (*head, *pairs):
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(4, "big"))
        h.update(data)
    return h.hexdigest().encode()


def _digest_fields_reference(head: list[Any], fields: list[str], payloads: list[bytes]) -> bytes:
    """:func:`_digest_fields` as the reference computes it: :func:`_digest_reference` of the interleaved pairs."""
    return _digest_reference(head, [part for pair in zip(fields, payloads, strict=True) for part in pair])


def snapshot_from_hashes(
    event_id: int,
    bookmaker: str,
    meta: dict,
    markets: dict,
    stamps: dict,
    undecodable: list[tuple[int, str, str, str]] | None = None,
) -> CachedSnapshot:
    """Decode the three hashes of one (event, bookmaker) into a snapshot.

    A stored entry that does not decode as a market (only a raw write around the
    script can leave one) is left out, logged by key and appended to
    ``undecodable`` as ``(event_id, bookmaker, field, error)``; the rest decodes."""

    def ts(name: bytes) -> datetime | None:
        value = meta.get(name)
        return parse_ts(value) if value else None

    decoded: list[CachedMarket] = []
    for field_name, payload in markets.items():
        stamp = stamps.get(field_name)
        try:
            decoded.append(decode_market(payload, parse_ts(stamp) if stamp else None))
        except Exception as exc:  # msgpack, shape or timestamp errors: report it, read the rest
            name = field_name.decode(errors="replace") if isinstance(field_name, bytes) else str(field_name)
            error = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("cache.undecodable_market", event_id=event_id, bookmaker=bookmaker, field=name, error=error)
            if undecodable is not None:
                undecodable.append((event_id, bookmaker, name, error))
    decoded.sort(key=lambda m: key_sort_order(m.key))
    return CachedSnapshot(
        event_id=event_id,
        bookmaker=bookmaker,
        captured_at=ts(b"captured_at"),
        last_confirmed_at=ts(b"last_confirmed_at"),
        markets=tuple(decoded),
        last_scraped_at=ts(b"last_scraped_at"),
        removed_at=ts(b"removed_at"),
        last_complete_at=from_micros(meta[b"last_complete_us"]) if meta.get(b"last_complete_us") else None,
    )
