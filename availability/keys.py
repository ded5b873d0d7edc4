"""The whole Redis key schema, in one place.

Every key of an event, and the change stream its scrapes append to, share one
hash tag ``{<prefix>:<shard>}`` so each Lua script touches a single Redis
Cluster slot. The shard is ``event_id % shards``; the shard count is fixed for
a deployment and recorded in ``<prefix>:config``.

As ``redis-cli --scan --pattern '{av:*'`` prints them (prefix ``av``, 16 shards,
event 1234 at BetPawa, shard 1234 % 16 = 2)::

    {av:2}:ev:1234:betpawa:markets      hash  field "18@2.5" -> canonical msgpack of the market
    {av:2}:ev:1234:betpawa:unavailable  hash  field "18@2.5" -> "2026-11-28T12:00:00.000000Z"
    {av:2}:ev:1234:betpawa:meta         hash  last_scraped_at, captured_at, last_confirmed_at, last_complete_us, counts,
                                              applied_id (stream id of the last applied record)
    {av:2}:snapshots                    zset  "1234:betpawa", score 0 (a lexical index of the shard)
    {av:2}:alerts                       zset  "1234:betpawa" while it has unavailable markets, score its kickoff (µs)
    {av:2}:changes                      stream, one record per applied scrape (read by the flushers)
    {av:2}:dead                         stream, records the flusher could never write
    {av:2}:ready                        string, set by warm-up: the shard's cache is not cold
    av:config                           hash  shards, schema (stored format, keys.SCHEMA_VERSION)
    av:subscribers                      hash  registered subscriber group -> max_lag (availability.subscribe)

A market field is ``<betpawa_market_id>@<line>``: ``1@_`` is a market without
a line (1X2), ``18@0.0`` a handicap of zero, ``18@2.5`` Over/Under 2.5.

Event ids are non-zero integers with ``|id| <= 2**53 - 1`` (exact in a Lua
double and in a bigint): competitor-only events get negative ids. A negative
event's shard is still ``event_id % shards`` (Python's ``%`` is never
negative: event -5 with 16 shards is in shard 11), and its keys read
``{av:11}:ev:-5:sportybet:markets``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from availability.errors import ConfigurationError, InvalidRead, InvalidScrape

DEFAULT_PREFIX = "av"
DEFAULT_SHARDS = 16
# Format of the stored data, recorded in <prefix>:config on first use. "2": market
# payloads are positional msgpack arrays (model.encode_market); "1" stored maps with
# field names, which this version cannot read: such a deployment is refused.
SCHEMA_VERSION = "2"

# The fields of a snapshot's meta hash (``...:meta``), declared once: what
# apply_scrape.lua writes (and warm_snapshot.lua restores, from rules.meta_hash).
# A test checks that the two Lua scripts use exactly these names.
META_SNAPSHOT_FIELDS = (
    "event_id",
    "bookmaker",
    "last_scraped_us",  # the staleness clock, in microseconds
    "last_scraped_at",
    "markets",  # count
    "unavailable",  # count
    "captured_at",  # newest scrape that changed the odds
    "last_confirmed_at",  # newest scrape that listed markets
    "last_complete_us",  # newest complete scrape (µs): a later record's prev_complete
    "removed_at",  # first time the event was seen gone from the listing
    "kickoff_us",  # the event's kickoff in microseconds, when a scrape gave one
)
# Kept by apply_scrape.lua only: the expiry a later scrape keeps, what makes an exact
# re-delivery of the last applied scrape ``duplicate``, and ``applied_id``, the stream id of
# the last applied record, which names the state that application left (a worker that
# remembers it may send the script's short form; scrape.SnapshotMemory). Warm-up restores
# none of them.
META_EXPIRY_FIELD = "expire_at_ms"
REDELIVERY_FIELDS = ("last_digest", "last_reply", "applied_id")
META_FIELDS = frozenset((*META_SNAPSHOT_FIELDS, META_EXPIRY_FIELD, *REDELIVERY_FIELDS))

# fullmatch, not match with "$": "$" also matches before a trailing newline
_PREFIX_RE = re.compile(r"[A-Za-z0-9_.\-]{1,32}")
_BOOKMAKER_RE = re.compile(r"[a-z0-9][a-z0-9_\-]{0,39}")
MAX_EVENT_ID = 2**53 - 1  # exact in a Lua double and in a bigint


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:80]}..."


def validate_event_id(event_id: object, *, reading: bool = False) -> int:
    """A non-zero integer with ``|event_id| <= 2**53 - 1`` (negative for competitor-only events).

    Raises :class:`InvalidScrape`, or :class:`InvalidRead` when ``reading``."""
    if (isinstance(event_id, bool) or not isinstance(event_id, int) or event_id == 0
            or not -MAX_EVENT_ID <= event_id <= MAX_EVENT_ID):
        raise (InvalidRead if reading else InvalidScrape)(
            f"event_id: expected a non-zero integer from -(2**53 - 1) to 2**53 - 1, got {_shown(event_id)}"
        )
    return event_id


def validate_bookmaker(bookmaker: object, *, reading: bool = False) -> str:
    """A slug of 1 to 40 characters: a-z, 0-9, ``_``, ``-``, starting with a letter or digit.

    Raises :class:`InvalidScrape`, or :class:`InvalidRead` when ``reading``."""
    if not isinstance(bookmaker, str) or not _BOOKMAKER_RE.fullmatch(bookmaker):
        raise (InvalidRead if reading else InvalidScrape)(
            f"bookmaker: expected a lowercase slug like 'betpawa' (a-z, 0-9, '_', '-', at most 40), "
            f"got {_shown(bookmaker)}"
        )
    return bookmaker


@dataclass(frozen=True)
class SnapshotKeys:
    markets: str
    unavailable: str
    meta: str
    snapshots: str
    changes: str
    ready: str
    alerts: str

    def as_list(self) -> list[str]:
        """KEYS for the apply script, in the order its header documents."""
        return [self.markets, self.unavailable, self.meta, self.snapshots, self.changes, self.ready, self.alerts]


@dataclass(frozen=True)
class KeySchema:
    prefix: str = DEFAULT_PREFIX
    shards: int = DEFAULT_SHARDS

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str) or not _PREFIX_RE.fullmatch(self.prefix):
            raise ConfigurationError(
                f"key prefix: expected 1-32 characters of A-Z a-z 0-9 _ . -, got {self.prefix!r}"
            )
        if isinstance(self.shards, bool) or not isinstance(self.shards, int) or not 1 <= self.shards <= 4096:
            raise ConfigurationError(f"shards: expected an integer from 1 to 4096, got {self.shards!r}")

    # -- shards
    def shard_of(self, event_id: int) -> int:
        return event_id % self.shards

    def tag(self, shard: int) -> str:
        return f"{{{self.prefix}:{shard}}}"

    def all_shards(self) -> range:
        return range(self.shards)

    # -- per shard
    def changes(self, shard: int) -> str:
        return f"{self.tag(shard)}:changes"

    def dead_letters(self, shard: int) -> str:
        return f"{self.tag(shard)}:dead"

    def snapshots(self, shard: int) -> str:
        return f"{self.tag(shard)}:snapshots"

    def ready(self, shard: int) -> str:
        return f"{self.tag(shard)}:ready"

    def alerts(self, shard: int) -> str:
        """Snapshots with unavailable markets, scored by kickoff (kept by apply_scrape.lua)."""
        return f"{self.tag(shard)}:alerts"

    # -- per (event, bookmaker)
    def _base(self, event_id: int, bookmaker: str) -> str:
        return f"{self.tag(self.shard_of(event_id))}:ev:{event_id}:{bookmaker}"

    def markets(self, event_id: int, bookmaker: str) -> str:
        return f"{self._base(event_id, bookmaker)}:markets"

    def unavailable(self, event_id: int, bookmaker: str) -> str:
        return f"{self._base(event_id, bookmaker)}:unavailable"

    def meta(self, event_id: int, bookmaker: str) -> str:
        return f"{self._base(event_id, bookmaker)}:meta"

    def snapshot(self, event_id: int, bookmaker: str) -> SnapshotKeys:
        shard = self.shard_of(event_id)
        return SnapshotKeys(
            markets=self.markets(event_id, bookmaker),
            unavailable=self.unavailable(event_id, bookmaker),
            meta=self.meta(event_id, bookmaker),
            snapshots=self.snapshots(shard),
            changes=self.changes(shard),
            ready=self.ready(shard),
            alerts=self.alerts(shard),
        )

    @staticmethod
    def snapshot_member(event_id: int, bookmaker: str) -> str:
        """Member of the shard's ``snapshots`` index for one (event, bookmaker)."""
        return f"{event_id}:{bookmaker}"

    @staticmethod
    def parse_snapshot_member(member: str | bytes) -> tuple[int, str]:
        """Inverse of :meth:`snapshot_member` (``"-5:sportybet"`` -> ``(-5, "sportybet")``)."""
        if isinstance(member, bytes):
            member = member.decode()
        event, _, bookmaker = member.partition(":")
        return int(event), bookmaker

    # -- deployment-wide
    def config(self) -> str:
        return f"{self.prefix}:config"

    def subscribers(self) -> str:
        """Registered subscriber groups (group -> max_lag): the flushers' trimming waits for them."""
        return f"{self.prefix}:subscribers"

    def scan_pattern(self) -> str:
        """Matches every per-shard key of this deployment (``redis-cli --scan --pattern``)."""
        return f"{{{self.prefix}:*"
