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
from redis.exceptions import NoScriptError, ResponseError

__all__ = ["is_cluster", "connection_kwargs", "load_lua", "Script"]

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
