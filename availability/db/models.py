"""SQLAlchemy 2 ORM models of the PostgreSQL schema.

The table and column names are a contract: the flusher, the warm-up and the
history readers rely on them. Alembic revisions under ``migrations/versions``
create exactly this schema; ``availability.db.migrate.check`` fails when the
two drift apart.

Key points:

* ``line`` is ``NULL`` for a market without a line; ``0.0`` is a real line.
  The unique keys are declared ``NULLS NOT DISTINCT`` (PostgreSQL 15+), so a
  ``NULL`` line is one value that never duplicates and never equals ``0.0``
  (failure 3 in docs/domain.md was a ``COALESCE(line, 0)`` index that merged them).
* ``unavailable_at`` ``NULL`` means available; it arrives in revision 0002
  together with the partial indexes that find the unavailable markets of an
  event.
* ``scraped_at`` is the scrape time whose state a row reflects; writers refuse
  to overwrite a row with an older one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Double,
    Identity,
    Index,
    MetaData,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "NAMING_CONVENTION",
    "TRANSITIONS",
    "BECAME_UNAVAILABLE",
    "BECAME_AVAILABLE",
    "Base",
    "MarketOddsMixin",
    "MarketOdds",
    "CompetitorMarketOdds",
    "MarketAvailabilityHistory",
    "AvailabilitySnapshot",
    "AvailabilityFence",
    "MarketRejection",
    "AvailabilityPrunedEvent",
    "AvailabilitySetting",
    "LAST_CONFIRMED_SQL",
]

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

BECAME_UNAVAILABLE = "became_unavailable"
BECAME_AVAILABLE = "became_available"
TRANSITIONS: tuple[str, str] = (BECAME_UNAVAILABLE, BECAME_AVAILABLE)

# Both partial indexes use this predicate; the migration spells it the same way.
UNAVAILABLE_PREDICATE = "unavailable_at IS NOT NULL"

#: A market's last confirmation (the last scrape that listed it), derived: ``m`` is its
#: row, ``s`` its ``availability_snapshots`` row. A complete scrape confirms every market
#: it leaves available, once, in ``s.last_complete_at``; ``m.seen_at`` holds what only the
#: market's own records say (see migrations/versions/0006). Spelled the same in 0006's views.
LAST_CONFIRMED_SQL = (
    "CASE WHEN m.unavailable_at IS NULL THEN GREATEST(m.seen_at, s.last_complete_at) ELSE m.seen_at END"
)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _tstz(nullable: bool, **kw: Any) -> Any:
    return mapped_column(DateTime(timezone=True), nullable=nullable, **kw)


class MarketOddsMixin:
    """Columns shared by ``market_odds`` and ``competitor_market_odds``."""

    # sort_order keeps ``id`` first, before a subclass's own columns (``source``)
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True, sort_order=-1)
    event_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    betpawa_market_id: Mapped[str] = mapped_column(Text, nullable=False)
    # NULL = a market without a line; 0.0 is a real line (a handicap of zero).
    line: Mapped[float | None] = mapped_column(Double, nullable=True)
    betpawa_market_name: Mapped[str] = mapped_column(Text, nullable=False)
    handicap_type: Mapped[str | None] = mapped_column(Text, nullable=True)
    handicap_home: Mapped[float | None] = mapped_column(Double, nullable=True)
    handicap_away: Mapped[float | None] = mapped_column(Double, nullable=True)
    outcomes: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, nullable=False)
    market_groups: Mapped[list[str] | None] = mapped_column(JSONB, nullable=True)
    # odds last changed; NULL only until the record that created the market is written
    # (a later record that did not change the odds committed first; revision 0006)
    captured_at: Mapped[datetime | None] = _tstz(True)
    # the newest scrape known, from this market's own records, to have listed it; the
    # market's last confirmation is LAST_CONFIRMED_SQL over this and its snapshot (0006)
    seen_at: Mapped[datetime | None] = _tstz(True)
    # the scrape time whose state this row reflects (never overwritten by an older one)
    scraped_at: Mapped[datetime] = _tstz(False)
    # NULL = available; otherwise when the market was first seen missing (revision 0002)
    unavailable_at: Mapped[datetime | None] = _tstz(True)

    def __repr__(self) -> str:
        source = getattr(self, "source", None)
        where = f"source={source!r}, " if source is not None else ""
        return (
            f"{type(self).__name__}({where}event_id={self.event_id!r}, "
            f"betpawa_market_id={self.betpawa_market_id!r}, line={self.line!r}, "
            f"unavailable_at={self.unavailable_at!r})"
        )


class MarketOdds(MarketOddsMixin, Base):
    """Current state of the home bookmaker's (BetPawa) markets."""

    __tablename__ = "market_odds"
    __table_args__ = (
        UniqueConstraint(
            "event_id",
            "betpawa_market_id",
            "line",
            name="uq_market_odds_key",
            postgresql_nulls_not_distinct=True,
        ),
        Index(
            "ix_market_odds_unavailable",
            "event_id",
            postgresql_where=text(UNAVAILABLE_PREDICATE),
        ),
    )


class CompetitorMarketOdds(MarketOddsMixin, Base):
    """Current state of the competitors' markets; ``source`` is the bookmaker slug."""

    __tablename__ = "competitor_market_odds"

    source: Mapped[str] = mapped_column(Text, nullable=False)

    __table_args__ = (
        UniqueConstraint(
            "source",
            "event_id",
            "betpawa_market_id",
            "line",
            name="uq_competitor_market_odds_key",
            postgresql_nulls_not_distinct=True,
        ),
        Index(
            "ix_competitor_market_odds_unavailable",
            "source",
            "event_id",
            postgresql_where=text(UNAVAILABLE_PREDICATE),
        ),
    )


class MarketAvailabilityHistory(Base):
    """Append-only availability transitions (failure 9: they must be recorded).

    The unique key covers the whole transition including ``at``, so a replayed
    write (``INSERT ... ON CONFLICT DO NOTHING``) never duplicates a row, also
    for a ``NULL`` line.
    """

    __tablename__ = "market_availability_history"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    event_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    bookmaker: Mapped[str] = mapped_column(Text, nullable=False)
    betpawa_market_id: Mapped[str] = mapped_column(Text, nullable=False)
    line: Mapped[float | None] = mapped_column(Double, nullable=True)
    transition: Mapped[str] = mapped_column(Text, nullable=False)
    at: Mapped[datetime] = _tstz(False)
    recorded_at: Mapped[datetime] = _tstz(False, server_default=func.now())

    __table_args__ = (
        CheckConstraint(
            "transition IN ('became_unavailable', 'became_available')",
            name="transition",
        ),
        UniqueConstraint(
            "event_id",
            "bookmaker",
            "betpawa_market_id",
            "line",
            "transition",
            "at",
            name="uq_market_availability_history_transition",
            postgresql_nulls_not_distinct=True,
        ),
        Index(None, "event_id", "bookmaker", "at"),
    )

    def __repr__(self) -> str:
        return (
            f"MarketAvailabilityHistory(event_id={self.event_id!r}, bookmaker={self.bookmaker!r}, "
            f"betpawa_market_id={self.betpawa_market_id!r}, line={self.line!r}, "
            f"transition={self.transition!r}, at={self.at!r})"
        )


class AvailabilitySnapshot(Base):
    """One row per (event, bookmaker): the last applied scrape and event-level times."""

    __tablename__ = "availability_snapshots"

    event_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    bookmaker: Mapped[str] = mapped_column(Text, primary_key=True)
    # the last applied scrape time; warm-up restores it to keep refusing stale scrapes
    last_scraped_at: Mapped[datetime] = _tstz(False)
    captured_at: Mapped[datetime | None] = _tstz(True)
    last_confirmed_at: Mapped[datetime | None] = _tstz(True)
    # the newest complete scrape: it listed every market it left available (revision 0006)
    last_complete_at: Mapped[datetime | None] = _tstz(True)
    # the event vanished from the bookmaker's listing
    removed_at: Mapped[datetime | None] = _tstz(True)
    updated_at: Mapped[datetime] = _tstz(False, server_default=func.now())
    # the event's start as scraped (revision 0005); NULL: not known, never pruned by age
    kickoff: Mapped[datetime | None] = _tstz(True)

    __table_args__ = (Index("ix_availability_snapshots_kickoff", "kickoff"),)

    def __repr__(self) -> str:
        return (
            f"AvailabilitySnapshot(event_id={self.event_id!r}, bookmaker={self.bookmaker!r}, "
            f"last_scraped_at={self.last_scraped_at!r}, removed_at={self.removed_at!r})"
        )


class AvailabilityFence(Base):
    """One row per Redis key prefix: the warm-up generation.

    ``availability warm`` increments ``generation`` before it reads PostgreSQL;
    a flusher commits a batch only while the generation is the one it read
    before reading that batch from Redis (see ``migrations/versions/0003``).
    """

    __tablename__ = "availability_fences"

    prefix: Mapped[str] = mapped_column(Text, primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    updated_at: Mapped[datetime] = _tstz(False, server_default=func.now())

    def __repr__(self) -> str:
        return f"AvailabilityFence(prefix={self.prefix!r}, generation={self.generation!r})"


class MarketRejection(Base):
    """The markets a scrape quarantined: which, when and why (revision 0004).

    One row per ``(event_id, bookmaker, betpawa_market_id, line, field, reason)``
    -- bounded by the number of distinct bad markets, not by the number of
    scrapes. ``betpawa_market_id`` and ``line`` are both ``NULL`` when the key
    itself could not be read. ``times`` counts the distinct rejecting scrapes,
    each once (a record delivered again, or after a newer one, adds nothing);
    ``value`` and ``message`` are the newest ones. Rows not rejected again for
    a while are deleted by ``availability.db.rejections.prune_rejections``.
    """

    __tablename__ = "market_rejections"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    event_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    bookmaker: Mapped[str] = mapped_column(Text, nullable=False)
    betpawa_market_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    line: Mapped[float | None] = mapped_column(Double, nullable=True)
    field: Mapped[str | None] = mapped_column(Text, nullable=True)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    value: Mapped[str | None] = mapped_column(Text, nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    first_rejected_at: Mapped[datetime] = _tstz(False)
    last_rejected_at: Mapped[datetime] = _tstz(False)
    times: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("1"))

    __table_args__ = (
        UniqueConstraint(
            "event_id",
            "bookmaker",
            "betpawa_market_id",
            "line",
            "field",
            "reason",
            name="uq_market_rejections_key",
            postgresql_nulls_not_distinct=True,
        ),
        Index(None, "last_rejected_at"),
    )

    def __repr__(self) -> str:
        return (
            f"MarketRejection(event_id={self.event_id!r}, bookmaker={self.bookmaker!r}, "
            f"betpawa_market_id={self.betpawa_market_id!r}, line={self.line!r}, field={self.field!r}, "
            f"reason={self.reason!r}, times={self.times!r})"
        )


class AvailabilitySetting(Base):
    """Settings of the deployment that the database itself needs (revision 0007).

    ``home_bookmaker``: whose snapshots the view ``market_odds_confirmed``
    joins (``market_odds`` holds that bookmaker's markets). Written by
    ``availability migrate`` from ``AVAILABILITY_HOME_BOOKMAKER``
    (:func:`availability.db.migrate.upgrade` with ``home_bookmaker=``).
    """

    __tablename__ = "availability_settings"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    value: Mapped[str] = mapped_column(Text, nullable=False)
    updated_at: Mapped[datetime] = _tstz(False, server_default=func.now())

    def __repr__(self) -> str:
        return f"AvailabilitySetting(name={self.name!r}, value={self.value!r})"


class AvailabilityPrunedEvent(Base):
    """One tombstone per event ``availability prune`` removed (revision 0005).

    The flusher's write transaction skips every row of a tombstoned event, so
    a change record that arrives after the prune cannot resurrect half of it.
    """

    __tablename__ = "availability_pruned_events"

    event_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kickoff: Mapped[datetime | None] = _tstz(True)
    pruned_at: Mapped[datetime] = _tstz(False, server_default=func.now())

    def __repr__(self) -> str:
        return f"AvailabilityPrunedEvent(event_id={self.event_id!r}, kickoff={self.kickoff!r})"
