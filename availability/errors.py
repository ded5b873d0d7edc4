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


class CacheNotReady(AvailabilityError):
    """The shard's cache is cold (Redis lost its data): run `availability warm`."""


class ConfigurationError(AvailabilityError):
    """Settings are missing or inconsistent (e.g. a shard count mismatch)."""


class ServerStartError(AvailabilityError):
    """An embedded Redis or PostgreSQL server could not be started."""


class SchemaNotReady(ConfigurationError):
    """The database was never migrated, or is older than this code: run `availability migrate`."""
