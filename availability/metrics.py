"""Prometheus metrics of the flusher and the cache, in one registry of their own.

``REGISTRY`` holds only this library's metrics, so importing the module twice
(or next to another library's metrics) never clashes; expose it with
:func:`start_metrics_server` or mount it in an existing exporter with
``prometheus_client.make_asgi_app(registry=REGISTRY)``.

Names, as ``curl localhost:PORT/metrics`` prints them::

    availability_flusher_records_total{outcome="flushed"|"dead_letter"}
    availability_flusher_rows_total{table="market_odds"|"competitor_market_odds"|"availability_snapshots"}
    availability_flusher_confirmed_rows_total     complete scrapes' confirmations recorded (once per snapshot)
    availability_flusher_transitions_total
    availability_flusher_batch_seconds            histogram: one PostgreSQL transaction
    availability_flusher_retries_total{target="postgres"|"redis"}
    availability_flusher_dead_letters_total{shard}
    availability_flusher_lag_records{shard}       entries not yet delivered to any flusher
    availability_flusher_pending_records{shard}   delivered, not yet acknowledged
    availability_flusher_lag_seconds              age of the oldest record of the last batch
    availability_flusher_rejections_total         market_rejections rows inserted or advanced
    availability_markets_rejected_total{bookmaker,reason}
                                                  markets a scrape quarantined (MarketCache, per
                                                  applied scrape; reason as in RejectedMarket)
    availability_cache_script_calls_total{form="short"|"full"|"resent"}
                                                  apply_scrape.lua calls: the short form (a snapshot the
                                                  worker remembers), the full form, and short ones sent
                                                  again in full (another application came between)
    availability_subscriber_backlog_records{group,shard}  a registered subscriber group's unacknowledged
                                                  records (set by the flushers' trim; availability.subscribe)
    availability_subscriber_lagging{group,shard}  1 while that backlog is over the group's max_lag
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = [
    "REGISTRY",
    "RECORDS",
    "ROWS",
    "CONFIRMED",
    "TRANSITIONS",
    "BATCH_SECONDS",
    "RETRIES",
    "DEAD_LETTERS",
    "LAG_RECORDS",
    "PENDING_RECORDS",
    "LAG_SECONDS",
    "MARKETS_REJECTED",
    "SCRIPT_CALLS",
    "REJECTIONS",
    "start_metrics_server",
]

REGISTRY = CollectorRegistry(auto_describe=True)

RECORDS = Counter(
    "availability_flusher_records",
    "Change records taken off the streams, by outcome.",
    ["outcome"],
    registry=REGISTRY,
)
ROWS = Counter(
    "availability_flusher_rows",
    "Rows upserted into PostgreSQL, by table.",
    ["table"],
    registry=REGISTRY,
)
CONFIRMED = Counter(
    "availability_flusher_confirmed_rows",
    "Complete scrapes' confirmations recorded, once per (event, bookmaker) snapshot.",
    registry=REGISTRY,
)
TRANSITIONS = Counter(
    "availability_flusher_transitions",
    "Availability transitions written to market_availability_history (replays write none).",
    registry=REGISTRY,
)
BATCH_SECONDS = Histogram(
    "availability_flusher_batch_seconds",
    "Duration of one batch: its PostgreSQL transaction and the acknowledgement.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
RETRIES = Counter(
    "availability_flusher_retries",
    "Attempts that failed on an unreachable server and were retried.",
    ["target"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "availability_flusher_dead_letters",
    "Records moved to a dead-letter stream because they can never be written.",
    ["shard"],
    registry=REGISTRY,
)
MAINTENANCE_FAILURES = Counter(
    "availability_flusher_maintenance_failures",
    "Maintenance tasks (claiming, trimming, gauges) that failed unexpectedly; the flusher carried on.",
    ["task"],
    registry=REGISTRY,
)
LAG_RECORDS = Gauge(
    "availability_flusher_lag_records",
    "Stream entries not yet delivered to any flusher (XINFO GROUPS lag).",
    ["shard"],
    registry=REGISTRY,
)
PENDING_RECORDS = Gauge(
    "availability_flusher_pending_records",
    "Stream entries delivered to a flusher and not yet acknowledged.",
    ["shard"],
    registry=REGISTRY,
)
LAG_SECONDS = Gauge(
    "availability_flusher_lag_seconds",
    "Age of the oldest record in the last batch written.",
    registry=REGISTRY,
)


MARKETS_REJECTED = Counter(
    "availability_markets_rejected",
    "Markets a scrape quarantined (not stored, see ScrapeOutcome.rejected), by bookmaker and reason.",
    ["bookmaker", "reason"],
    registry=REGISTRY,
)
SCRIPT_CALLS = Counter(
    "availability_cache_script_calls",
    "apply_scrape.lua calls by form: short (a snapshot this worker remembers), full, resent (a short one "
    "sent again in full).",
    ["form"],
    registry=REGISTRY,
)
REJECTIONS = Counter(
    "availability_flusher_rejections",
    "market_rejections rows the flusher inserted or advanced (a replayed record advances none).",
    registry=REGISTRY,
)


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> None:
    """Serve ``/metrics`` for :data:`REGISTRY` on ``addr:port`` from a daemon thread.

    Raises:
        ConfigurationError: the port cannot be bound (in use, or privileged);
            the message names the port, so an operator sees which one.
    """
    from availability.errors import ConfigurationError

    try:
        start_http_server(port, addr=addr, registry=REGISTRY)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigurationError(f"--metrics-port: cannot serve metrics on {addr}:{port}: {reason}") from None
