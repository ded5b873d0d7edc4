"""``availability demo``: the whole pipeline on real servers, with a synthetic feed.

What runs (every part a separate OS process, as in production)::

    parent        starts (or reuses) Redis and PostgreSQL, migrates, warms,
                  drives the cycles, shows progress, drains, verifies, reports
    workers (W)   scrape their share of the events from the feed each cycle and
                  store them with EventCoordinator.store_batch_results; one of
                  them reconciles each bookmaker's listing first
    flushers (F)  Flusher.run: the shards' change streams -> PostgreSQL

The messy parts are on purpose. Odd-numbered workers are slow: they hold
~10% of their scrapes back and deliver them a cycle late, after the newer
scrape of the same event (refused as stale). Every worker re-sends ~3% of its
scrapes (a retry after a timeout) and scrapes ~3% of its neighbour's events
too (a second scraper on the same event): both refused as stale.

Everything is deterministic given the seed: the parent lets each cycle's
listing phase finish before its scrape phase, and each worker delivers in a
fixed order, so each worker can replay its events through the pure reference
rules (:func:`availability.rules.apply_to_snapshot`) and the
demo checks the cache against that expectation, besides running ``verify``
(cache against PostgreSQL).
"""

from availability.demo.options import DemoFailed, DemoOptions
from availability.demo.pipeline import Progress, run
from availability.demo.replay import delivery_plan
from availability.demo.report import ProgressDisplay, keep_servers_hint, render_report

__all__ = ["DemoFailed", "DemoOptions", "Progress", "ProgressDisplay", "delivery_plan", "keep_servers_hint",
           "render_report", "run"]
