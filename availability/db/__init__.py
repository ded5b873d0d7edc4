"""PostgreSQL side of the availability layer: ORM models, engines, migrations, converters.

Submodules:

* :mod:`availability.db.models` -- the SQLAlchemy 2 typed ORM (the schema contract);
* :mod:`availability.db.engine` -- URL normalisation (psycopg 3) and engine helpers;
* :mod:`availability.db.migrate` -- Alembic upgrade/downgrade/check/current, usable from code;
* :mod:`availability.db.convert` -- ``CachedMarket`` <-> ORM rows / plain dicts.
"""

from __future__ import annotations

from availability.db.engine import (
    create_async_engine,
    create_engine,
    libpq_url,
    redact_url,
    sqlalchemy_url,
)
from availability.db.models import (
    AvailabilitySnapshot,
    Base,
    CompetitorMarketOdds,
    MarketAvailabilityHistory,
    MarketOdds,
)

__all__ = [
    "Base",
    "MarketOdds",
    "CompetitorMarketOdds",
    "MarketAvailabilityHistory",
    "AvailabilitySnapshot",
    "sqlalchemy_url",
    "libpq_url",
    "redact_url",
    "create_engine",
    "create_async_engine",
]
