"""Pure data model: cached markets, snapshots, market keys, canonical encodings,
and the checks every scraped market passes. No I/O here.

:mod:`.core` holds the model itself (keys, times, ``CachedMarket``,
``CachedSnapshot``, the canonical encoding), :mod:`.validation` the reference
checks and coercion, split-row merging and the per-market quarantine
(``screen_markets``), :mod:`.fastpath` the byte-identical fast path for markets
of the common shape, :mod:`.payloads` a scrape's markets reduced to what the
script call carries (``screen_payloads``). Everything is importable from ``availability.model``.
"""

from availability.errors import InvalidMarketKey, InvalidScrape, KeyCollision
from availability.model.core import (
    MAX_ID_LENGTH,
    MAX_NAME_LENGTH,
    CachedMarket,
    CachedSnapshot,
    MarketKey,
    check_text,
    coercion_counts,
    decode_market,
    encode_market,
    field_to_key,
    format_ts,
    from_micros,
    key_sort_order,
    key_to_field,
    market_from_fields,
    market_key,
    market_to_dict,
    normalize_line,
    normalize_market_id,
    parse_ts,
    shown,
    to_micros,
    to_utc,
)
from availability.model.fastpath import fast_market, fast_payload
from availability.model.validation import (
    REJECTION_REASONS,
    RejectedMarket,
    ScreenedMarkets,
    coerce_market,
    encode_checked,
    market_from_dict,
    merge_markets,
    screen_markets,
)
from availability.model.payloads import ScriptMarkets, screen_payloads, screen_payloads_reference

__all__ = [
    "InvalidMarketKey",
    "InvalidScrape",
    "KeyCollision",
    "check_text",
    "shown",
    "CachedMarket",
    "CachedSnapshot",
    "MAX_ID_LENGTH",
    "MAX_NAME_LENGTH",
    "coercion_counts",
    "MarketKey",
    "normalize_line",
    "normalize_market_id",
    "market_key",
    "key_to_field",
    "key_sort_order",
    "field_to_key",
    "encode_market",
    "decode_market",
    "market_from_fields",
    "market_to_dict",
    "market_from_dict",
    "coerce_market",
    "fast_market",
    "fast_payload",
    "merge_markets",
    "REJECTION_REASONS",
    "RejectedMarket",
    "ScreenedMarkets",
    "encode_checked",
    "screen_markets",
    "ScriptMarkets",
    "screen_payloads",
    "screen_payloads_reference",
    "to_utc",
    "to_micros",
    "from_micros",
    "format_ts",
    "parse_ts",
]
