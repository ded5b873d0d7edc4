"""A scrape's markets as the script takes them: hash fields and payloads, in order.

:func:`screen_payloads` is what ``MarketCache._prepare`` runs: the result of
:func:`~availability.model.screen_markets` (validate, quarantine, merge split
rows, encode) reduced to what the script call carries -- each stored market's
field (``key_to_field``) and payload, the held keys and the rejections -- without
building a ``CachedMarket`` per market. Markets of the common shape go through
:func:`~availability.model.fastpath.fast_payloads`; only rows sharing a key are
built as objects (``fast_market``) and merged by the reference
:func:`~availability.model.merge_markets`. Any row the fast path declines (or a
market list that is not a ``list``/``tuple``) sends the whole scrape through
``screen_markets``, which words every error. :func:`screen_payloads_reference`
is the same reduction over the reference alone (``screen_markets(fast=False)``);
``tests/test_fast_path.py`` proves the two equal on arbitrary scrapes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from availability.errors import InvalidScrape, KeyCollision
from availability.model.core import MarketKey, coercion_counts, key_to_field
from availability.model.fastpath import fast_market, fast_payloads
from availability.model.validation import (
    RejectedMarket,
    ScreenedMarkets,
    encode_checked,
    merge_markets,
    screen_markets,
)

__all__ = ["ScriptMarkets", "screen_payloads", "screen_payloads_reference"]


class ScriptMarkets(NamedTuple):
    """What the script call needs of a scrape's markets (see :class:`ScreenedMarkets`)."""

    fields: list[str]  # key_to_field of each valid, merged market, in order of first appearance
    payloads: list[bytes]  # their canonical encodings, in the same order
    held: tuple[MarketKey, ...]  # readable keys of rejected markets: present, payload kept as stored
    rejected: tuple[RejectedMarket, ...]
    rows: int  # market rows given

    @property
    def key_unreadable(self) -> bool:
        """A rejected market's key could not be read: the scrape cannot say what is missing."""
        return any(r.key is None for r in self.rejected)


def _of(screened: ScreenedMarkets) -> ScriptMarkets:
    merged, payloads = screened.markets, screened.payloads
    return ScriptMarkets([key_to_field(k) for k in merged], [payloads[k] for k in merged], screened.held,
                         screened.rejected, screened.rows)


def screen_payloads_reference(raw: Iterable[Any], where: str, *, strict: bool = False) -> ScriptMarkets:
    """:func:`screen_markets` with the reference alone (``fast=False``), reduced to a :class:`ScriptMarkets`."""
    return _of(screen_markets(raw, where, strict=strict, fast=False))


def screen_payloads(raw: Iterable[Any], where: str, *, strict: bool = False) -> ScriptMarkets:
    """:func:`screen_payloads_reference`'s result (raising what it raises), fast.

    ``strict`` as in :func:`screen_markets`: the first bad market (or a key
    collision) raises instead of being quarantined."""
    if type(raw) is not list and type(raw) is not tuple:
        return _of(screen_markets(raw, where, strict=strict))
    fields: list[str] = []
    payloads: list[bytes] = []
    empty = fast_payloads(raw, fields, payloads)
    if empty < 0:  # a row declined, anything unusual: the reference words it (fast_market for the other rows)
        return _of(screen_markets(raw, where, strict=strict))
    first = dict(zip(fields, payloads))  # keeps each field's first position, and its last payload
    if len(first) == len(fields):
        if empty:
            coercion_counts["empty_market_name"] += empty
        return ScriptMarkets(fields, payloads, (), (), len(fields))
    return _merged(raw, fields, first, empty, where, strict)


def _merged(raw: list | tuple, fields: list[str], first: dict[str, bytes], empty: int, where: str,
            strict: bool) -> ScriptMarkets:
    """Rows sharing a key (a market split over rows): those rows merged as the
    reference merges them (``merge_markets`` over their ``fast_market`` objects,
    in row order, so collisions come in the same order), each merged market
    encoded; every other market keeps its payload."""
    seen: set[str] = set()
    split: set[str] = set()
    for f in fields:
        if f in seen:
            split.add(f)
        seen.add(f)
    markets = []
    for row, f in zip(raw, fields):
        if f in split:
            done = fast_market(row, count=False)
            if done is None:  # (fast_payload took it: cannot happen; the reference decides if it does)
                return _of(screen_markets(raw, where, strict=strict))
            markets.append(done[0])
    if empty:  # counted before a strict collision raises, as the reference counts
        coercion_counts["empty_market_name"] += empty
    collisions: list[KeyCollision] | None = None if strict else []
    merged = merge_markets(markets, collisions=collisions)  # strict: raises the first collision
    rejected: list[RejectedMarket] = []
    held: dict[MarketKey, None] = {}
    for exc in collisions or ():
        rejected.append(RejectedMarket.of(exc))
        held[MarketKey(*exc.key)] = None
    encoded: dict[str, bytes] = {}
    for key, market in merged.items():
        try:
            encoded[key_to_field(key)] = encode_checked(market, where)
        except InvalidScrape as exc:
            if strict:
                raise
            rejected.append(RejectedMarket.of(exc))
            held[key] = None
    out_fields: list[str] = []
    out_payloads: list[bytes] = []
    for f, payload in first.items():
        if f in split:
            payload = encoded.get(f)  # type: ignore[assignment]
            if payload is None:  # collided or not encodable: held
                continue
        out_fields.append(f)
        out_payloads.append(payload)
    return ScriptMarkets(out_fields, out_payloads, tuple(held), tuple(rejected), len(fields))
