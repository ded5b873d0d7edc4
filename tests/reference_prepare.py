"""``MarketCache._prepare`` as it was written before the lean client path, kept as
the reference its script arguments are compared with (``tests/test_fast_path.py``).

Every market through ``screen_markets(fast=False)`` (``coerce_market`` +
``encode_market``), the digest over the interleaved pairs by
``_digest_reference``, the pairs built one by one: what ``_prepare`` sends must
stay byte-identical to this for every scrape.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgpack

from availability.cache import MarketCache
from availability.errors import InvalidScrape
from availability.keys import validate_bookmaker, validate_event_id
from availability.model import format_ts, key_to_field, screen_markets, to_micros, to_utc
from availability.scrape import (
    IGNORED_EMPTY,
    INVALID,
    Scrape,
    ScrapeOutcome,
    _digest_reference,
    _Prepared,
    _rejections_blob,
)

__all__ = ["reference_prepare"]


def reference_prepare(cache: MarketCache, scrape: Scrape, mode: str = "scrape", strict: bool = False) -> _Prepared:
    try:
        event_id = validate_event_id(scrape.event_id)
        bookmaker = validate_bookmaker(scrape.bookmaker)
        scraped_at = to_utc(scrape.scraped_at, "scraped_at")
        if not isinstance(scrape.complete, bool):
            raise InvalidScrape(f"complete: expected a boolean, got {scrape.complete!r}")
        if not isinstance(scrape.confirmed_empty, bool):
            raise InvalidScrape(f"confirmed_empty: expected a boolean, got {scrape.confirmed_empty!r}")
        kickoff_us = ""
        if scrape.kickoff is not None:
            kickoff_us = str(to_micros(to_utc(scrape.kickoff, "kickoff")))
            if kickoff_us.startswith("-"):
                raise InvalidScrape(f"kickoff: expected a time after 1970, got {scrape.kickoff!r}")
        expire_ms = 0
        if scrape.expires_at is not None:
            expire_ms = to_micros(to_utc(scrape.expires_at, "expires_at")) // 1000
        raw = scrape.markets
        if raw is None or isinstance(raw, (str, bytes, dict)) or not isinstance(raw, Iterable):
            raise InvalidScrape(f"markets: expected a list of markets, got {raw!r}")
        where = f"event {event_id} at {bookmaker}"
        screened = screen_markets(raw, where, strict=strict, fast=False)
        if scrape.confirmed_empty and screened.rows:
            raise InvalidScrape(
                f"confirmed_empty: True but {screened.rows} markets were given for {where}"
            )
    except InvalidScrape as exc:
        event = scrape.event_id if isinstance(scrape.event_id, int) else None
        bookmaker_ = scrape.bookmaker if isinstance(scrape.bookmaker, str) else None
        return _Prepared(None, None, event, bookmaker_, None,
                         ScrapeOutcome(event, bookmaker_, None, INVALID, error=exc))
    merged, held, rejected = screened.markets, screened.held, screened.rejected
    if mode == "removed":
        completeness = "empty"
    elif not screened.rows:
        if not (scrape.confirmed_empty and scrape.complete):
            return _Prepared(None, None, event_id, bookmaker, scraped_at,
                             ScrapeOutcome(event_id, bookmaker, scraped_at, IGNORED_EMPTY))
        completeness = "empty"
    elif not scrape.complete or screened.key_unreadable or not (merged or held):
        completeness = "partial"
    else:
        completeness = "complete"
    fields = [key_to_field(k) for k in merged] + [key_to_field(k) for k in held]
    payloads = [screened.payloads[k] for k in merged] + [b""] * len(held)
    head: list[Any] = [
        mode,
        str(event_id),
        bookmaker,
        str(to_micros(scraped_at)),
        format_ts(scraped_at),
        completeness,
        str(expire_ms),
        msgpack.packb(fields, use_bin_type=True),
    ]
    rejected_blob = _rejections_blob(rejected)
    pairs: list[Any] = []
    for field_name, payload in zip(fields, payloads):
        pairs.append(field_name)
        pairs.append(payload)
    args = [*head, _digest_reference([*head, rejected_blob, kickoff_us], pairs), rejected_blob, str(len(fields)),
            *pairs, kickoff_us]
    keys = cache.keys.snapshot(event_id, bookmaker).as_list()
    return _Prepared(keys, args, event_id, bookmaker, scraped_at, rejected=rejected,
                     partial=completeness == "partial")
