"""Add availability_snapshots.kickoff and availability_pruned_events (retention).

``kickoff`` is the event's start as the scrapers give it (``ScrapeResult.kickoff``),
written by the flushers from the change records; NULL when not known, which
``availability prune`` treats as "never past retention". The index serves
prune and warm-up ("events whose kickoff is older than the cutoff").

``availability_pruned_events`` holds one tombstone per pruned event: a flusher
transaction skips every row of a tombstoned event, so a late change record
for a pruned event cannot bring half of it back.

Both are additions: no backfill (existing snapshots get kickoff NULL until
their next scrape that carries one).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 13:20:00.000000+00:00

"""
from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: Union[str, Sequence[str], None] = "0004"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # nullable, no default: a catalogue-only change, no table rewrite
    op.add_column("availability_snapshots", sa.Column("kickoff", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_availability_snapshots_kickoff", "availability_snapshots", ["kickoff"], unique=False)
    op.create_table(
        "availability_pruned_events",
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("kickoff", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pruned_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_availability_pruned_events")),
    )


def downgrade() -> None:
    op.drop_table("availability_pruned_events")
    op.drop_index("ix_availability_snapshots_kickoff", table_name="availability_snapshots")
    op.drop_column("availability_snapshots", "kickoff")
