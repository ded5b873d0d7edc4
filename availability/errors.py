"""One exception hierarchy for the whole library.

Every message names the field, the value and what was expected, so a log line
is enough to find the bad input.
"""

from __future__ import annotations


class AvailabilityError(Exception):
    """Base class of every error this library raises on purpose."""


class _FieldError:
    """What a rejection of one market reports (``availability.model.RejectedMarket``).

    Set by the validators where they know it; the class defaults stand for an
    error that names no single field."""

    #: the field of the market that failed, e.g. ``"outcomes[1].odds"``, or ``None``
    field: str | None = None
    #: the offending value as ``repr`` cut to 80 characters (safe to log), or ``None``
    value: str | None = None
    #: ``invalid_key``, ``invalid_value``, ``invalid_text``, ``key_collision`` or ``unencodable``
    reason: str = "invalid_value"
    #: the market's key when it could be read (``None``: unreadable, or not about one market)
    key: tuple[str, float | None] | None = None


class InvalidMarketKey(_FieldError, AvailabilityError, ValueError):
    """A market id or line cannot be normalised into a market key."""

    reason = "invalid_key"


class InvalidScrape(_FieldError, AvailabilityError, ValueError):
    """A scrape failed validation; nothing of it was written.

    Under quarantine (the default of ``MarketCache.apply_scrape``) an invalid
    *market* does not raise: it is listed in the outcome's ``rejected``; this
    is raised for a scrape-level error, or for any error with ``strict=True``."""


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
    price, so the market is rejected (the whole scrape with ``strict=True``). ``key`` is the colliding
    ``MarketKey``; the fix is to key such markets apart (the handicap as the
    line, see docs/rules.md).
    """

    reason = "key_collision"

    def __init__(self, message: str, key: tuple[str, float | None]) -> None:
        super().__init__(message)
        self.key = key

    def __reduce__(self) -> tuple[type, tuple[str, tuple[str, float | None]], dict]:
        return type(self), (str(self), self.key), self.__dict__


class CacheNotReady(AvailabilityError):
    """The shard's cache is cold (Redis lost its data): run `availability warm`."""


class ConfigurationError(AvailabilityError):
    """Settings are missing or inconsistent (e.g. a shard count mismatch)."""


class ServerStartError(AvailabilityError):
    """An embedded Redis or PostgreSQL server could not be started."""


class SchemaNotReady(ConfigurationError):
    """The database was never migrated, or is older than this code: run `availability migrate`."""
