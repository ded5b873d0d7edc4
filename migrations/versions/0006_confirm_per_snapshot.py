"""Confirmations once per snapshot; a market's last confirmation is derived.

A complete scrape confirms every market it leaves available, so the flusher
no longer rewrites each unchanged market row to move its
``last_confirmed_at`` (that rewrite was nearly all of a steady cycle's WAL).
The fact is recorded once per (event, bookmaker):

* ``availability_snapshots.last_complete_at``: the newest complete scrape.
* ``market_odds.seen_at`` / ``competitor_market_odds.seen_at`` (the old
  ``last_confirmed_at``, renamed so no reader takes it for the whole
  answer): the newest scrape known to have listed the market from its own
  records -- the scrapes that wrote the row, the partial scrapes that listed
  it unchanged, and, for a market stamped unavailable, the last complete
  scrape before the stamp. NULL until one of those records is written.
* ``captured_at`` may be NULL for a moment: a market row created by a record
  that did not change its odds (a stamp, a return, a partial confirmation)
  committed before the record that created the market.

A market's last confirmation, exactly as the change records say whatever the
order they committed in, is then::

    CASE WHEN unavailable_at IS NULL THEN GREATEST(seen_at, last_complete_at) ELSE seen_at END

(an available market was listed by the newest complete scrape, unless it
arrived or returned after it, and then its own record says so). The views
``market_odds_confirmed`` and ``competitor_market_odds_confirmed`` give every
column of the tables plus that ``last_confirmed_at``; the application's own
readers compute the same expression (``availability.db.models.LAST_CONFIRMED_SQL``).
``market_odds_confirmed`` joins the snapshots of bookmaker ``betpawa``, the
home bookmaker.

The market tables get ``fillfactor = 80``: the rows that do change (new odds)
are then mostly rewritten in place (HOT, no new index entries) on pages that
keep room for it. It applies to pages written from now on.

Downgrade writes the derived value back into every row (and the scrape time
into a NULL ``captured_at``), so nothing is lost either way.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 13:20:00.000000+00:00

"""
from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: Union[str, Sequence[str], None] = "0005"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# Spelled exactly as availability.db.models.LAST_CONFIRMED_SQL (m: the market row, s: its snapshot).
_LAST_CONFIRMED = (
    "CASE WHEN m.unavailable_at IS NULL THEN GREATEST(m.seen_at, s.last_complete_at) ELSE m.seen_at END"
)
_HOME = "betpawa"
_TABLES = ("market_odds", "competitor_market_odds")


def _snapshot_join(table: str) -> str:
    bookmaker = "m.source" if table == "competitor_market_odds" else f"'{_HOME}'"
    return f"availability_snapshots s ON s.event_id = m.event_id AND s.bookmaker = {bookmaker}"


def upgrade() -> None:
    op.add_column("availability_snapshots", sa.Column("last_complete_at", sa.DateTime(timezone=True), nullable=True))
    for table in _TABLES:
        op.alter_column(table, "last_confirmed_at", new_column_name="seen_at", nullable=True)
        op.alter_column(table, "captured_at", nullable=True)
        op.execute(f"ALTER TABLE {table} SET (fillfactor = 80)")
        op.execute(
            f"CREATE VIEW {table}_confirmed AS SELECT m.*, {_LAST_CONFIRMED} AS last_confirmed_at "
            f"FROM {table} m LEFT JOIN {_snapshot_join(table)}"
        )


def downgrade() -> None:
    for table in _TABLES:
        op.execute(f"DROP VIEW {table}_confirmed")
        op.execute(f"ALTER TABLE {table} RESET (fillfactor)")
        op.execute(
            f"UPDATE {table} AS t SET seen_at = COALESCE(d.last_confirmed_at, t.scraped_at),"
            f" captured_at = COALESCE(t.captured_at, t.scraped_at)"
            f" FROM (SELECT m.id, {_LAST_CONFIRMED} AS last_confirmed_at FROM {table} m"
            f" LEFT JOIN {_snapshot_join(table)}) AS d WHERE d.id = t.id"
        )
        op.alter_column(table, "captured_at", nullable=False)
        op.alter_column(table, "seen_at", new_column_name="last_confirmed_at", nullable=False)
    op.drop_column("availability_snapshots", "last_complete_at")
