"""PostgreSQL: every statement the package runs on the availability tables.

One package, one module per concern: :mod:`.columns` (the market columns, once),
:mod:`.connection` (:class:`Database`, :func:`is_transient_pg`), :mod:`.fence`
(the warm-up fence), :mod:`.batch` (a flusher batch), :mod:`.snapshots` (reading
snapshots back for warm-up, ``verify`` and the reader) and :mod:`.queries` (the
command line's and the demo's read-only questions).

The pure layers decide *what* to write (:mod:`availability.rows`); this module
decides *how*: the set-based upserts of a flusher batch, the warm-up fence on
``availability_fences``, and the reads of warm-up and ``verify``. The market
columns are declared once, in :data:`MARKET_COLUMNS`; a test checks them
against :mod:`availability.db.models`.

Per batch, the writes are set-based: one ``INSERT ... SELECT FROM unnest(...)
ON CONFLICT DO UPDATE`` per table, all sent in one pipeline, after a check of
the warm-up fence (:func:`write_batch`); a big all-new batch (a first cycle) is
COPYed straight into its tables, the upserts running only if a key was there
already (:func:`copy_new_markets`). Only markets whose state changed are
written: a complete scrape's confirmation of the rest is one snapshot column,
``last_complete_at``, and a market's last confirmation is derived from it
(:data:`~availability.db.models.LAST_CONFIRMED_SQL`, revision 0006).

The warm-up fence: ``availability warm`` bumps its prefix's generation
(:data:`FENCE_BUMP_SQL`, a row lock) before it reads PostgreSQL. A flusher reads
the generation (:func:`read_generation`) before every read from Redis and, in
the transaction that writes a batch, checks it under a share lock: a batch
read before a warm-up can never commit after it.
"""

from availability.storage.batch import (
    STAGE_MIN_ROWS,
    Written,
    _upsert_sql,
    copy_new_markets,
    market_values,
    prepare,
    stage_markets,
    statements,
    write_batch,
)
from availability.storage.columns import JSON_COLUMNS, MARKET_COLUMNS, SOURCE_COLUMN
from availability.storage.connection import Database, is_transient_pg
from availability.storage.fence import (
    FENCE_BUMP_SQL,
    FENCE_CHECK_SQL,
    FENCE_ENSURE_SQL,
    FENCE_READ_SQL,
    Fenced,
    bump_generation,
    read_generation,
)
from availability.storage.queries import (
    TABLES,
    busiest_event,
    count_snapshots_between,
    stored_events,
    table_counts,
    try_session_lock,
)
from availability.storage.snapshots import PgSnapshot, load_snapshots

__all__ = [
    "MARKET_COLUMNS",
    "SOURCE_COLUMN",
    "JSON_COLUMNS",
    "FENCE_ENSURE_SQL",
    "FENCE_READ_SQL",
    "FENCE_CHECK_SQL",
    "FENCE_BUMP_SQL",
    "STAGE_MIN_ROWS",
    "TABLES",
    "Database",
    "Fenced",
    "Written",
    "PgSnapshot",
    "statements",
    "stage_markets",
    "copy_new_markets",
    "market_values",
    "prepare",
    "write_batch",
    "read_generation",
    "bump_generation",
    "load_snapshots",
    "is_transient_pg",
    "stored_events",
    "count_snapshots_between",
    "table_counts",
    "busiest_event",
    "try_session_lock",
    "_upsert_sql",
]
