"""Add unavailable_at to market_odds and competitor_market_odds, with partial indexes.

``unavailable_at`` NULL means available, which is what every existing row is:
no backfill. The partial indexes serve "which markets of this event are
unavailable now" and stay small because most markets are available.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 13:00:01.000000+00:00

"""
from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: Union[str, Sequence[str], None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# Spelled exactly as in availability.db.models (UNAVAILABLE_PREDICATE).
_UNAVAILABLE = "unavailable_at IS NOT NULL"


def upgrade() -> None:
    # A nullable column without a default: a catalogue-only change, no table rewrite.
    op.add_column(
        "market_odds",
        sa.Column("unavailable_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "competitor_market_odds",
        sa.Column("unavailable_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "ix_market_odds_unavailable",
        "market_odds",
        ["event_id"],
        unique=False,
        postgresql_where=sa.text(_UNAVAILABLE),
    )
    op.create_index(
        "ix_competitor_market_odds_unavailable",
        "competitor_market_odds",
        ["source", "event_id"],
        unique=False,
        postgresql_where=sa.text(_UNAVAILABLE),
    )


def downgrade() -> None:
    op.drop_index("ix_competitor_market_odds_unavailable", table_name="competitor_market_odds")
    op.drop_index("ix_market_odds_unavailable", table_name="market_odds")
    op.drop_column("competitor_market_odds", "unavailable_at")
    op.drop_column("market_odds", "unavailable_at")
