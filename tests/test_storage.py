"""The storage module's market column list against the ORM models (no servers needed)."""

from __future__ import annotations

from sqlalchemy import BigInteger, DateTime, Double, Text
from sqlalchemy.dialects.postgresql import JSONB

from availability import storage
from availability.db.models import CompetitorMarketOdds, MarketOdds

# the array type storage sends each kind of column as (JSONB travels as text and is cast)
_SENT_AS = {BigInteger: "bigint", Text: "text", Double: "float8", DateTime: "timestamptz", JSONB: "text"}


def _model_columns(model: type) -> dict[str, str]:
    out = {}
    for column in model.__table__.columns:
        if column.name == "id":  # an identity: never written
            continue
        out[column.name] = next(sent for kind, sent in _SENT_AS.items() if isinstance(column.type, kind))
    return out


def test_market_columns_are_the_market_odds_columns_with_their_types() -> None:
    assert dict(storage.MARKET_COLUMNS) == _model_columns(MarketOdds)
    assert len(dict(storage.MARKET_COLUMNS)) == len(storage.MARKET_COLUMNS)  # no column twice


def test_competitor_columns_add_only_the_source() -> None:
    assert dict([storage.SOURCE_COLUMN, *storage.MARKET_COLUMNS]) == _model_columns(CompetitorMarketOdds)


def test_json_columns_are_the_jsonb_columns() -> None:
    jsonb = {c.name for c in MarketOdds.__table__.columns if isinstance(c.type, JSONB)}
    assert set(storage.JSON_COLUMNS) == jsonb


def test_every_upsert_names_every_market_column() -> None:
    for competitor in (False, True):
        sql = storage._upsert_sql(competitor)
        for name, kind in storage.MARKET_COLUMNS:
            assert name in sql
        assert ("source" in sql) is competitor
