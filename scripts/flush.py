#!/usr/bin/env python3
"""Run the write-behind flusher from the environment, for deployments that run scripts.

    REDIS_URL=redis://cache:6379/0 DATABASE_URL=postgresql://app@db/availability \
    AVAILABILITY_PREFIX=av AVAILABILITY_SHARDS=16 python scripts/flush.py [--once] [flush options]

Same as ``availability flush``: every argument is handed to it (see
``availability flush --help``), settings come from the environment
(:mod:`availability.settings`). Stops cleanly on SIGTERM/SIGINT; records it
had not written yet stay pending and are taken over by another flusher.
"""

from __future__ import annotations

import sys

from availability.cli import main

if __name__ == "__main__":
    main(["flush", *sys.argv[1:]])
