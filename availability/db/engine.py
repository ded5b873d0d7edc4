"""Database URLs and engines.

One driver everywhere: psycopg 3. SQLAlchemy's ``postgresql+psycopg`` dialect
works both sync and async (``create_async_engine`` picks the async variant of
the same driver), and psycopg itself wants a plain libpq ``postgresql://`` URL.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.ext.asyncio import create_async_engine as _sa_create_async_engine

from availability.errors import ConfigurationError, SchemaNotReady
from availability.logs import redact_url  # one implementation for every URL

__all__ = [
    "SQLALCHEMY_SCHEME",
    "sqlalchemy_url",
    "libpq_url",
    "redact_url",
    "create_engine",
    "create_async_engine",
    "is_schema_error",
    "schema_not_ready",
]

SQLALCHEMY_SCHEME = "postgresql+psycopg"
_LIBPQ_SCHEME = "postgresql"

# Every scheme we accept for a PostgreSQL URL, whatever driver it names.
_POSTGRES_SCHEMES = frozenset(
    {
        "postgres",
        "postgresql",
        "postgresql+psycopg",
        "postgresql+psycopg_async",
        "postgresql+psycopg2",
        "postgresql+psycopg2cffi",
        "postgresql+asyncpg",
        "postgresql+pg8000",
    }
)


def _split(url: str) -> tuple[str, str]:
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(f"database URL: expected a non-empty postgresql:// URL, got {url!r}")
    scheme, sep, rest = url.strip().partition("://")
    if not sep or scheme.lower() not in _POSTGRES_SCHEMES:
        shown = f"scheme {scheme!r}" if sep else repr(redact_url(url))
        raise ConfigurationError(
            f"database URL: expected a PostgreSQL URL such as postgresql://user@host:5432/db, got {shown}"
        )
    return scheme.lower(), rest


def sqlalchemy_url(url: str, *, async_: bool = False) -> str:
    """The URL for SQLAlchemy: any PostgreSQL scheme becomes ``postgresql+psycopg://``.

    ``async_`` is accepted for symmetry: psycopg 3 serves both, so the result
    is the same and ``create_async_engine`` picks the async variant itself.
    Everything after ``://`` is kept byte for byte (credentials, query string).
    """
    _, rest = _split(url)
    return f"{SQLALCHEMY_SCHEME}://{rest}"


def libpq_url(url: str) -> str:
    """The URL for ``psycopg.connect`` / libpq: plain ``postgresql://``."""
    _, rest = _split(url)
    return f"{_LIBPQ_SCHEME}://{rest}"


def create_engine(url: str, **kwargs: Any) -> Engine:
    """A sync SQLAlchemy engine on psycopg 3 with ``pool_pre_ping``."""
    kwargs.setdefault("pool_pre_ping", True)
    return sqlalchemy.create_engine(sqlalchemy_url(url), **kwargs)


def create_async_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An asyncio SQLAlchemy engine on psycopg 3 with ``pool_pre_ping``."""
    kwargs.setdefault("pool_pre_ping", True)
    return _sa_create_async_engine(sqlalchemy_url(url, async_=True), **kwargs)


# The schema is missing or older than this code (undefined table, column,
# function, type; no such schema): an operator must migrate, no retry helps.
_SCHEMA_STATES = frozenset({"42P01", "42703", "42883", "42704", "3F000"})


def is_schema_error(exc: BaseException) -> bool:
    """True for a PostgreSQL error that means the database was not migrated (far enough)."""
    return getattr(exc, "sqlstate", None) in _SCHEMA_STATES


def schema_not_ready(exc: BaseException) -> SchemaNotReady:
    """The one-line error every command gives for an unmigrated database."""
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return SchemaNotReady(
        f"database: the schema is missing or older than this version ({first}); run `availability migrate`"
    )
