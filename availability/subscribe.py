"""Availability changes as they happen: an async iterator over the change streams.

An alerting service or a websocket push follows the changes without polling::

    async with subscribe(cache, group="alerting") as changes:
        async for change in changes:
            await push(change.event_id, change.bookmaker, change.key, change.transition, change.at)
            await changes.ack(change)

Each :class:`AvailabilityChange` is one market of one event at one bookmaker
becoming unavailable or available again, at the scrape time that saw it, with
the market's name and the event's kickoff. They come from the same change
records the flushers write to PostgreSQL (one record per applied scrape), read
through a consumer group of the subscriber's own on every shard stream.

**At least once.** A record is acknowledged (``XACK``) once every change it
holds was acknowledged with :meth:`Subscription.ack` (``auto_ack=True``: when
the next change is asked for, i.e. after the loop body ran). Records holding
no transition (odds changes, confirmations) are acknowledged as they are read.
A consumer that stops before acknowledging gets its changes again when it
starts under the same ``consumer`` name (its pending records are read first),
and a consumer that died is taken over by the group's other consumers after
``claim_idle_ms`` (``XAUTOCLAIM``). Changes of one (event, bookmaker) come in
stream order; a redelivery can repeat a change: use ``(stream_id, key,
transition)`` to recognise it.

**Bounded.** The group is *registered* in ``<prefix>:subscribers`` (group ->
``max_lag``). The flushers' trimming keeps every entry a registered group has
not acknowledged -- as long as the group's backlog on that shard (records
pending plus not yet delivered) is at most ``max_lag``. Beyond that the group
is *lagging*: reported by ``availability stats`` and by the metrics
``availability_subscriber_backlog_records{group,shard}`` and
``availability_subscriber_lagging{group,shard}``, and trimming proceeds as if
it did not exist. The subscriber then misses what is trimmed: pending records
that were trimmed come back empty and are acknowledged and counted in
:attr:`Subscription.missed`; records never delivered are simply gone, and
reading continues at the oldest record still there. Redis therefore never
grows without limit because of a subscriber that stopped reading.
:meth:`Subscription.unregister` removes the group for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import Gauge
from redis.exceptions import ResponseError

from availability import metrics
from availability.keys import DEFAULT_PREFIX, DEFAULT_SHARDS, KeySchema
from availability.logs import get_logger
from availability.model import MarketKey, key_to_field
from availability.records import RecordError, decode_record

__all__ = [
    "AvailabilityChange",
    "Subscription",
    "subscribe",
    "DEFAULT_MAX_LAG",
    "registered_groups",
    "holds_trimming",
    "subscriber_report",
    "subscribers_key",
]

log = get_logger("availability.subscribe")

DEFAULT_MAX_LAG = 100_000  # records per shard stream a registered group may fall behind
BECAME_UNAVAILABLE = "became_unavailable"
BECAME_AVAILABLE = "became_available"

SUBSCRIBER_BACKLOG = Gauge(
    "availability_subscriber_backlog_records",
    "Records of a shard stream a registered subscriber group has not acknowledged (pending + not delivered).",
    ["group", "shard"],
    registry=metrics.REGISTRY,
)
SUBSCRIBER_LAGGING = Gauge(
    "availability_subscriber_lagging",
    "1 while a registered subscriber group is more than its max_lag behind on a shard: trimming ignores it.",
    ["group", "shard"],
    registry=metrics.REGISTRY,
)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def subscribers_key(keys: KeySchema) -> str:
    """``<prefix>:subscribers``: hash group -> max_lag of the registered subscriber groups."""
    return keys.subscribers()


@dataclass(frozen=True)
class AvailabilityChange:
    """One market becoming unavailable (``became_unavailable``) or available again."""

    event_id: int
    bookmaker: str
    key: MarketKey
    market_name: str
    transition: str
    at: datetime  # the scrape that saw it
    kickoff: datetime | None
    stream_id: str
    shard: int
    _index: int = field(default=0, compare=False, repr=False)  # position in its record

    @property
    def became_unavailable(self) -> bool:
        return self.transition == BECAME_UNAVAILABLE

    @property
    def field(self) -> str:
        """``18@2.5``: the market key as the Redis hashes spell it."""
        return key_to_field(self.key)

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "bookmaker": self.bookmaker,
            "market": self.field,
            "betpawa_market_id": self.key.betpawa_market_id,
            "line": self.key.line,
            "market_name": self.market_name,
            "transition": self.transition,
            "at": self.at.isoformat(),
            "kickoff": self.kickoff.isoformat() if self.kickoff else None,
            "stream_id": self.stream_id,
        }


def changes_of(stream_id: str, shard: int, fields: dict) -> list[AvailabilityChange]:
    """The transitions of one change record, in record order."""
    record = decode_record(stream_id, fields)
    out: list[AvailabilityChange] = []
    for change in record.changes:
        for flag, transition in ((change.became_unavailable, BECAME_UNAVAILABLE),
                                 (change.became_available, BECAME_AVAILABLE)):
            if flag:
                out.append(AvailabilityChange(
                    record.event_id, record.bookmaker, change.key, change.market.betpawa_market_name,
                    transition, record.scraped_at, record.kickoff, record.stream_id, shard, len(out),
                ))
    return out


# ---------------------------------------------------------------- the flushers' side


async def registered_groups(client: Any, keys: KeySchema) -> dict[str, int]:
    """Registered subscriber groups and their ``max_lag``."""
    raw = await client.hgetall(subscribers_key(keys))
    return {_text(k): int(v) for k, v in raw.items()}


def group_backlog(group: dict[str, Any], stream_length: int) -> int:
    """Records a group has not acknowledged: pending, plus not yet delivered
    (``lag``; unknown after entries were deleted mid-stream: the stream length then)."""
    lag = group.get("lag")
    return int(group.get("pending") or 0) + (stream_length if lag is None else int(lag))


def holds_trimming(group: dict[str, Any], registered: dict[str, int], shard: int, stream_length: int) -> bool:
    """Whether trimming must keep what this group has not acknowledged.

    Every group does (the flushers', any unregistered one), except a registered
    subscriber group more than its ``max_lag`` behind: that one is reported
    (gauges, a warning) and trimmed past."""
    name = _text(group.get("name", ""))
    if name not in registered:
        return True
    backlog = group_backlog(group, stream_length)
    lagging = backlog > registered[name]
    SUBSCRIBER_BACKLOG.labels(name, str(shard)).set(backlog)
    SUBSCRIBER_LAGGING.labels(name, str(shard)).set(1 if lagging else 0)
    if lagging:
        log.warning("subscriber.lagging", group=name, shard=shard, backlog=backlog, max_lag=registered[name],
                    hint="trimming no longer waits for this group: it misses what is trimmed")
    return not lagging


async def subscriber_report(client: Any, keys: KeySchema) -> dict[str, dict[str, Any]]:
    """Per registered group: ``max_lag``, total backlog, and the shards where it is lagging."""
    registered = await registered_groups(client, keys)
    report = {g: {"max_lag": m, "backlog": 0, "lagging_shards": [], "missing_shards": []}
              for g, m in sorted(registered.items())}
    if not registered:
        return report
    for shard in keys.all_shards():
        stream = keys.changes(shard)
        try:
            length = int(await client.xlen(stream))
            groups = {_text(g["name"]): g for g in await client.xinfo_groups(stream)}
        except ResponseError:
            groups, length = {}, 0
        for name, entry in report.items():
            group = groups.get(name)
            if group is None:
                entry["missing_shards"].append(shard)
                continue
            backlog = group_backlog(group, length)
            entry["backlog"] += backlog
            if backlog > entry["max_lag"]:
                entry["lagging_shards"].append(shard)
    return report


# ---------------------------------------------------------------- the subscriber


class Subscription:
    """An async iterator of :class:`AvailabilityChange` through consumer group ``group``.

    ``redis``: a :class:`~availability.cache.MarketCache` or a ``redis.asyncio``
    client (``decode_responses`` off). ``start``: where a group created now
    begins, ``"$"`` (changes from now on, the default) or ``"0"`` (everything
    still in the streams); an existing group keeps its position. Run several
    processes with one ``group`` and distinct ``consumer`` names to share the
    work; give the same ``consumer`` name to a restarted process to get its
    unacknowledged changes back first.
    """

    def __init__(
        self,
        redis: Any,
        group: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        shards: int = DEFAULT_SHARDS,
        consumer: str | None = None,
        start: str = "$",
        max_lag: int = DEFAULT_MAX_LAG,
        auto_ack: bool = False,
        block_ms: int = 1000,
        count: int = 100,
        claim_idle_ms: int = 60_000,
    ) -> None:
        keys = getattr(redis, "keys", None)
        if isinstance(keys, KeySchema):
            self.client, self.keys = redis.client, keys
        else:
            self.client, self.keys = redis, KeySchema(prefix, shards)
        if not isinstance(group, str) or not group or group == "flushers" or any(c.isspace() for c in group):
            raise ValueError(f"group: expected a name without spaces other than 'flushers', got {group!r}")
        if start not in ("$", "0"):
            raise ValueError(f"start: expected '$' (from now on) or '0' (everything kept), got {start!r}")
        if isinstance(max_lag, bool) or not isinstance(max_lag, int) or max_lag < 1:
            raise ValueError(f"max_lag: expected a positive integer, got {max_lag!r}")
        self.group = group
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.start = start
        self.max_lag = max_lag
        self.auto_ack = auto_ack
        self.block_ms = block_ms
        self.count = count
        self.claim_idle_ms = claim_idle_ms
        self.missed = 0  # pending records trimmed away before they were read (the group was lagging)
        self._streams = {self.keys.changes(s): s for s in self.keys.all_shards()}
        self._buffer: deque[AvailabilityChange] = deque()
        self._outstanding: dict[tuple[str, str], set[int]] = {}  # record -> indexes of changes not yet acked
        self._last: AvailabilityChange | None = None
        self._registered = False
        self._own_pending_read = False
        self._pending_from = {s: "0" for s in self._streams}
        self._next_claim = 0.0
        self._is_cluster = self.client.__class__.__name__ == "RedisCluster"

    async def __aenter__(self) -> "Subscription":
        await self.register()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.auto_ack and self._last is not None and exc[0] is None:
            await self.ack(self._last)
        self._last = None

    def __aiter__(self) -> "Subscription":
        return self

    # ------------------------------------------------------------ groups

    async def register(self) -> None:
        """Create the group on every shard stream and register it for the flushers' trimming."""
        if self._registered:
            return
        for stream in self._streams:
            try:
                await self.client.xgroup_create(stream, self.group, id=self.start, mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        await self.client.hset(subscribers_key(self.keys), self.group, str(self.max_lag))
        self._registered = True

    async def unregister(self) -> None:
        """Remove the group from every stream and from the registry (its backlog is dropped)."""
        for stream in self._streams:
            with contextlib.suppress(ResponseError):
                await self.client.xgroup_destroy(stream, self.group)
        await self.client.hdel(subscribers_key(self.keys), self.group)
        self._registered = False

    # ------------------------------------------------------------ acknowledging

    async def ack(self, change: AvailabilityChange) -> None:
        """Acknowledge one change; its record is acknowledged once all of its changes are."""
        stream = self.keys.changes(change.shard)
        left = self._outstanding.get((stream, change.stream_id))
        if left is None:
            return  # already acknowledged (or not delivered by this subscription)
        left.discard(change._index)
        if not left:
            del self._outstanding[(stream, change.stream_id)]
            await self.client.xack(stream, self.group, change.stream_id)

    # ------------------------------------------------------------ reading

    async def __anext__(self) -> AvailabilityChange:
        if self.auto_ack and self._last is not None:
            await self.ack(self._last)
            self._last = None
        await self.register()
        while not self._buffer:
            await self._fill()
        change = self._buffer.popleft()
        self._last = change
        return change

    async def _fill(self) -> None:
        """Read the next records: our own pending ones first (once), then idle
        ones of dead consumers (now and then), then new ones (blocking)."""
        if not self._own_pending_read:
            entries = await self._read(self._pending_from, None)
            for stream, entry_id, _ in entries:  # a cursor: the same pending entries are not read twice
                self._pending_from[stream] = entry_id
            if not entries:
                self._own_pending_read = True
            else:
                await self._take(entries)
                return
        loop = asyncio.get_running_loop()
        if loop.time() >= self._next_claim:
            self._next_claim = loop.time() + max(self.claim_idle_ms / 2000, 0.1)
            if await self._claim():
                return
        await self._take(await self._read({s: ">" for s in self._streams}, self.block_ms))

    async def _read(self, ids: dict[str, str], block_ms: int | None) -> list[tuple[str, str, dict | None]]:
        """``XREADGROUP`` from every shard: ``>`` new records, an id: our own pending ones after it."""
        try:
            if self._is_cluster:  # one slot per call
                replies = []
                for stream, start in ids.items():
                    replies.append(await self.client.xreadgroup(self.group, self.consumer, {stream: start},
                                                                count=self.count))
                entries = [e for r in replies for e in self._entries(r)]
                if not entries and block_ms:
                    await asyncio.sleep(block_ms / 1000)
                return entries
            reply = await self.client.xreadgroup(self.group, self.consumer, ids, count=self.count, block=block_ms)
            return self._entries(reply)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            log.warning("subscriber.group_missing", group=self.group, hint="Redis lost its data; recreating")
            self._registered = False
            await self.register()
            return []

    @staticmethod
    def _entries(reply: Any) -> list[tuple[str, str, dict | None]]:
        out = []
        for stream, messages in (reply.items() if isinstance(reply, dict) else reply or []):
            if len(messages) == 1 and isinstance(messages[0], list):
                messages = messages[0]  # RESP3 wraps the entries once more
            for message_id, data in messages:
                out.append((_text(stream), _text(message_id), data or None))
        return out

    async def _claim(self) -> bool:
        """Take over records other consumers of the group left idle for ``claim_idle_ms``."""
        took = False
        for stream in self._streams:
            cursor = "0-0"
            while True:
                reply = await self.client.xautoclaim(stream, self.group, self.consumer, self.claim_idle_ms,
                                                     start_id=cursor, count=self.count)
                cursor = _text(reply[0])
                entries = [(stream, _text(m[0]), m[1] or None) for m in reply[1] if m and m[0] is not None]
                if entries:
                    took = True
                    await self._take(entries)
                if cursor == "0-0":
                    break
        return took

    async def _take(self, entries: list[tuple[str, str, dict | None]]) -> None:
        """Queue the changes of ``entries``; acknowledge at once those with nothing to deliver."""
        done: dict[str, list[str]] = {}
        for stream, entry_id, data in entries:
            if (stream, entry_id) in self._outstanding:
                continue  # already queued (a redelivery of what we hold)
            shard = self._streams[stream]
            changes: list[AvailabilityChange] = []
            if data is None:
                self.missed += 1  # trimmed while pending: the group was lagging
                log.warning("subscriber.missed", group=self.group, stream=stream, id=entry_id)
            else:
                try:
                    changes = changes_of(entry_id, shard, data)
                except RecordError as exc:  # the flushers dead-letter it; nothing to deliver here
                    log.error("subscriber.undecodable", group=self.group, stream=stream, id=entry_id,
                              error=str(exc)[:300])
            if changes:
                self._outstanding[(stream, entry_id)] = {c._index for c in changes}
                self._buffer.extend(changes)
            else:
                done.setdefault(stream, []).append(entry_id)
        for stream, ids in done.items():
            await self.client.xack(stream, self.group, *ids)


def subscribe(redis: Any, group: str, *, prefix: str = DEFAULT_PREFIX, shards: int = DEFAULT_SHARDS,
              **options: Any) -> Subscription:
    """Follow availability changes through consumer group ``group``; see :class:`Subscription`.

    ``async with subscribe(cache, group="alerting") as changes: async for change in changes: ...``
    (or iterate it directly: the group is registered on the first read)."""
    return Subscription(redis, group, prefix=prefix, shards=shards, **options)
