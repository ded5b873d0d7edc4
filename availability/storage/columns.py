"""The market tables' columns, declared once (a test checks them against :mod:`availability.db.models`)."""

from __future__ import annotations


# ---------------------------------------------------------------- the market columns

# Every column of ``market_odds`` but ``id``, in the order the flusher sends them,
# with the array type it sends them as (``competitor_market_odds`` adds ``source``).
MARKET_COLUMNS: tuple[tuple[str, str], ...] = (
    ("event_id", "bigint"),
    ("betpawa_market_id", "text"),
    ("line", "float8"),
    ("betpawa_market_name", "text"),
    ("handicap_type", "text"),
    ("handicap_home", "float8"),
    ("handicap_away", "float8"),
    ("outcomes", "text"),
    ("market_groups", "text"),
    ("captured_at", "timestamptz"),
    ("seen_at", "timestamptz"),
    ("scraped_at", "timestamptz"),
    ("unavailable_at", "timestamptz"),
)
SOURCE_COLUMN = ("source", "text")
JSON_COLUMNS = ("outcomes", "market_groups")  # sent as text, stored as jsonb
# the key, and the times that move on their own rules; every other column follows the newest scrape
_NOT_STATE = ("event_id", "betpawa_market_id", "line", "captured_at", "seen_at", "scraped_at")
_STATE_COLUMNS = tuple(name for name, _ in MARKET_COLUMNS if name not in _NOT_STATE)
