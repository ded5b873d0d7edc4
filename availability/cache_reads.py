"""Read-only views of a deployment for the operator commands (``availability stats``,
``inspect``): :class:`OperatorReads`, mixed into :class:`~availability.cache.MarketCache`,
so that no module outside the cache reads its hashes and streams itself."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from redis.exceptions import ResponseError

from availability.keys import (
    KeySchema,
)


class OperatorReads:
    """Needs ``self.client`` and ``self.keys`` (a :class:`~availability.keys.KeySchema`)."""

    client: Any
    keys: KeySchema

    # ------------------------------------------------------------ operator reads (availability stats)
    # Read-only views for the operator commands (availability.ops), so that no
    # module outside this class reads the cache's hashes and streams itself.

    async def recorded_shards(self) -> int | None:
        """The shard count recorded in ``<prefix>:config``, or None when the
        prefix holds no deployment. Writes nothing (unlike :meth:`ensure_config`)."""
        stored = await self.client.hget(self.keys.config(), "shards")
        return None if stored is None else int(stored)

    async def stream_lengths(self, shards: Iterable[int]) -> dict[int, tuple[int, int]]:
        """Per shard: (length of its change stream, length of its dead-letter stream)."""
        shards = list(shards)
        pipe = self.client.pipeline(transaction=False)
        for s in shards:
            pipe.xlen(self.keys.changes(s))
            pipe.xlen(self.keys.dead_letters(s))
        lengths = await pipe.execute()
        return {s: (int(lengths[2 * i]), int(lengths[2 * i + 1])) for i, s in enumerate(shards)}

    async def stream_groups(self, shard: int) -> list[dict[str, Any]]:
        """``XINFO GROUPS`` of the shard's change stream; [] when the stream does not exist."""
        try:
            return list(await self.client.xinfo_groups(self.keys.changes(shard)))
        except ResponseError:  # no such stream (never written, or gone since it was counted)
            return []

    async def shard_index(self, shards: Iterable[int]) -> dict[int, tuple[list[tuple[int, str]], bool]]:
        """Per shard: the (event, bookmaker) pairs its snapshot index lists, and
        whether it is ready (warm). Writes nothing (:meth:`list_snapshots` prunes)."""
        shards = list(shards)
        pipe = self.client.pipeline(transaction=False)
        for s in shards:
            pipe.zrange(self.keys.snapshots(s), 0, -1)
            pipe.exists(self.keys.ready(s))
        replies = await pipe.execute()
        return {s: ([self.keys.parse_snapshot_member(m) for m in replies[2 * i]], bool(replies[2 * i + 1]))
                for i, s in enumerate(shards)}

    async def snapshot_counts(self, pairs: Sequence[tuple[int, str]]) -> list[tuple[int, int]]:
        """(markets, unavailable) of each snapshot, as the apply script keeps them in its meta hash."""
        if not pairs:
            return []
        pipe = self.client.pipeline(transaction=False)
        for e, b in pairs:
            pipe.hmget(self.keys.meta(e, b), "markets", "unavailable")
        return [(int(total or 0), int(unavailable or 0)) for total, unavailable in await pipe.execute()]

    async def snapshot_memory(self, pairs: Sequence[tuple[int, str]]) -> list[tuple[int, int]]:
        """(bytes of ``MEMORY USAGE`` of its three hashes, markets) of each snapshot."""
        if not pairs:
            return []
        pipe = self.client.pipeline(transaction=False)
        for e, b in pairs:
            for key in (self.keys.markets(e, b), self.keys.unavailable(e, b), self.keys.meta(e, b)):
                pipe.memory_usage(key, samples=0)
            pipe.hlen(self.keys.markets(e, b))
        replies = await pipe.execute()
        return [(sum(int(x or 0) for x in replies[4 * i : 4 * i + 3]), int(replies[4 * i + 3] or 0))
                for i in range(len(pairs))]

    async def memory_used(self) -> int:
        """Redis's ``used_memory`` (the whole server, not only this prefix)."""
        info = await self.client.info("memory")
        return int(info.get("used_memory", 0))
