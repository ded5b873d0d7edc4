"""The shards' change streams, seen from a consumer group.

Every applied scrape leaves one record on its shard's stream
(``{av:2}:changes``, see :mod:`availability.records`). This module holds every
stream command the package sends there: reading through a consumer group
(``XREADGROUP``), taking over idle records (``XAUTOCLAIM``), acknowledging,
moving a record to the dead-letter stream, trimming below what every group has
acknowledged, and the backlog figures that ``availability stats`` and the
flusher's gauges report. It knows nothing of PostgreSQL.

On a Redis Cluster each shard's streams sit in their own slot, so a read goes
shard by shard, and a dead-letter move is a plain (non-transactional) pipeline
on one slot.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from availability import metrics, subscribe
from availability.keys import KeySchema

__all__ = [
    "GROUP",
    "REDIS_DOWN",
    "StreamEntry",
    "ChangeStreams",
    "backlog",
    "backoff_delay",
    "default_consumer_name",
]

GROUP = "flushers"
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


def backoff_delay(attempt: int, max_s: float) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): 50 ms doubling, at most ``max_s``.

    The one backoff schedule of the flusher, for Redis and PostgreSQL outages alike."""
    return min(max_s, 0.05 * 2 ** min(max(attempt, 0), 20))


def default_consumer_name() -> str:
    """``<host>-<pid>-<random>``: unique per process, readable in ``XINFO CONSUMERS``."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class StreamEntry:
    """One entry read from a shard's stream; ``fields`` is ``None`` when it was trimmed away."""

    stream: str
    shard: int
    id: str
    fields: dict | None
    generation: int = 0  # the warm-up fence generation read just before this entry was

    @property
    def millis(self) -> int:
        return int(self.id.split("-", 1)[0])


def _id_tuple(stream_id: str | bytes) -> tuple[int, int]:
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _by_stream(entries: Iterable[StreamEntry]) -> dict[str, list[str]]:
    by_stream: dict[str, list[str]] = {}
    for e in entries:
        by_stream.setdefault(e.stream, []).append(e.id)
    return by_stream


class ChangeStreams:
    """Every shard's change stream, read by ``consumer`` of ``group``.

    Each method is one attempt: retrying through outages is the caller's
    policy (the flusher retries for ever, with :func:`backoff_delay`)."""

    def __init__(self, client: Any, keys: KeySchema, group: str, consumer: str, batch_size: int) -> None:
        self.client = client
        self.keys = keys
        self.group = group
        self.consumer = consumer
        self.batch_size = batch_size
        self.streams = {keys.changes(s): s for s in keys.all_shards()}
        self.is_cluster = isinstance(client, RedisCluster)

    async def create_groups(self) -> None:
        """Create the group on every shard stream (``MKSTREAM``, from id 0)."""
        for stream in self.streams:
            try:
                await self.client.xgroup_create(stream, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def entries(self, reply: Any, generation: int) -> list[StreamEntry]:
        """The entries of an ``XREADGROUP``/``XAUTOCLAIM`` reply (RESP2 or RESP3)."""
        if not reply:
            return []
        out = []
        for stream, messages in reply.items() if isinstance(reply, dict) else reply:
            name = _text(stream)
            if len(messages) == 1 and isinstance(messages[0], list):
                messages = messages[0]  # RESP3 replies wrap the entries once more
            for message_id, data in messages:
                out.append(StreamEntry(name, self.streams[name], _text(message_id), data or None, generation))
        return out

    async def read(
        self, start: str, block_ms: int | None, generation: int, sleep: Callable[[float], Awaitable[None]]
    ) -> list[StreamEntry]:
        """``XREADGROUP`` from every shard: ``>`` new records, ``0`` our own pending ones.
        Raises ``ResponseError`` (``NOGROUP``) when Redis lost the group."""
        if self.is_cluster:  # one slot per call
            entries = []
            for stream in self.streams:
                reply = await self.client.xreadgroup(self.group, self.consumer, {stream: start}, count=self.batch_size)
                entries += self.entries(reply, generation)
            if not entries and block_ms:
                await sleep(block_ms / 1000)
            return entries
        reply = await self.client.xreadgroup(
            self.group,
            self.consumer,
            {stream: start for stream in self.streams},
            count=self.batch_size,
            block=block_ms,
        )
        return self.entries(reply, generation)

    async def claim(self, stream: str, cursor: str, idle_ms: int, generation: int) -> tuple[str, list[StreamEntry]]:
        """One ``XAUTOCLAIM`` step: records idle for ``idle_ms``; returns the next cursor
        (``0-0`` at the end). Entries trimmed away while pending come back without fields."""
        reply = await self.client.xautoclaim(
            stream, self.group, self.consumer, idle_ms, start_id=cursor, count=self.batch_size
        )
        entries = self.entries([(stream, [m for m in reply[1] if m and m[0] is not None])], generation)
        return _text(reply[0]), entries

    async def keep_claimed(self, entries: list[StreamEntry]) -> None:
        """Reset the idle time of records still being worked on (``XCLAIM`` to ourselves)."""
        for stream, ids in _by_stream(entries).items():
            await self.client.xclaim(stream, self.group, self.consumer, 0, ids, justid=True)

    async def ack(self, stream: str, ids: list[str]) -> Any:
        return await self.client.xack(stream, self.group, *ids)

    def by_stream(self, entries: Iterable[StreamEntry]) -> dict[str, list[str]]:
        return _by_stream(entries)

    async def deliveries(self, entry: StreamEntry) -> int:
        """How many times the record was delivered to a consumer (XPENDING), at least 1."""
        try:
            pending = await self.client.xpending_range(entry.stream, self.group, entry.id, entry.id, 1)
            return max(1, int(pending[0]["times_delivered"])) if pending else 1
        except Exception:
            return 1

    async def dead_letter_fields(self, entry: StreamEntry, exc: Exception) -> dict[Any, Any]:
        """The dead-letter entry: the record's own fields plus why and where it failed."""
        data: dict[Any, Any] = dict(entry.fields or {})
        data.update(
            {
                b"error": f"{type(exc).__name__}: {exc}"[:2000],
                b"attempts": str(await self.deliveries(entry)),
                b"source_stream": entry.stream,
                b"source_id": entry.id,
                b"consumer": self.consumer,
                b"failed_at_ms": str(int(time.time() * 1000)),
            }
        )
        return data

    async def move_to_dead_letters(self, entry: StreamEntry, data: dict[Any, Any]) -> Any:
        """``XADD`` to the shard's dead-letter stream and ``XACK``, in one transaction
        (one pipeline on a cluster: both keys share the shard's slot)."""
        pipe = self.client.pipeline(transaction=not self.is_cluster)
        pipe.xadd(self.keys.dead_letters(entry.shard), data)
        pipe.xack(entry.stream, self.group, entry.id)
        return await pipe.execute()

    async def remove_consumer_if_idle(self) -> int:
        """Delete our consumer from every shard's group where it holds nothing pending
        (``XGROUP DELCONSUMER``); returns how many were removed."""
        removed = 0
        for stream in self.streams:
            try:
                consumers = await self.client.xinfo_consumers(stream, self.group)
            except ResponseError:  # no stream or no group
                continue
            for c in consumers:
                c = {_text(k): v for k, v in c.items()}
                if _text(c.get("name", b"")) == self.consumer and not int(c.get("pending") or 0):
                    await self.client.xgroup_delconsumer(stream, self.group, self.consumer)
                    removed += 1
        return removed

    async def groups(self, stream: str) -> list[dict[str, Any]]:
        """``XINFO GROUPS`` with text keys; empty when the stream does not exist."""
        try:
            groups = await self.client.xinfo_groups(stream)
        except ResponseError:  # no such key
            return []
        return [{_text(k): v for k, v in g.items()} for g in groups]

    async def trim(self) -> int:
        """Trim every shard stream below the oldest entry some group still needs
        (its oldest pending entry, or the entry after its last delivered one).
        Streams without a group are left alone. A registered subscriber group more
        than its max_lag behind is reported and no longer waited for
        (:func:`availability.subscribe.holds_trimming`). Returns the entries removed."""
        trimmed = 0
        registered = await subscribe.registered_groups(self.client, self.keys)
        for stream in self.streams:
            floor: tuple[int, int] | None = None
            length = int(await self.client.xlen(stream)) if registered else 0
            for group in await self.groups(stream):
                if registered and not subscribe.holds_trimming(group, registered, self.streams[stream], length):
                    continue
                ms, seq = _id_tuple(group["last-delivered-id"])
                low = (ms, seq + 1)
                if int(group.get("pending") or 0):
                    # the group may have acknowledged everything since XINFO said otherwise
                    summary = await self.client.xpending(stream, group["name"])
                    oldest = (summary or {}).get("min")
                    if oldest is not None:
                        low = min(low, _id_tuple(oldest))
                floor = low if floor is None or low < floor else floor
            if floor is not None and floor > (0, 1):
                trimmed += await self.client.xtrim(stream, minid=f"{floor[0]}-{floor[1]}", approximate=False)
        return trimmed

    async def refresh_gauges(self) -> None:
        """Set the per-shard lag (undelivered) and pending (unacknowledged) gauges."""
        for shard, figures in (await backlog(self.client, self.keys, self.streams.values(), self.group)).items():
            metrics.PENDING_RECORDS.labels(str(shard)).set(figures["pending"])
            metrics.LAG_RECORDS.labels(str(shard)).set(figures["lag"])


async def backlog(
    client: Any, keys: KeySchema, shards: Iterable[int] | None = None, group: str = GROUP
) -> dict[int, dict[str, Any]]:
    """Per shard: stream length, and of the consumer group ``group`` (the
    flushers') the records not yet delivered (``lag``) and delivered but not
    acknowledged (``pending``); ``groups`` names every group of the stream.

    Without that group (no flusher ever ran) every record is lag. Other groups
    (subscribers, :mod:`availability.subscribe`) do not count: a slow subscriber
    is not a flusher backlog, and has figures of its own.
    """
    shards = list(keys.all_shards() if shards is None else shards)
    pipe = client.pipeline(transaction=False)
    for s in shards:
        pipe.xlen(keys.changes(s))
        pipe.xlen(keys.dead_letters(s))
    lengths = await pipe.execute()
    out: dict[int, dict[str, Any]] = {}
    for i, s in enumerate(shards):
        length, dead = int(lengths[2 * i]), int(lengths[2 * i + 1])
        groups: list[dict[str, Any]] = []
        if length:
            try:
                groups = await client.xinfo_groups(keys.changes(s))
            except ResponseError:  # the stream vanished between XLEN and XINFO
                groups = []
        lag, pending = length, 0
        names = []
        for g in groups:
            g = {_text(k): v for k, v in g.items()}
            names.append(_text(g.get("name")))
            if names[-1] != group:
                continue
            pending = int(g.get("pending") or 0)
            group_lag = g.get("lag")
            # lag is unknown (None) after entries were deleted mid-stream; count the stream then
            lag = length if group_lag is None else int(group_lag)
        out[s] = {"stream_length": length, "lag": lag, "pending": pending, "dead_letters": dead, "groups": names}
    return out
