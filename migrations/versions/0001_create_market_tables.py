"""Create the market tables: current odds, competitor odds, availability history, snapshots.

Lines are NULL for markets without one; every unique key that contains
``line`` is NULLS NOT DISTINCT (PostgreSQL 15+) so a NULL line is a single
value that never duplicates and never collides with a real 0.0 line
(failure 3 in docs/domain.md).

``unavailable_at`` and the partial indexes on it come in revision 0002.

Revision ID: 0001
Revises:
Create Date: 2026-11-28 13:00:00.000000+00:00

"""
from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def _market_columns() -> list[sa.Column]:
    """The columns market_odds and competitor_market_odds share (minus ``id``)."""
    return [
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("betpawa_market_id", sa.Text(), nullable=False),
        sa.Column("line", sa.Double(), nullable=True),
        sa.Column("betpawa_market_name", sa.Text(), nullable=False),
        sa.Column("handicap_type", sa.Text(), nullable=True),
        sa.Column("handicap_home", sa.Double(), nullable=True),
        sa.Column("handicap_away", sa.Double(), nullable=True),
        sa.Column("outcomes", postgresql.JSONB(), nullable=False),
        sa.Column("market_groups", postgresql.JSONB(), nullable=True),
        sa.Column("captured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_confirmed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("scraped_at", sa.DateTime(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "market_odds",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        *_market_columns(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_market_odds")),
        sa.UniqueConstraint(
            "event_id",
            "betpawa_market_id",
            "line",
            name="uq_market_odds_key",
            postgresql_nulls_not_distinct=True,
        ),
    )

    op.create_table(
        "competitor_market_odds",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        *_market_columns(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_competitor_market_odds")),
        sa.UniqueConstraint(
            "source",
            "event_id",
            "betpawa_market_id",
            "line",
            name="uq_competitor_market_odds_key",
            postgresql_nulls_not_distinct=True,
        ),
    )

    op.create_table(
        "market_availability_history",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("bookmaker", sa.Text(), nullable=False),
        sa.Column("betpawa_market_id", sa.Text(), nullable=False),
        sa.Column("line", sa.Double(), nullable=True),
        sa.Column("transition", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "recorded_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "transition IN ('became_unavailable', 'became_available')",
            name=op.f("ck_market_availability_history_transition"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_market_availability_history")),
        sa.UniqueConstraint(
            "event_id",
            "bookmaker",
            "betpawa_market_id",
            "line",
            "transition",
            "at",
            name="uq_market_availability_history_transition",
            postgresql_nulls_not_distinct=True,
        ),
    )
    op.create_index(
        op.f("ix_market_availability_history_event_id_bookmaker_at"),
        "market_availability_history",
        ["event_id", "bookmaker", "at"],
        unique=False,
    )

    op.create_table(
        "availability_snapshots",
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("bookmaker", sa.Text(), nullable=False),
        sa.Column("last_scraped_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("captured_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("event_id", "bookmaker", name=op.f("pk_availability_snapshots")),
    )


def downgrade() -> None:
    op.drop_table("availability_snapshots")
    op.drop_index(
        op.f("ix_market_availability_history_event_id_bookmaker_at"),
        table_name="market_availability_history",
    )
    op.drop_table("market_availability_history")
    op.drop_table("competitor_market_odds")
    op.drop_table("market_odds")
