"""Alembic environment of the availability schema.

Where the database URL comes from, first match wins:

1. ``config.attributes["database_url"]`` -- set by ``availability.db.migrate``;
2. ``-x database_url=...`` (or ``-x url=...``) on the alembic command line;
3. the ``sqlalchemy.url`` main option, if set programmatically
   (``Config.set_main_option``) -- alembic.ini itself never holds a URL;
4. the ``DATABASE_URL`` environment variable.

A ready connection can also be passed as ``config.attributes["connection"]``.
Any PostgreSQL scheme is accepted and turned into ``postgresql+psycopg://``.
The password is never logged: only the redacted URL is.
"""

from __future__ import annotations

import logging
import os
from logging.config import fileConfig

from alembic import context
from alembic.util import CommandError
from sqlalchemy import pool

from availability.db.engine import create_engine, redact_url, sqlalchemy_url
from availability.db.migrate import AUTOGENERATE_PLUGINS
from availability.db.models import Base

config = context.config

# The alembic command line configures logging from alembic.ini; a programmatic
# caller (availability.db.migrate, tests) keeps its own logging untouched.
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

log = logging.getLogger("alembic.env")

target_metadata = config.attributes.get("target_metadata", Base.metadata)


def _database_url() -> str:
    x_args = context.get_x_argument(as_dictionary=True)
    candidates = (
        ("config.attributes['database_url']", config.attributes.get("database_url")),
        ("-x database_url", x_args.get("database_url") or x_args.get("url")),
        ("sqlalchemy.url", config.get_main_option("sqlalchemy.url")),
        ("$DATABASE_URL", os.environ.get("DATABASE_URL")),
    )
    for source, url in candidates:
        if url and url.strip():
            url = sqlalchemy_url(url)
            log.info("Database URL from %s: %s", source, redact_url(url))
            return url
    raise CommandError(
        "No database URL: set DATABASE_URL (e.g. "
        "DATABASE_URL=postgresql://user@host:5432/db alembic upgrade head), "
        "pass -x database_url=..., or use availability.db.migrate"
    )


def _configure_options() -> dict:
    options = dict(
        target_metadata=target_metadata,
        compare_type=True,
        compare_server_default=True,
    )
    if AUTOGENERATE_PLUGINS is not None:
        # Alembic's defaults, CHECK constraints by name, partial-index predicates
        options["autogenerate_plugins"] = AUTOGENERATE_PLUGINS
    return options


def run_migrations_offline() -> None:
    """``alembic upgrade --sql``: emit the SQL instead of running it."""
    context.configure(
        url=_database_url(),
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **_configure_options(),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_with(connection) -> None:
    context.configure(connection=connection, **_configure_options())
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_with(connection)
        return
    engine = create_engine(_database_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            _run_with(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
