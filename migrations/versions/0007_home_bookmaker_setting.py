"""The home bookmaker is a setting of the database, not a literal in a view.

Revision 0006's view ``market_odds_confirmed`` joined the snapshots of
bookmaker ``'betpawa'``: a deployment whose home bookmaker is another
(``AVAILABILITY_HOME_BOOKMAKER``) got ``last_confirmed_at`` from no snapshot
at all, so every available market's last confirmation read as its own
``seen_at``. The application's own readers always used the configured value.

* ``availability_settings`` (``name`` -> ``value``): one row,
  ``home_bookmaker``, ``'betpawa'`` unless ``availability migrate`` (or
  ``availability.db.migrate.upgrade(url, home_bookmaker=...)``) writes the
  configured one.
* ``market_odds_confirmed`` joins the snapshots of that bookmaker.

Downgrade puts back revision 0006's view and drops the table.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 16:30:00.000000+00:00

"""
from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: Union[str, Sequence[str], None] = "0006"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# Spelled exactly as availability.db.models.LAST_CONFIRMED_SQL (m: the market row, s: its snapshot).
_LAST_CONFIRMED = (
    "CASE WHEN m.unavailable_at IS NULL THEN GREATEST(m.seen_at, s.last_complete_at) ELSE m.seen_at END"
)
_HOME_SETTING = "(SELECT value FROM availability_settings WHERE name = 'home_bookmaker')"


def _view(home: str) -> str:
    return (
        f"CREATE VIEW market_odds_confirmed AS SELECT m.*, {_LAST_CONFIRMED} AS last_confirmed_at "
        f"FROM market_odds m LEFT JOIN availability_snapshots s "
        f"ON s.event_id = m.event_id AND s.bookmaker = {home}"
    )


def upgrade() -> None:
    op.create_table(
        "availability_settings",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_availability_settings")),
    )
    op.execute("INSERT INTO availability_settings (name, value) VALUES ('home_bookmaker', 'betpawa')")
    op.execute("DROP VIEW market_odds_confirmed")
    op.execute(_view(_HOME_SETTING))


def downgrade() -> None:
    op.execute("DROP VIEW market_odds_confirmed")
    op.execute(_view("'betpawa'"))
    op.drop_table("availability_settings")
