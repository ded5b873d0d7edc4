"""Warm-up: reload the cache from PostgreSQL after Redis lost its data.

While a shard is cold (its ``ready`` key is missing: Redis restarted empty,
or the deployment is new), ``apply_scrape`` refuses every scrape of that
shard: the outcome's status is ``cold`` (:meth:`MarketCache.apply_scrape`
raises :class:`~availability.errors.CacheNotReady`). Workers should keep the
scrape and retry it after warm-up, or simply wait for the next cycle. That
refusal is what keeps a cold cache honest: an empty cache would report every
market as new, and would miss every market that disappeared while it was
empty (nothing to compare with, so nothing stamped).

:func:`warm` writes each (event, bookmaker) snapshot PostgreSQL holds --
markets with their canonical payload, ``unavailable_at`` stamps, the meta hash
with ``last_scraped_at`` (so stale scrapes are still refused) and the
``snapshots`` index -- with one small Lua script per snapshot
(``lua/warm_snapshot.lua``) that writes only when Redis has no newer state of
that snapshot. Then it marks every shard ready. On an empty database it only
marks the shards ready (a new deployment).

What warm-up cannot bring back: records that Redis lost before a flusher
wrote them (with ``appendonly yes`` and ``appendfsync everysec``, at most
about one second of scrapes). Those scrapes are simply re-derived: the next
scrape of each event is compared with what PostgreSQL had.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable

import psycopg
import structlog

from availability.cache import MarketCache
from availability.db.convert import HOME_BOOKMAKER, row_to_market
from availability.db.engine import is_schema_error, libpq_url, schema_not_ready
from availability.model import encode_market, format_ts, key_to_field, market_key
from availability.redis_adapter import Script
from availability.storage import PgSnapshot, bump_generation, load_snapshots

__all__ = ["WarmStats", "warm", "load_snapshots", "PgSnapshot"]

log = structlog.get_logger("availability.warm")

_PIPELINE = 100  # snapshots per round trip


@dataclass
class WarmStats:
    snapshots: int = 0  # snapshots written to Redis
    markets: int = 0
    unavailable: int = 0
    skipped: int = 0  # Redis already had the same or a newer scrape of the snapshot
    seconds: float = 0.0
    generation: int = 0  # the warm-up fence generation this warm-up set
    undecodable: int = 0  # PostgreSQL rows that could not be read as markets (logged, skipped)


def _script_args(snap: PgSnapshot, undecodable: list[tuple[int, str, str]] | None = None) -> list[Any]:
    meta = snap.meta()
    args: list[Any] = [str(snap.event_id), snap.bookmaker, meta["last_scraped_us"], str(len(meta))]
    for name, value in meta.items():
        args += [name, value]
    markets: list[Any] = []
    stamps: list[Any] = []
    for row in snap.rows:
        try:
            market = row_to_market(row)
            field = key_to_field(market_key(market.betpawa_market_id, market.line))
            payload = encode_market(market)
        except Exception as exc:  # a row no scrape could have written: report it by key, load the rest
            log.error("warm.undecodable_row", event_id=snap.event_id, bookmaker=snap.bookmaker,
                      market=f"{row.get('betpawa_market_id')!r}@{row.get('line')!r}",
                      error=f"{type(exc).__name__}: {exc}"[:300])
            if undecodable is not None:
                undecodable.append((snap.event_id, snap.bookmaker, str(row.get("betpawa_market_id"))))
            continue
        markets += [field, payload]
        if market.unavailable_at is not None:
            stamps += [field, format_ts(market.unavailable_at)]
    return [*args, str(len(markets) // 2), *markets, str(len(stamps) // 2), *stamps]


async def warm(
    cache: MarketCache,
    database_url: str,
    *,
    home_bookmaker: str = HOME_BOOKMAKER,
    event_ids: Iterable[int] | None = None,
) -> WarmStats:
    """Reload the cache from PostgreSQL, then mark every shard ready.

    Safe to run while workers run (they are refused as ``cold`` until the end)
    and safe to run twice: a snapshot Redis already holds at the same or a
    newer scrape is left alone. ``event_ids`` limits the reload to some events
    (the shards are still marked ready).
    """
    started = time.perf_counter()
    stats = WarmStats()
    await cache.ensure_config()
    script = Script(cache.client, "warm_snapshot.lua")

    async def send(batch: list[PgSnapshot]) -> None:
        bad: list[tuple[int, str, str]] = []
        calls = [(cache.keys.snapshot(s.event_id, s.bookmaker), _script_args(s, bad), s) for s in batch]
        stats.undecodable += len(bad)
        replies = await script.many([([k.markets, k.unavailable, k.meta, k.snapshots], a) for k, a, _ in calls])
        refused = [r for r in replies if isinstance(r, Exception)]
        if refused:  # the script refused a snapshot
            raise refused[0]
        for reply in replies:
            status = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
            if status == "warmed":
                stats.snapshots += 1
                stats.markets += int(reply[1])
                stats.unavailable += int(reply[2])
            else:
                stats.skipped += 1

    try:
        async with await psycopg.AsyncConnection.connect(libpq_url(database_url)) as conn:
            # Fence out flusher batches read before now: once this commits, none of
            # them can commit, so nothing lands in PostgreSQL behind this reload.
            stats.generation = await bump_generation(conn, cache.keys.prefix)
            await conn.commit()
            batch: list[PgSnapshot] = []
            async for snap in load_snapshots(conn, event_ids, home_bookmaker=home_bookmaker):
                batch.append(snap)
                if len(batch) >= _PIPELINE:
                    await send(batch)
                    batch = []
            if batch:
                await send(batch)
    except psycopg.Error as exc:
        if is_schema_error(exc):
            raise schema_not_ready(exc) from None
        raise
    await cache.mark_ready()
    stats.seconds = time.perf_counter() - started
    log.info("warm.done", snapshots=stats.snapshots, markets=stats.markets, unavailable=stats.unavailable,
             skipped=stats.skipped, seconds=round(stats.seconds, 3))
    return stats
