"""A short run of ``scripts/chaos.py``: every fault kind and every family of bad
input, with nothing lost, duplicated or wrong (the long run is in the README)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "chaos.py"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_short_chaos_run_loses_duplicates_and_breaks_nothing():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--duration", "20", "--events", "12", "--faults", "12", "--seed", "7",
         "--json"],
        capture_output=True, text=True, timeout=220,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(report["faults"]) == {"worker_kill", "flusher_kill", "redis_stop_cont", "redis_kill_aof",
                                     "redis_empty_warm", "pg_immediate", "redis_client_kill", "pg_terminate"}
    assert (report["lost"], report["duplicated"], report["wrong"], report["held_back"]) == (0, 0, 0, 0)
    assert report["flusher_exits"] == []
    assert report["bad_inputs"] > 0 and report["bad_refused"] > 0 and report["bad_accepted"] == 0
    # a bad scrape queued to a worker that was then killed is neither applied nor answered
    assert report["bad_refused"] + report["bad_unanswered"] == report["bad_inputs"]
    assert report["transitions"] > 0 and report["deliveries"].get("applied", 0) > 0
