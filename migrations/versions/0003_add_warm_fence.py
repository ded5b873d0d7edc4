"""Add availability_fences: warm-up fences out flusher batches read before it.

When Redis loses its data while a flusher holds a batch it has not committed
yet (PostgreSQL was down, say), ``availability warm`` reloads Redis from
PostgreSQL without that batch. If the flusher committed it afterwards,
PostgreSQL would hold a change that Redis no longer knows about, for good.
Warm-up therefore bumps the generation of its prefix (under a row lock) before
it reads PostgreSQL, and every flusher transaction checks, under a share lock
on the same row, that the generation is still the one it read before it read
its batch from Redis; otherwise the batch is not written.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 12:00:00.000000+00:00

"""
from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: Union[str, Sequence[str], None] = "0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "availability_fences",
        sa.Column("prefix", sa.Text(), nullable=False),
        sa.Column("generation", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("prefix", name=op.f("pk_availability_fences")),
    )


def downgrade() -> None:
    op.drop_table("availability_fences")
