"""CachedMarket <-> PostgreSQL rows, through a real database (``database_url``)."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from factory import T0, UTC

from availability.db.convert import (
    MARKET_FIELDS,
    dict_to_row,
    market_to_row,
    market_to_values,
    model_for,
    row_to_dict,
    row_to_market,
)
from availability.db.engine import create_async_engine, create_engine
from availability.db.models import CompetitorMarketOdds, MarketOdds
from availability.errors import InvalidScrape
from availability.model import CachedMarket

LAGOS = timezone(timedelta(hours=1))
TIMES = dict(captured_at=T0 - timedelta(minutes=10), seen_at=T0, scraped_at=T0)


def _market(line: float | None = 2.5, *, unavailable_at: datetime | None = None, **kw) -> CachedMarket:
    values = dict(
        betpawa_market_id="18",
        betpawa_market_name="Over/Under" if line is not None else "1X2",
        line=line,
        handicap_type="total" if line is not None else None,
        handicap_home=line,
        handicap_away=None if line is None else -line,
        outcomes=[
            {"name": "Over", "odds": 1.85, "is_active": True},
            {"name": "Under", "odds": 1.95, "is_active": False},
        ],
        market_groups=["main", "goals"],
        unavailable_at=unavailable_at,
    )
    values.update(kw)
    return CachedMarket(**values)


@pytest.fixture
def engine(database_url):
    engine = create_engine(database_url, poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()


def _store_and_load(engine, rows):
    with Session(engine, expire_on_commit=False) as session, session.begin():
        session.add_all(rows)
    ids = [(type(r), r.id) for r in rows]
    with Session(engine) as session:  # a new session: nothing comes from the identity map
        return [session.get(cls, id_) for cls, id_ in ids]


# ---------------------------------------------------------------- round trips through PostgreSQL


@pytest.mark.parametrize("bookmaker", ["betpawa", "sportybet"])
@pytest.mark.parametrize("line", [None, 0.0, 2.5, -1.25])
@pytest.mark.parametrize("unavailable_at", [None, T0 - timedelta(minutes=5)], ids=["available", "unavailable"])
def test_market_round_trips_through_the_database(engine, bookmaker, line, unavailable_at):
    market = _market(line, unavailable_at=unavailable_at)
    row = market_to_row(market, event_id=1234, bookmaker=bookmaker, **TIMES)
    (loaded,) = _store_and_load(engine, [row])

    assert row_to_market(loaded) == market
    assert loaded.event_id == 1234
    assert (loaded.captured_at, loaded.seen_at, loaded.scraped_at) == (
        TIMES["captured_at"], TIMES["seen_at"], TIMES["scraped_at"],
    )
    back = row_to_market(loaded)
    assert back.is_available is (unavailable_at is None)
    if back.unavailable_at is not None:
        assert back.unavailable_at.utcoffset() == timedelta(0)
    assert back.line is None if line is None else isinstance(back.line, float)


def test_no_line_and_zero_line_are_two_rows_and_come_back_apart(engine):
    no_line = _market(None, betpawa_market_name="Draw No Bet")
    zero = _market(0.0, betpawa_market_name="Asian Handicap 0")
    rows = [market_to_row(m, event_id=9, bookmaker="betpawa", **TIMES) for m in (no_line, zero)]
    _store_and_load(engine, rows)
    with Session(engine) as session:
        loaded = session.scalars(sa.select(MarketOdds).where(MarketOdds.event_id == 9)).all()
    by_line = {m.line: m for m in map(row_to_market, loaded)}
    assert set(by_line) == {None, 0.0} and len(loaded) == 2
    assert by_line[None] == no_line and by_line[0.0] == zero


def test_competitor_rows_get_source_and_live_in_their_table(engine):
    market = _market(1.5)
    home = market_to_row(market, event_id=1, bookmaker="betpawa", **TIMES)
    sporty = market_to_row(market, event_id=1, bookmaker="sportybet", **TIMES)
    bet9ja = market_to_row(market, event_id=1, bookmaker="bet9ja", **TIMES)
    assert type(home) is MarketOdds and not hasattr(home, "source")
    assert type(sporty) is CompetitorMarketOdds and sporty.source == "sportybet"
    assert bet9ja.source == "bet9ja"
    _store_and_load(engine, [home, sporty, bet9ja])
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM market_odds")).scalar_one() == 1
        assert conn.execute(
            sa.text("SELECT array_agg(source ORDER BY source) FROM competitor_market_odds")
        ).scalar_one() == ["bet9ja", "sportybet"]


def test_another_home_bookmaker_can_be_named(engine):
    row = market_to_row(_market(), event_id=1, bookmaker="sportybet", home_bookmaker="sportybet", **TIMES)
    assert type(row) is MarketOdds
    row = market_to_row(_market(), event_id=1, bookmaker="betpawa", home_bookmaker="sportybet", **TIMES)
    assert type(row) is CompetitorMarketOdds and row.source == "betpawa"


def test_core_rows_and_bulk_values_round_trip(engine):
    markets = [
        _market(None),
        _market(0.0),
        _market(2.5, unavailable_at=T0),
        _market(3.5, market_groups=None, handicap_type=None, handicap_home=None, handicap_away=None),
    ]
    values = [market_to_values(m, event_id=77, bookmaker="bet9ja", **TIMES) for m in markets]
    assert all(v["source"] == "bet9ja" for v in values)
    assert "id" not in values[0]
    table = CompetitorMarketOdds.__table__
    with engine.begin() as conn:
        conn.execute(sa.insert(table), values)
        rows = conn.execute(sa.select(table).order_by(table.c.line.asc().nulls_first())).all()
    assert [row_to_market(r) for r in rows] == markets  # Core Row
    assert [row_to_market(r._mapping) for r in rows] == markets  # mapping
    assert [row_to_market(dict(r._mapping)) for r in rows] == markets  # plain dict


async def test_async_engine_round_trip(database_url):
    from sqlalchemy.ext.asyncio import AsyncSession

    engine = create_async_engine(database_url, poolclass=sa.pool.NullPool)
    try:
        market = _market(None, unavailable_at=T0)
        async with AsyncSession(engine) as session, session.begin():
            session.add(market_to_row(market, event_id=5, bookmaker="betpawa", **TIMES))
        async with AsyncSession(engine) as session:
            row = (await session.scalars(sa.select(MarketOdds))).one()
            assert row_to_market(row) == market
    finally:
        await engine.dispose()


def test_upserted_unavailable_at_is_carried_back(engine):
    """The flusher's shape: upsert the values, read the CachedMarket back."""
    from sqlalchemy.dialects.postgresql import insert

    table = MarketOdds.__table__

    def upsert(market):
        stmt = insert(table).values(market_to_values(market, event_id=3, bookmaker="betpawa", **TIMES))
        stmt = stmt.on_conflict_do_update(
            constraint="uq_market_odds_key",
            set_={"unavailable_at": stmt.excluded.unavailable_at},
        )
        with engine.begin() as conn:
            conn.execute(stmt)
            return [row_to_market(r) for r in conn.execute(sa.select(table))]

    available = _market(None)
    assert upsert(available) == [available]
    gone = dataclasses.replace(available, unavailable_at=T0)
    assert upsert(gone) == [gone]
    assert upsert(available) == [available]


# ---------------------------------------------------------------- pure conversions


def test_values_are_normalised():
    market = _market(-0.0, unavailable_at=datetime(2026, 11, 28, 13, 0, tzinfo=LAGOS))
    market = dataclasses.replace(market, outcomes=[{"name": "1", "odds": 2, "is_active": True}])
    values = market_to_values(
        market,
        event_id=1,
        bookmaker="betpawa",
        captured_at=datetime(2026, 11, 28, 13, 0, tzinfo=LAGOS),
        seen_at=T0,
        scraped_at=T0,
    )
    assert values["line"] == 0.0 and str(values["line"]) == "0.0"  # -0.0 folded
    assert values["unavailable_at"] == T0 and values["unavailable_at"].tzinfo is UTC
    assert values["captured_at"].tzinfo is UTC
    assert values["outcomes"] == [{"name": "1", "odds": 2.0, "is_active": True}]
    assert isinstance(values["outcomes"][0]["odds"], float)


def test_naive_times_are_refused():
    with pytest.raises(InvalidScrape, match="scraped_at"):
        market_to_row(_market(), event_id=1, bookmaker="betpawa", captured_at=T0,
                      seen_at=T0, scraped_at=datetime(2026, 11, 28, 12, 0))
    with pytest.raises(InvalidScrape, match="unavailable_at"):
        market_to_row(_market(unavailable_at=datetime(2026, 11, 28)), event_id=1, bookmaker="betpawa", **TIMES)


@pytest.mark.parametrize("event_id", ["12", True, 1.0, None])
def test_event_id_must_be_an_integer(event_id):
    with pytest.raises(InvalidScrape, match="event_id"):
        market_to_values(_market(), event_id=event_id, bookmaker="betpawa", **TIMES)


@pytest.mark.parametrize("bookmaker", ["", " sportybet", None, 3])
def test_bookmaker_must_be_a_slug(bookmaker):
    with pytest.raises(InvalidScrape, match="bookmaker"):
        model_for(bookmaker)


def test_model_for():
    assert model_for("betpawa") is MarketOdds
    assert model_for("sportybet") is CompetitorMarketOdds
    assert model_for("bet9ja") is CompetitorMarketOdds


def test_row_to_market_reads_rows_from_before_revision_0002():
    """A row without an ``unavailable_at`` column (revision 0001) is available."""
    values = market_to_values(_market(None), event_id=1, bookmaker="betpawa", **TIMES)
    del values["unavailable_at"]
    assert row_to_market(values) == _market(None)


def test_row_to_market_normalises_line_and_time():
    values = market_to_values(_market(2.5), event_id=1, bookmaker="betpawa", **TIMES)
    values.update(line="2.50", unavailable_at=datetime(2026, 11, 28, 13, 0, tzinfo=LAGOS))
    market = row_to_market(values)
    assert market.line == 2.5 and isinstance(market.line, float)
    assert market.unavailable_at == T0 and market.unavailable_at.tzinfo is UTC


@pytest.mark.parametrize("bookmaker", ["betpawa", "sportybet"])
def test_row_dict_round_trip(bookmaker):
    row = market_to_row(_market(0.0, unavailable_at=T0), event_id=4, bookmaker=bookmaker, **TIMES)
    data = row_to_dict(row)
    assert set(MARKET_FIELDS) <= set(data)
    assert ("source" in data) is (bookmaker != "betpawa")
    again = dict_to_row(data)
    assert type(again) is type(row)
    assert row_to_dict(again) == data
    assert row_to_market(again) == _market(0.0, unavailable_at=T0)


def test_dict_to_row_refuses_unknown_columns():
    data = market_to_values(_market(), event_id=1, bookmaker="betpawa", **TIMES)
    with pytest.raises(InvalidScrape, match="bogus"):
        dict_to_row({**data, "bogus": 1})
    # a home-bookmaker "source" is accepted and dropped: market_odds has no such column
    assert type(dict_to_row({**data, "source": "betpawa"})) is MarketOdds
