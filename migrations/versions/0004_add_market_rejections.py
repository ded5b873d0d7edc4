"""Add market_rejections: which markets did we refuse, when and why.

A scrape quarantines a market that fails validation instead of refusing the
whole scrape; its change record carries the rejection, and the flusher keeps
one row per (event_id, bookmaker, betpawa_market_id, line, field, reason):
first and last rejection, how many scrapes, the newest value and message.
``betpawa_market_id`` and ``line`` are NULL for a key that could not be read
(the unique key is NULLS NOT DISTINCT). Bounded by the number of distinct bad
markets; ``availability prune-rejections`` deletes rows not seen for N days,
using the index on ``last_rejected_at``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 13:30:00.000000+00:00

"""
from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: Union[str, Sequence[str], None] = "0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "market_rejections",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("bookmaker", sa.Text(), nullable=False),
        sa.Column("betpawa_market_id", sa.Text(), nullable=True),
        sa.Column("line", sa.Double(), nullable=True),
        sa.Column("field", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("first_rejected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_rejected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("times", sa.BigInteger(), server_default=sa.text("1"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_market_rejections")),
        sa.UniqueConstraint(
            "event_id",
            "bookmaker",
            "betpawa_market_id",
            "line",
            "field",
            "reason",
            name="uq_market_rejections_key",
            postgresql_nulls_not_distinct=True,
        ),
    )
    op.create_index(
        op.f("ix_market_rejections_last_rejected_at"),
        "market_rejections",
        ["last_rejected_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_market_rejections_last_rejected_at"), table_name="market_rejections")
    op.drop_table("market_rejections")
