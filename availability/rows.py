"""Change records -> row values, pure: no Redis, no PostgreSQL, no I/O.

A stream entry decoded into a :class:`~availability.records.ChangeRecord`
becomes row values with :func:`record_rows` (a record that can never become a
row fails here, alone, and is dead-lettered); the flusher gets the same result
in one pass with :func:`availability.fast_rows.entry_rows`, which falls back to
these two. A batch is merged with :func:`build_rows` so every row appears once
per transaction. :mod:`availability.storage` turns a :class:`BatchRows` into SQL.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, Iterable

from availability.db import rejections
from availability.db.convert import HOME_BOOKMAKER
from availability.records import ChangeRecord, RecordError
from availability.rules import advance_meta

__all__ = ["MarketRowKey", "BatchRows", "record_rows", "build_rows"]

MarketRowKey = tuple[str | None, int, str, float | None]  # (source or None for home, event, market id, line)


@dataclass
class _MarketRow:
    """A market row to upsert, merged over every record of the batch that changed it."""

    source: str | None
    event_id: int
    betpawa_market_id: str
    line: float | None
    values: tuple  # name, handicap_type, handicap_home, handicap_away, outcomes json, groups json
    scraped_at: datetime  # the version: the newest record's scrape
    unavailable_at: datetime | None
    captured: datetime | None  # newest scrape of the batch that changed the odds, if any
    seen: datetime | None  # newest scrape of the batch known to have listed the market, if any


@dataclass
class _SnapshotRow:
    event_id: int
    bookmaker: str
    last_scraped_at: datetime
    captured_at: datetime | None
    last_confirmed_at: datetime | None
    last_complete_at: datetime | None  # newest complete scrape: it confirmed every market it left available
    removed_at: datetime | None
    kickoff: datetime | None = None  # of the newest record that carries one


@dataclass
class BatchRows:
    """Everything one transaction writes, merged so each row appears once."""

    markets: dict[MarketRowKey, _MarketRow] = field(default_factory=dict)
    history: set[tuple] = field(default_factory=set)
    snapshots: dict[tuple[int, str], _SnapshotRow] = field(default_factory=dict)
    rejections: set[rejections.RejectionRow] = field(default_factory=set)  # market_rejections rows
    # every market of every record was new to the cache (flag "n"), as in a first cycle: its rows
    # are most likely new to PostgreSQL too (see storage.batch.copy_new_markets)
    all_new: bool = False
    # how storage lays the market rows out for writing, computed once (storage.batch.prepare),
    # ahead of the write when the flusher prepares the batch while the previous one is written
    layout: Any = field(default=None, repr=False, compare=False)

    @property
    def snapshot_keys(self) -> list[tuple[int, str]]:
        return sorted(self.snapshots)


# key, values, captured (this scrape, or None: the odds did not change), seen (or None), unavailable
_RecordMarket = tuple[MarketRowKey, tuple, "datetime | None", "datetime | None", bool]


@dataclass(frozen=True)
class _RecordRows:
    """One record's contribution, converted up front so a bad record fails alone:
    its row values, and of the record only what :func:`build_rows` reads (atoms and
    tuples of atoms: a batch of them costs the garbage collector next to nothing)."""

    event_id: int
    bookmaker: str
    scraped_at: datetime
    kind: str
    completeness: str
    lists_markets: bool
    kickoff: datetime | None
    odds_changed: bool  # some market's odds changed (new or changed)
    all_new: bool  # every market of the record is new to the cache (flag "n"; true when it has none)
    markets: tuple[_RecordMarket, ...]
    transitions: tuple[tuple[str, float | None, str], ...] = ()  # (market id, line, transition)
    rejections: tuple[rejections.RejectionRow, ...] = ()


_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode  # NaN: a bad record, not bad SQL


_name_json = lru_cache(maxsize=65536)(_dumps)  # outcome names ("Over", "1", "X") recur everywhere
_isfinite = math.isfinite


def _outcomes_json(outcomes: Any) -> str:
    """The payload's ``[[name, odds, is_active], ...]`` as the JSON the table holds
    (``[{"name": .., "odds": .., "is_active": ..}]``, as ``json.dumps`` writes it), built
    from memoised names: a float's repr is its JSON; NaN or infinities are refused
    (a bad record, not bad SQL)."""
    parts = []
    for o in outcomes:
        name, odds, active = o
        if type(name) is not str or type(odds) is not float or type(active) is not bool or not _isfinite(odds):
            raise RecordError(f"outcome {o!r}: expected name str, finite odds float, is_active bool")
        parts.append(f'{{"name":{_name_json(name)},"odds":{odds!r},"is_active":{"true" if active else "false"}}}')
    return "[" + ",".join(parts) + "]"


@lru_cache(maxsize=4096)
def _groups_json(groups: tuple[str, ...]) -> str:
    """Market groups as JSON, memoised: a few dozen lists recur in every record."""
    if not all(type(g) is str for g in groups):
        raise RecordError(f"market_groups: expected strings, got {list(groups)!r}")
    return _dumps(list(groups))


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def record_rows(record: ChangeRecord, home_bookmaker: str = HOME_BOOKMAKER) -> _RecordRows:
    """Convert one record into row values; raises on data that can never be written.

    A market the scrape listed was seen at its ``scraped_at``; one it stamped
    unavailable was last seen no earlier than the last complete scrape before
    it (``prev_complete``: that scrape listed every market it left available).
    The markets a scrape listed unchanged are not here at all: a complete
    scrape confirms them once, for its snapshot (``last_complete_at``)."""
    source = None if record.bookmaker == home_bookmaker else record.bookmaker
    event_id = record.event_id
    at = record.scraped_at
    markets: list[_RecordMarket] = []
    for change in record.changes:
        _, name, _, handicap_type, handicap_home, handicap_away, outcomes, groups = change.fields
        if type(name) is not str or (handicap_type is not None and type(handicap_type) is not str):
            raise RecordError(f"market {change.key}: name and handicap_type: expected text, got "
                              f"{name!r}, {handicap_type!r}")
        try:
            groups_json = None if groups is None else _groups_json(tuple(groups))
        except (RecordError, TypeError) as exc:  # TypeError: an unhashable entry
            raise RecordError(f"market {change.key}: market_groups: expected strings, got {groups!r}") from exc
        values = (
            name,
            handicap_type,
            _optional_float(handicap_home),
            _optional_float(handicap_away),
            _outcomes_json(outcomes),
            groups_json,
        )
        key = (source, event_id, change.key.betpawa_market_id, change.key.line)
        unavailable = change.became_unavailable
        seen = record.prev_complete if unavailable else at
        markets.append((key, values, at if change.odds_changed else None, seen, unavailable))
    return _RecordRows(
        event_id, record.bookmaker, at, record.kind, record.completeness, record.lists_markets, record.kickoff,
        any(c.odds_changed for c in record.changes), all(c.is_new for c in record.changes), tuple(markets),
        tuple((key.betpawa_market_id, key.line, transition) for key, transition in record.transitions),
        rejections.rejection_rows(record),
    )


def _newest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None or (b is not None and b > a) else a


def build_rows(converted: Iterable[_RecordRows]) -> BatchRows:
    """Merge the rows of a batch: a row touched by several records appears once.

    The newest record gives a market row its state; ``captured_at`` is the
    newest scrape that changed the odds and ``seen_at`` the newest known to
    have listed the market, whichever record they come from (and PostgreSQL
    keeps the newer of those and what the row holds: any commit order gives
    the same row).
    """
    rows = BatchRows()
    per_snapshot: dict[tuple[int, str], list[_RecordRows]] = {}
    markets = rows.markets
    all_new = True
    for rr in sorted(converted, key=lambda r: r.scraped_at):
        at = rr.scraped_at
        all_new = all_new and rr.all_new
        per_snapshot.setdefault((rr.event_id, rr.bookmaker), []).append(rr)
        for key, values, captured, seen, unavailable in rr.markets:
            row = markets.get(key)
            if row is None:
                markets[key] = _MarketRow(
                    key[0], key[1], key[2], key[3], values, at, at if unavailable else None, captured, seen
                )
            else:
                if at >= row.scraped_at:  # records are sorted: this one is newer
                    row.values, row.scraped_at = values, at
                    row.unavailable_at = at if unavailable else None
                row.captured = _newest(row.captured, captured)
                row.seen = _newest(row.seen, seen)
        rows.rejections.update(rr.rejections)
        for market_id, line, transition in rr.transitions:
            rows.history.add((rr.event_id, rr.bookmaker, market_id, line, transition, at))
    for (event_id, bookmaker), records in per_snapshot.items():
        snap = _SnapshotRow(event_id, bookmaker, records[-1].scraped_at, None, None, None, None)
        for rr in records:  # oldest first, replaying apply_scrape.lua's meta rules
            advance_meta(
                snap,
                rr.scraped_at,
                odds_changed=rr.odds_changed,
                listed_markets=rr.lists_markets,
                removed=rr.kind == "removed",
                complete=rr.completeness == "complete",
            )
            if rr.kickoff is not None:
                snap.kickoff = rr.kickoff
        rows.snapshots[(event_id, bookmaker)] = snap
    rows.all_new = all_new and bool(markets)
    return rows


def without_events(rows: BatchRows, events: set[int]) -> BatchRows:
    """``rows`` with every row of ``events`` left out (events ``availability prune``
    removed: a late record must not bring half an event back)."""
    out = BatchRows()
    out.markets = {k: v for k, v in rows.markets.items() if k[1] not in events}
    out.history = {h for h in rows.history if h[0] not in events}
    out.snapshots = {k: v for k, v in rows.snapshots.items() if k[0] not in events}
    out.rejections = {r for r in rows.rejections if r[0] not in events}
    out.all_new = rows.all_new and bool(out.markets)
    return out
