"""Helpers the flusher tests share for looking at the shards' change streams."""

from __future__ import annotations

from redis.exceptions import ResponseError

from availability.cache import MarketCache
from availability.flusher import GROUP


async def pending(cache: MarketCache) -> int:
    """Records delivered to a flusher and not yet acknowledged, over every shard
    (a shard whose stream or group does not exist yet has none)."""
    total = 0
    for shard in cache.keys.all_shards():
        try:
            total += (await cache.client.xpending(cache.keys.changes(shard), GROUP))["pending"]
        except ResponseError:  # NOGROUP: no stream or group yet
            pass
    return total
