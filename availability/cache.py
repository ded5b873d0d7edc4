"""The shared market cache: Redis hashes, one atomic Lua script per scrape.

Any number of worker processes may share one :class:`MarketCache`
deployment. Each scrape is validated in Python, then applied by
``lua/apply_scrape.lua`` in one round trip: the script refuses stale
scrapes, stamps markets missing from a complete scrape exactly once, clears
returning ones, and appends one record to its shard's change stream for the
flushers. A worker that applied a snapshot's last scrape itself sends the
next one in the script's short form (only the markets that changed; see
:class:`~availability.scrape.SnapshotMemory`); a second round trip, in the
full form, only when another application came between.
"""

from __future__ import annotations

from datetime import datetime
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import msgpack
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from availability import metrics
from availability.errors import CacheNotReady, ConfigurationError, InvalidScrape
from availability.keys import (
    DEFAULT_PREFIX,
    DEFAULT_SHARDS,
    SCHEMA_VERSION,
    KeySchema,
    validate_bookmaker,
    validate_event_id,
)
from availability.logs import get_logger
from availability.model import (
    CachedSnapshot,
    RejectedMarket,
    field_to_key,
    format_ts,
    from_micros,
    key_sort_order,
    key_to_field,
    screen_payloads,
    to_micros,
    to_utc,
)
from availability.redis_adapter import Script, connection_kwargs, is_cluster, use_hiredis_packing
from availability.cache_reads import OperatorReads
from availability.scrape import (  # noqa: F401 - the statuses and helpers are importable from here too
    APPLIED,
    COLD,
    DUPLICATE,
    DEFAULT_MEMORY,
    ERROR,
    IGNORED_EMPTY,
    INVALID,
    STALE,
    Scrape,
    ScrapeOutcome,
    ShortForm,
    SnapshotMemory,
    _digest_fields,
    _is_resend,
    _LOGGED_REJECTIONS,
    _Prepared,
    _rejections_blob,
    snapshot_from_hashes,
)

__all__ = ["MarketCache", "RejectedMarket", "Scrape", "ScrapeOutcome"]

log = get_logger("availability.cache")

class MarketCache(OperatorReads):
    """Shared cache of market availability in Redis.

    Build it from a ``redis.asyncio`` client (``Redis`` or ``RedisCluster``)
    or with :meth:`from_url`. ``prefix`` isolates deployments (or tests) that
    share one server; ``shards`` is fixed for a deployment and checked against
    ``<prefix>:config`` on first use. ``memory``: how many snapshots this cache
    remembers as its own applications left them (:class:`SnapshotMemory`; 0: every
    scrape travels whole).
    """

    def __init__(
        self,
        client: aioredis.Redis | Any,
        *,
        prefix: str = DEFAULT_PREFIX,
        shards: int = DEFAULT_SHARDS,
        memory: int = DEFAULT_MEMORY,
    ) -> None:
        if connection_kwargs(client).get("decode_responses"):
            raise ConfigurationError("redis client: decode_responses must be False (market payloads are msgpack bytes)")
        self.client = client
        self.keys = KeySchema(prefix, shards)
        self.script = Script(client, "apply_scrape.lua")
        self.memory = SnapshotMemory(memory)
        self._config_checked = False
        self._is_cluster = is_cluster(client)
        self._owns_client = False

    @classmethod
    def from_url(cls, url: str, *, prefix: str = DEFAULT_PREFIX, shards: int = DEFAULT_SHARDS,
                 memory: int | None = None, **kwargs: Any) -> "MarketCache":
        """Connect to ``redis://``, ``rediss://`` (TLS) or ``unix://`` URLs,
        ACL user and password included; ``cluster=True`` for Redis Cluster."""
        if kwargs.pop("cluster", False):
            from redis.asyncio.cluster import RedisCluster

            client = RedisCluster.from_url(url, **kwargs)
        else:
            client = aioredis.Redis.from_url(url, **kwargs)
            use_hiredis_packing(client)
        cache = cls(client, prefix=prefix, shards=shards, memory=DEFAULT_MEMORY if memory is None else memory)
        cache._owns_client = True
        return cache

    @property
    def is_cluster(self) -> bool:
        """Whether the client is a ``RedisCluster`` (one slot per command)."""
        return self._is_cluster

    async def close(self) -> None:
        if self._owns_client:
            await self.client.aclose()

    async def __aenter__(self) -> "MarketCache":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------ deployment state

    async def ensure_config(self, *, create: bool = True) -> None:
        """Record the shard count on first use; refuse to run with another one.

        ``create=False`` (read-only tools such as ``verify``) raises instead of
        creating a deployment that does not exist, e.g. under a mistyped prefix.
        """
        if self._config_checked:
            return
        key = self.keys.config()
        if create:
            await self.client.hsetnx(key, "shards", str(self.keys.shards))
            await self.client.hsetnx(key, "schema", SCHEMA_VERSION)
        stored, schema = await self.client.hmget(key, ["shards", "schema"])
        if stored is None and not create:
            raise ConfigurationError(
                f"prefix {self.keys.prefix!r}: no deployment here ({key} is missing); "
                f"check --prefix / AVAILABILITY_PREFIX"
            )
        if stored is not None and int(stored) != self.keys.shards:
            raise ConfigurationError(
                f"shards: this deployment ({self.keys.prefix!r}) was created with {int(stored)} shards, "
                f"not {self.keys.shards}; keys would land in the wrong shard"
            )
        if schema is not None and schema.decode() != SCHEMA_VERSION:
            raise ConfigurationError(
                f"schema: this deployment ({self.keys.prefix!r}) stores its data in format {schema.decode()!r}, "
                f"this version reads and writes format {SCHEMA_VERSION!r} only; warm a fresh prefix from "
                f"PostgreSQL (`availability --prefix NEW warm`) and point every worker at it"
            )
        self._config_checked = True

    async def mark_ready(self, shards: Iterable[int] | None = None, *, at: datetime | None = None) -> None:
        """Mark shards warm: the cache holds everything PostgreSQL holds.

        Called by warm-up (``availability warm``) after reloading, and by a new
        deployment whose database is empty. Until then scrapes are refused as
        ``cold`` rather than reporting every market as new and missing what
        disappeared.
        """
        await self.ensure_config()
        stamp = format_ts(at) if at else "ready"
        for shard in self.keys.all_shards() if shards is None else shards:
            await self.client.set(self.keys.ready(shard), stamp)

    async def cold_shards(self) -> list[int]:
        """Shards not yet warmed (all of them after Redis lost its data)."""
        shards = list(self.keys.all_shards())
        if self._is_cluster:
            exists = [await self.client.exists(self.keys.ready(s)) for s in shards]
        else:
            pipe = self.client.pipeline(transaction=False)
            for s in shards:
                pipe.exists(self.keys.ready(s))
            exists = await pipe.execute()
        return [s for s, e in zip(shards, exists) if not e]

    # ------------------------------------------------------------ validation

    def _prepare(self, scrape: Scrape, mode: str = "scrape", strict: bool = False) -> _Prepared:
        try:
            event_id = validate_event_id(scrape.event_id)
            bookmaker = validate_bookmaker(scrape.bookmaker)
            scraped_at = to_utc(scrape.scraped_at, "scraped_at")
            if not isinstance(scrape.complete, bool):
                raise InvalidScrape(f"complete: expected a boolean, got {scrape.complete!r}")
            if not isinstance(scrape.confirmed_empty, bool):
                raise InvalidScrape(f"confirmed_empty: expected a boolean, got {scrape.confirmed_empty!r}")
            kickoff_us = ""
            if scrape.kickoff is not None:
                kickoff_us = str(to_micros(to_utc(scrape.kickoff, "kickoff")))
                if kickoff_us.startswith("-"):
                    raise InvalidScrape(f"kickoff: expected a time after 1970, got {scrape.kickoff!r}")
            expire_ms = 0
            if scrape.expires_at is not None:
                expire_ms = to_micros(to_utc(scrape.expires_at, "expires_at")) // 1000
            raw = scrape.markets
            if raw is None or isinstance(raw, (str, bytes, dict)) or not isinstance(raw, Iterable):
                raise InvalidScrape(f"markets: expected a list of markets, got {raw!r}")
            where = f"event {event_id} at {bookmaker}"
            # one bad market is quarantined (or, strict, refuses the scrape: KeyCollision for
            # two markets with one key); encoded here, inside the try, so a market that cannot
            # be encoded never raises out of apply_batch for the whole batch
            screened = screen_payloads(raw, where, strict=strict)
            if scrape.confirmed_empty and screened.rows:
                raise InvalidScrape(
                    f"confirmed_empty: True but {screened.rows} markets were given for {where}"
                )
        except InvalidScrape as exc:
            event = scrape.event_id if isinstance(scrape.event_id, int) else None
            bookmaker_ = scrape.bookmaker if isinstance(scrape.bookmaker, str) else None
            return _Prepared(None, None, event, bookmaker_, None,
                             ScrapeOutcome(event, bookmaker_, None, INVALID, error=exc))
        held, rejected = screened.held, screened.rejected
        if mode == "removed":
            completeness = "empty"
        elif not screened.rows:
            if not (scrape.confirmed_empty and scrape.complete):
                return _Prepared(None, None, event_id, bookmaker, scraped_at,
                                 ScrapeOutcome(event_id, bookmaker, scraped_at, IGNORED_EMPTY))
            completeness = "empty"
        elif not scrape.complete or screened.key_unreadable or not (screened.fields or held):
            # (no market whose key could be read: applied with none, so the rejections are recorded)
            completeness = "partial"
        else:
            completeness = "complete"
        # a held market goes to the script with an empty payload: present, stored payload kept
        fields = screened.fields + [key_to_field(k) for k in held]
        payloads = screened.payloads + [b""] * len(held)
        head: list[Any] = [
            mode,
            str(event_id),
            bookmaker,
            str(to_micros(scraped_at)),
            format_ts(scraped_at),
            completeness,
            str(expire_ms),
            msgpack.packb(fields, use_bin_type=True),
        ]
        rejected_blob = _rejections_blob(rejected)
        pairs: list[Any] = [b""] * (2 * len(fields))  # field, payload, field, payload...
        pairs[0::2] = fields
        pairs[1::2] = payloads
        args = [*head, _digest_fields([*head, rejected_blob, kickoff_us], fields, payloads), rejected_blob,
                str(len(fields)), *pairs, kickoff_us]
        keys = self.keys.snapshot(event_id, bookmaker).as_list()
        return _Prepared(keys, args, event_id, bookmaker, scraped_at, rejected=rejected,
                         partial=completeness == "partial",
                         rememberable=mode == "scrape" and completeness == "complete" and not held)

    # ------------------------------------------------------------ script calls

    async def _run(self, runnable: Sequence[_Prepared]) -> list[Any]:
        """The script calls of validated scrapes, pipelined (EVALSHA, EVAL after SCRIPT FLUSH
        or a restart): the short form where this cache remembers the snapshot, then the full
        form of those the script answered ``resend``. Replies in order; the script's error
        replies as ``ResponseError``; connection errors raise."""
        calls = []
        shorts: list[ShortForm | None] = []
        # a snapshot scraped twice in one batch goes in the full form: a resent call runs after
        # the whole batch, so it must be the only one of its snapshot there
        counts = Counter((p.event_id, p.bookmaker) for p in runnable)
        twice = {name for name, count in counts.items() if count > 1}
        for p in runnable:
            assert p.keys is not None and p.args is not None
            form = None if (p.event_id, p.bookmaker) in twice else self.memory.short_args(p)
            calls.append((p.keys, p.args if form is None else form[0]))
            shorts.append(None if form is None else form[1])
        replies = await self.script.many(calls)
        again = [i for i, r in enumerate(replies) if shorts[i] is not None and _is_resend(r)]
        if again:
            for i, reply in zip(again, await self.script.many([(runnable[i].keys, runnable[i].args) for i in again])):
                replies[i] = reply
                shorts[i] = None
        short = sum(m is not None for m in shorts) + len(again)
        for form, count in (("short", short), ("resent", len(again)), ("full", len(runnable) - short)):
            if count:
                metrics.SCRIPT_CALLS.labels(form).inc(count)
        for p, reply, m in zip(runnable, replies, shorts):
            self.memory.update(p, reply, m)
        return replies

    def _outcome(self, prepared: _Prepared, reply: Any) -> ScrapeOutcome:
        if prepared.outcome is not None:
            return prepared.outcome
        base = dict(event_id=prepared.event_id, bookmaker=prepared.bookmaker, scraped_at=prepared.scraped_at)
        if isinstance(reply, CacheNotReady):
            return ScrapeOutcome(**base, status=COLD, error=reply)
        if isinstance(reply, ResponseError) and "availability:" in str(reply):
            return ScrapeOutcome(**base, status=INVALID, error=InvalidScrape(str(reply)))
        if isinstance(reply, Exception):
            return ScrapeOutcome(**base, status=ERROR, error=reply)
        status = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
        if status not in (APPLIED, DUPLICATE, STALE, COLD):
            return ScrapeOutcome(**base, status=ERROR, error=ResponseError(f"unexpected script reply {reply!r}"))
        if status == STALE:
            return ScrapeOutcome(**base, status=STALE, last_scraped_at=from_micros(int(reply[1])),
                                 rejected=prepared.rejected)
        if status == COLD:
            shard = self.keys.shard_of(prepared.event_id or 0)
            return ScrapeOutcome(
                **base,
                status=COLD,
                error=CacheNotReady(
                    f"shard {shard} of {self.keys.prefix!r} is cold (Redis lost its data or was never "
                    f"warmed): run `availability warm` before applying scrapes"
                ),
            )
        # (an 8th item, the stored fields not listed, is for SnapshotMemory)
        _, new, changed, unchanged, unavailable, available, stream_id = reply[:7]
        if status == APPLIED and prepared.rejected:
            self._report_rejections(prepared)
        return ScrapeOutcome(
            **base,
            status=status,
            became_unavailable=tuple(sorted((field_to_key(f) for f in unavailable), key=key_sort_order)),
            became_available=tuple(sorted((field_to_key(f) for f in available), key=key_sort_order)),
            new=int(new),
            changed=int(changed),
            unchanged=int(unchanged),
            stream_id=(stream_id.decode() if isinstance(stream_id, bytes) else stream_id) or None,
            last_scraped_at=prepared.scraped_at,
            rejected=prepared.rejected,
            partial=prepared.partial,
        )

    @staticmethod
    def _report_rejections(prepared: _Prepared) -> None:
        """Count (``availability_markets_rejected_total``) and log the markets a
        scrape quarantined, once, when it is applied (not again for a duplicate)."""
        bookmaker = prepared.bookmaker or ""
        for r in prepared.rejected:
            metrics.MARKETS_REJECTED.labels(bookmaker, r.reason).inc()
        log.warning(
            "cache.markets_rejected",
            event_id=prepared.event_id,
            bookmaker=bookmaker,
            rejected=len(prepared.rejected),
            partial=prepared.partial,
            markets=[
                {"key": None if r.key is None else key_to_field(r.key), "field": r.field, "value": r.value,
                 "reason": r.reason}
                for r in prepared.rejected[:_LOGGED_REJECTIONS]
            ],
        )

    # ------------------------------------------------------------ public API

    async def apply_scrape(
        self,
        event_id: int,
        bookmaker: str,
        markets: Sequence[Any],
        scraped_at: datetime,
        *,
        complete: bool = True,
        confirmed_empty: bool = False,
        expires_at: datetime | None = None,
        strict: bool = False,
        kickoff: datetime | None = None,
    ) -> ScrapeOutcome:
        """Apply one scrape atomically; see :class:`Scrape` for the arguments.

        A bad market is quarantined (``outcome.rejected``, docs/rules.md): the
        others are applied. Raises :class:`InvalidScrape` (nothing written) on
        a bad scrape (event id, bookmaker, times, the market list itself) -- and
        with ``strict=True`` on any bad market too, :class:`KeyCollision` for
        two markets with one key -- and :class:`CacheNotReady` when the shard is
        cold. A stale scrape is not an error: ``outcome.stale`` is true and
        nothing changed.
        """
        outcome = await self._apply(Scrape(event_id, bookmaker, markets, scraped_at, complete,
                                           confirmed_empty, expires_at, kickoff), strict=strict)
        if outcome.error is not None:
            raise outcome.error
        return outcome

    async def mark_event_removed(self, event_id: int, bookmaker: str, at: datetime) -> ScrapeOutcome:
        """The event vanished from the bookmaker's listing at ``at``: stamp its
        available markets, under the same compare-and-set and staleness rules
        as a scrape. Only call it from a listing that was fetched completely."""
        to_utc(at, "at")
        outcome = await self._apply(Scrape(event_id, bookmaker, [], at, True, True), mode="removed")
        if outcome.error is not None:
            raise outcome.error
        return outcome

    async def _apply(self, scrape: Scrape, mode: str = "scrape", strict: bool = False) -> ScrapeOutcome:
        prepared = self._prepare(scrape, mode, strict)
        if prepared.outcome is not None:
            return prepared.outcome
        await self.ensure_config()
        [reply] = await self._run([prepared])
        return self._outcome(prepared, reply)

    async def apply_batch(
        self, scrapes: Iterable[Scrape], *, removed: Iterable[Scrape] = (), strict: bool = False
    ) -> list[ScrapeOutcome]:
        """Apply many scrapes in one pipelined round trip.

        Returns one outcome per scrape, in order. Bad markets are quarantined
        per scrape (``rejected``), as in :meth:`apply_scrape`; an invalid (with
        ``strict=True``: any bad market) or failing scrape gets ``status``
        ``invalid``/``error``/``cold`` with ``error`` set, and never blocks the
        others. Connection errors propagate (nothing is known about what was
        applied; retrying is safe, since replays are stale).
        """
        prepared = [self._prepare(s, strict=strict) for s in scrapes]
        prepared += [self._prepare(s, "removed") for s in removed]
        runnable = [p for p in prepared if p.outcome is None]
        replies: dict[int, Any] = {}
        if runnable:
            await self.ensure_config()
            # one pipeline (one EVALSHA per scrape on a cluster); connection errors raise
            results = await self._run(runnable)
            for p, r in zip(runnable, results):
                replies[id(p)] = r
        return [self._outcome(p, replies.get(id(p))) for p in prepared]

    # ------------------------------------------------------------ reads

    async def get_snapshot(self, event_id: int, bookmaker: str) -> CachedSnapshot | None:
        """The cached snapshot, unavailable markets included, or ``None``."""
        return (await self.get_snapshots([event_id], [bookmaker])).get((event_id, bookmaker))

    async def get_snapshots(
        self,
        event_ids: Iterable[int],
        bookmakers: Iterable[str] | None = None,
        *,
        undecodable: list[tuple[int, str, str, str]] | None = None,
    ) -> dict[tuple[int, str], CachedSnapshot]:
        """Snapshots of many events, keyed by ``(event_id, bookmaker)``.

        Without ``bookmakers``, every bookmaker cached for each event. Stored
        entries that do not decode are skipped and listed in ``undecodable``
        (see :func:`snapshot_from_hashes`)."""
        event_ids = [validate_event_id(e, reading=True) for e in event_ids]
        pairs: list[tuple[int, str]] = []
        if bookmakers is not None:
            bms = [validate_bookmaker(b, reading=True) for b in bookmakers]
            pairs = [(e, b) for e in event_ids for b in bms]
        else:
            for e in event_ids:
                pairs += [(e, b) for b in await self.bookmakers_of(e)]
        if not pairs:
            return {}
        replies: list[Any] = []
        if self._is_cluster:
            for e, b in pairs:
                replies += [
                    await self.client.hgetall(self.keys.meta(e, b)),
                    await self.client.hgetall(self.keys.markets(e, b)),
                    await self.client.hgetall(self.keys.unavailable(e, b)),
                ]
        else:
            pipe = self.client.pipeline(transaction=False)
            for e, b in pairs:
                pipe.hgetall(self.keys.meta(e, b))
                pipe.hgetall(self.keys.markets(e, b))
                pipe.hgetall(self.keys.unavailable(e, b))
            replies = await pipe.execute()
        out: dict[tuple[int, str], CachedSnapshot] = {}
        for i, (e, b) in enumerate(pairs):
            meta, markets, stamps = replies[3 * i : 3 * i + 3]
            if not meta and not markets:
                continue
            out[(e, b)] = snapshot_from_hashes(e, b, meta, markets, stamps, undecodable)
        return out

    async def bookmakers_of(self, event_id: int) -> list[str]:
        """Bookmakers with a cached snapshot of this event."""
        shard = self.keys.shard_of(event_id)
        members = await self.client.zrangebylex(self.keys.snapshots(shard), f"[{event_id}:", f"[{event_id}:\xff")
        return sorted(self.keys.parse_snapshot_member(m)[1] for m in members)

    async def list_snapshots(self, shard: int) -> list[tuple[int, str]]:
        """Every (event, bookmaker) cached in one shard.

        Index entries whose keys expired (``expires_at``) are pruned on the way."""
        members = await self.client.zrange(self.keys.snapshots(shard), 0, -1)
        pairs = [self.keys.parse_snapshot_member(m) for m in members]
        if not pairs:
            return []
        if self._is_cluster:
            alive = [await self.client.exists(self.keys.meta(e, b)) for e, b in pairs]
        else:
            pipe = self.client.pipeline(transaction=False)
            for e, b in pairs:
                pipe.exists(self.keys.meta(e, b))
            alive = await pipe.execute()
        expired = [m for m, a in zip(members, alive) if not a]
        if expired:
            await self.client.zrem(self.keys.snapshots(shard), *expired)
        return [p for p, a in zip(pairs, alive) if a]
