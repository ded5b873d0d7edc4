"""One exception hierarchy for the whole library.

Every message names the field, the value and what was expected, so a log line
is enough to find the bad input.
"""

from __future__ import annotations


class AvailabilityError(Exception):
    """Base class of every error this library raises on purpose."""


class InvalidMarketKey(AvailabilityError, ValueError):
    """A market id or line cannot be normalised into a market key."""


class InvalidScrape(AvailabilityError, ValueError):
    """A scrape failed validation; nothing of it was written."""


class InvalidRead(AvailabilityError, ValueError):
    """A read (``get_snapshot``, ``get_snapshots``) named an event id or bookmaker
    that cannot exist, e.g. the string ``"1234"`` for the event 1234; nothing was read.

    Not an :class:`InvalidScrape`: no scrape was involved, and a caller that
    handles refused scrapes must not mistake a bad read for one.
    """


class KeyCollision(InvalidScrape):
    """Two different markets of one scrape share a market key ``(betpawa_market_id, line)``.

    Rows that share a key are merged (a bookmaker may split one market's
    outcomes over several rows), but when they carry the same outcome with a
    different price or ``is_active`` they are two markets, e.g. the European
    handicaps 1:0 and 2:0 both sent with ``line=None``. Merging would lose a
    price, so the scrape is refused. ``key`` is the colliding
    ``MarketKey``; the fix is to key such markets apart (the handicap as the
    line, see docs/rules.md).
    """

    def __init__(self, message: str, key: tuple[str, float | None]) -> None:
        super().__init__(message)
        self.key = key

    def __reduce__(self) -> tuple[type, tuple[str, tuple[str, float | None]]]:
        return type(self), (str(self), self.key)


class CacheNotReady(AvailabilityError):
    """The shard's cache is cold (Redis lost its data): run `availability warm`."""


class ConfigurationError(AvailabilityError):
    """Settings are missing or inconsistent (e.g. a shard count mismatch)."""


class ServerStartError(AvailabilityError):
    """An embedded Redis or PostgreSQL server could not be started."""


class SchemaNotReady(ConfigurationError):
    """The database was never migrated, or is older than this code: run `availability migrate`."""
