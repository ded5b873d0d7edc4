"""The demo's options and its one error."""

from __future__ import annotations

from dataclasses import dataclass

from availability.errors import AvailabilityError

__all__ = ["DemoFailed", "DemoOptions"]


class DemoFailed(AvailabilityError):
    """The demo could not run to the end (a child process failed, the flush never drained)."""


@dataclass(frozen=True)
class DemoOptions:
    events: int = 60
    cycles: int = 6
    workers: int = 4
    flushers: int = 2
    seed: int = 1
    market_scale: float = 1.0
    batch_size: int = 50
    prefix: str = "av"
    shards: int = 16
    metrics_port: int | None = None
    drain_timeout_s: float = 120.0
    log_level: str = "ERROR"  # of the child processes (expected warnings, e.g. skipped listings, are counted)
