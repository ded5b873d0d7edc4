"""The one place that knows how to talk to Redis or a Redis Cluster.

Two concerns every Redis user of the package shares:

* **Is this a cluster?** Decided by ``isinstance`` against
  ``redis.asyncio.cluster.RedisCluster`` (:func:`is_cluster`), never by a
  class name: a subclass or a wrapper must not silently change the code path.
* **Running a Lua script** (:class:`Script`): the source is read and hashed
  once per process, loaded once per client (``SCRIPT LOAD``, every primary of
  a cluster), called by ``EVALSHA``, and run with ``EVAL`` (which caches it
  again) when Redis answers ``NOSCRIPT`` after a ``SCRIPT FLUSH`` or a
  restart. On a cluster every call is its own round trip to its slot's node,
  with at most ``max_in_flight`` calls of one script object in flight
  (redis-py's cluster client raises rather than waits once a node's pool is
  used up); elsewhere many calls share one pipeline.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from importlib import resources
from typing import Any, Sequence

from redis.asyncio.cluster import RedisCluster

try:  # hiredis >= 3 packs commands in C; redis-py's asyncio connections pack them in Python
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis is a declared dependency
    _hiredis_pack = None
from redis.exceptions import NoScriptError, ResponseError

__all__ = ["is_cluster", "connection_kwargs", "load_lua", "Script", "use_hiredis_packing"]

# Script calls of one Script object in flight at once on a Redis Cluster.
CLUSTER_IN_FLIGHT = 32


def is_cluster(client: Any) -> bool:
    """True for a ``redis.asyncio`` cluster client (or a subclass of it)."""
    return isinstance(client, RedisCluster)


def connection_kwargs(client: Any) -> dict[str, Any]:
    """The client's connection settings: Redis keeps them on its pool, RedisCluster on itself."""
    return (
        getattr(getattr(client, "connection_pool", None), "connection_kwargs", None)
        or getattr(client, "connection_kwargs", None)
        or {}
    )


_PLAIN = frozenset({str, bytes, int})


class HiredisPacking:
    """Mixin for a ``redis.asyncio`` connection class: commands packed by
    ``hiredis.pack_command`` (one C call) instead of redis-py's Python loop,
    which costs ~2 µs per market of an ``EVALSHA`` carrying a whole scrape.

    Only for what both pack alike -- exact ``str`` (UTF-8, strict), ``bytes``
    and ``int`` arguments -- so the bytes on the wire are the same
    (``tests/test_fast_path.py`` proves it); anything else (floats, booleans,
    memoryviews, another encoding, a lone surrogate) goes to redis-py's own
    ``pack_command``, which also raises its usual errors.
    """

    __slots__ = ()

    def pack_command(self, *args: Any) -> list[bytes]:
        encoder = self.encoder  # type: ignore[attr-defined]
        if (encoder.encoding == "utf-8" and encoder.encoding_errors == "strict"
                and _PLAIN.issuperset(map(type, args))):  # one C loop, not a generator per argument
            if type(args[0]) is str:
                args = (*args[0].encode().split(), *args[1:])
            elif b" " in args[0]:
                args = (*args[0].split(), *args[1:])
            try:
                return [_hiredis_pack(args)]
            except (TypeError, ValueError, OverflowError):
                pass  # e.g. a lone surrogate: redis-py's packing raises its own error
        return super().pack_command(*args)  # type: ignore[misc]


@functools.cache
def _with_hiredis_packing(connection_class: type) -> type:
    return type(f"HiredisPacking{connection_class.__name__}", (HiredisPacking, connection_class), {})


def use_hiredis_packing(client: Any) -> bool:
    """Make a ``redis.asyncio.Redis`` client's new connections pack commands
    with hiredis (see :class:`HiredisPacking`); ``False`` (nothing changed) for a
    cluster client, a pool without a ``connection_class``, or no hiredis.
    ``MarketCache.from_url`` does this to the client it creates."""
    pool = getattr(client, "connection_pool", None)
    connection_class = getattr(pool, "connection_class", None)
    if _hiredis_pack is None or is_cluster(client) or not isinstance(connection_class, type):
        return False
    if not issubclass(connection_class, HiredisPacking):
        pool.connection_class = _with_hiredis_packing(connection_class)
    return True


@functools.cache
def load_lua(name: str) -> str:
    """The source of ``availability/lua/<name>`` (read once per process)."""
    return resources.files("availability").joinpath("lua", name).read_text()


Call = tuple[Sequence[Any], Sequence[Any]]  # (keys, args)


class Script:
    """One of the package's Lua scripts, bound to one client."""

    def __init__(self, client: Any, name: str) -> None:
        self.client = client
        self.name = name
        self.source = load_lua(name)
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()
        self.is_cluster = is_cluster(client)
        self._loaded = False
        self._max_in_flight = max(
            1, min(CLUSTER_IN_FLIGHT, int(connection_kwargs(client).get("max_connections") or CLUSTER_IN_FLIGHT))
        )
        self._in_flight: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    @property
    def loaded(self) -> bool:
        return self._loaded

    async def load(self) -> str:
        """``SCRIPT LOAD`` once for this client; returns the SHA1."""
        if not self._loaded:
            await self.client.script_load(self.source)  # the same SHA1 as ours
            self._loaded = True
        return self.sha

    def _limiter(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._in_flight is None or self._in_flight[0] is not loop:
            self._in_flight = (loop, asyncio.Semaphore(self._max_in_flight))
        return self._in_flight[1]

    async def _call(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        sha = await self.load()
        try:
            return await self.client.evalsha(sha, len(keys), *keys, *args)
        except NoScriptError:  # SCRIPT FLUSH or a restart: EVAL runs it and caches it again
            return await self.client.eval(self.source, len(keys), *keys, *args)

    async def __call__(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """One call; the script's error replies raise ``ResponseError``."""
        if self.is_cluster:
            async with self._limiter():
                return await self._call(keys, args)
        return await self._call(keys, args)

    async def many(self, calls: Sequence[Call]) -> list[Any]:
        """Many calls, replies in order; a script's error reply is returned as its
        ``ResponseError``, any other failure (a lost connection) is raised.

        One pipeline on a single Redis (the calls that met ``NOSCRIPT`` did not
        run, and run again one by one); concurrent calls on a cluster."""
        if not calls:
            return []
        if self.is_cluster:
            results = list(await asyncio.gather(*(self(k, a) for k, a in calls), return_exceptions=True))
        else:
            sha = await self.load()
            pipe = self.client.pipeline(transaction=False)
            for keys, args in calls:
                pipe.evalsha(sha, len(keys), *keys, *args)
            results = await pipe.execute(raise_on_error=False)
            for i, r in enumerate(results):
                if isinstance(r, NoScriptError):
                    try:
                        results[i] = await self(*calls[i])
                    except ResponseError as exc:
                        results[i] = exc
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, ResponseError):
                raise r
        return results
