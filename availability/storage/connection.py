"""Connections to PostgreSQL (:class:`Database`, a pool or one URL) and which of its errors are worth waiting out (:func:`is_transient_pg`)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator

import psycopg
import psycopg.rows
from psycopg_pool import AsyncConnectionPool

from availability.db.engine import libpq_url
from availability.logs import redact_url


# SQLSTATEs worth waiting out: the server is unreachable, overloaded, shutting
# down or restarting (classes 08, 53, 57P), a standby that is not writable yet
# after a failover (25006), or a transaction that lost a race and will pass when
# run again (40001 serialization failure, 40P01 deadlock). Anything else the
# statement raises is about the data, and no retry will ever fix it.
_TRANSIENT_CLASSES = ("08", "53", "57P")
_TRANSIENT_STATES = ("25006", "40001", "40P01")


# ---------------------------------------------------------------- connections


class Database:
    """A PostgreSQL URL (one connection, kept and reopened as needed) or a
    ``psycopg_pool.AsyncConnectionPool``, behind one ``connection()``."""

    def __init__(self, database: str | AsyncConnectionPool) -> None:
        self.database = database
        self._conn: psycopg.AsyncConnection | None = None

    @property
    def label(self) -> str:
        """The database URL with its password masked (for logs)."""
        if isinstance(self.database, str):
            return redact_url(self.database)
        return redact_url(getattr(self.database, "conninfo", "") or "postgresql://(pool)")

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """An autocommit connection: from the pool, or our own (reconnected when broken)."""
        if isinstance(self.database, AsyncConnectionPool):
            async with self.database.connection() as conn:
                yield conn
            return
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    await self._conn.close()
            self._conn = None
            self._conn = await psycopg.AsyncConnection.connect(
                libpq_url(self.database), autocommit=True, connect_timeout=5
            )
        yield self._conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


# ---------------------------------------------------------------- errors


def _sqlstate(exc: BaseException) -> str | None:
    return getattr(exc, "sqlstate", None) if isinstance(exc, psycopg.Error) else None


def is_transient_pg(exc: BaseException) -> bool:
    """Worth waiting out: PostgreSQL is unreachable or briefly unable to serve,
    judged by SQLSTATE class, not by exception type (psycopg raises
    ``OperationalError`` for a too-large index row too). An error without a
    SQLSTATE is transient only when the connection itself failed."""
    state = _sqlstate(exc)
    if state is not None:
        return state.startswith(_TRANSIENT_CLASSES) or state in _TRANSIENT_STATES
    return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError, OSError, asyncio.TimeoutError))
