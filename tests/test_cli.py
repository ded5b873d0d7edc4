"""The operator's commands, driven as a user drives them: a subprocess running
``python -m availability ...`` against the suite's real servers, checked by
its output and exit status (0 ok, 1 failure or mismatch, 2 usage, configuration
or an unreachable server)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from factory import T0, availability

from availability.cache import MarketCache
from availability.demo import render_report
from availability.harness import free_port

EVENT = 1234  # shard 2 of 16


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single ``Error: ...`` line of a failed command; never a traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def market(market_id: str, line: float | None, name: str, outcomes: list[tuple[str, float]],
           active: bool = True) -> dict:
    return {"betpawa_market_id": market_id, "betpawa_market_name": name, "line": line,
            "handicap_type": "asian" if market_id == "16" else None,
            "handicap_home": line if market_id == "16" else None,
            "handicap_away": -line if market_id == "16" and line is not None else None,
            "outcomes": [{"name": n, "odds": o, "is_active": active} for n, o in outcomes],
            "market_groups": ["main"]}


ONE_X_TWO = market("1", None, "1X2", [("1", 2.1), ("X", 3.3), ("2", 3.6)])
OVER_UNDER = market("18", 2.5, "Over/Under", [("Over", 1.85), ("Under", 1.95)])
HANDICAP_ZERO = market("16", 0.0, "Asian Handicap", [("1", 1.9), ("2", 1.9)])
SUSPENDED = market("11", None, "Both Teams To Score", [("Yes", 1.7), ("No", 2.05)], active=False)


@pytest.fixture
async def one_event(cache: MarketCache) -> MarketCache:
    """EVENT at betpawa: four markets, then Over/Under 2.5 gone from a complete scrape."""
    await cache.apply_scrape(EVENT, "betpawa", [ONE_X_TWO, OVER_UNDER, HANDICAP_ZERO, SUSPENDED], T0)
    await cache.apply_scrape(EVENT, "betpawa", [ONE_X_TWO, HANDICAP_ZERO, SUSPENDED], T0 + timedelta(minutes=5))
    return cache


# ---------------------------------------------------------------- help and usage


@pytest.mark.parametrize("command", ["", "demo", "inspect", "stats", "keys", "migrate", "flush", "warm", "verify"])
def test_every_command_has_help(command: str) -> None:
    result = availability(*([command] if command else []), "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: availability")


def test_a_bad_argument_is_one_error_line_and_exit_2() -> None:
    result = availability("inspect", "not-a-number")
    assert result.returncode == 2
    assert "EVENT" in one_error_line(result)
    assert result.stderr.strip() == one_error_line(result)  # no Usage/Try lines around it
    assert "availability inspect --help" in result.stderr


@pytest.mark.parametrize("args", [("demo", "--prefx", "x"), ("no-such-command",), ("demo", "--events", "0")])
def test_usage_errors_are_one_line_too(args: tuple[str, ...]) -> None:
    result = availability(*args)
    assert result.returncode == 2
    assert result.stderr.strip() == one_error_line(result)


def test_a_bookmaker_that_is_no_slug_is_a_usage_error() -> None:
    result = availability("keys", "1234", "Bet Pawa")
    assert result.returncode == 2
    assert "lowercase slug" in one_error_line(result)


def test_an_unreachable_redis_is_named_with_its_password_masked() -> None:
    port = free_port()
    result = availability("stats", REDIS_URL=f"redis://ops:hunter2@127.0.0.1:{port}/0")
    assert result.returncode == 2, result.stderr
    line = one_error_line(result)
    assert f"cannot reach Redis at redis://ops:***@127.0.0.1:{port}/0" in line
    assert "hunter2" not in result.stderr + result.stdout


def test_demo_with_an_unreachable_database_fails_before_starting_anything(redis_url: str,
                                                                         key_prefix: str) -> None:
    port = free_port()
    result = availability("--prefix", key_prefix, "demo", "--events", "2", "--cycles", "1",
                          REDIS_URL=redis_url, DATABASE_URL=f"postgresql://ops:hunter2@127.0.0.1:{port}/db")
    assert result.returncode == 2, result.stderr
    assert f"cannot reach PostgreSQL at postgresql://ops:***@127.0.0.1:{port}/db" in one_error_line(result)
    assert "hunter2" not in result.stderr + result.stdout


def test_inspect_without_a_redis_url_says_how_to_give_one() -> None:
    result = availability("inspect", "1234")
    assert result.returncode == 2
    assert "REDIS_URL" in one_error_line(result)


# ---------------------------------------------------------------- keys


def test_keys_prints_the_exact_key_names_and_redis_cli_commands() -> None:
    result = availability("keys", str(EVENT), "betpawa")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "event 1234 at betpawa: shard 2 = 1234 % 16" in out
    assert "redis-cli HGETALL '{av:2}:ev:1234:betpawa:unavailable'" in out
    assert "redis-cli HGETALL '{av:2}:ev:1234:betpawa:markets'" in out
    assert "redis-cli XINFO GROUPS '{av:2}:changes'" in out
    assert "redis-cli --scan --pattern '{av:2}:ev:1234:*'" in out


def test_keys_follow_prefix_and_shards_and_never_show_a_password() -> None:
    result = availability("--prefix", "prod", "--shards", "64", "keys", str(EVENT), "sportybet", "--json",
                          REDIS_URL="redis://ops:hunter2@10.1.2.3:6380/3")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["shard"] == EVENT % 64 == 18
    names = [k["name"] for k in report["keys"]]
    assert "{prod:18}:ev:1234:sportybet:unavailable" in names
    assert "prod:config" in names
    command = next(k["command"] for k in report["keys"] if k["name"].endswith(":unavailable"))
    assert command == ("redis-cli -h 10.1.2.3 -p 6380 -n 3 --user ops --askpass "
                       "HGETALL '{prod:18}:ev:1234:sportybet:unavailable'")
    assert "hunter2" not in result.stdout + result.stderr


# ---------------------------------------------------------------- inspect


async def test_inspect_shows_decoded_markets_and_since_when_they_are_unavailable(
    one_event: MarketCache, redis_url: str, key_prefix: str
) -> None:
    result = availability("--prefix", key_prefix, "inspect", str(EVENT), "betpawa", REDIS_URL=redis_url)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "event 1234 at betpawa (shard 2): 4 markets, 1 unavailable" in out
    rows = {line.split()[0]: line for line in out.splitlines() if line.split() and "@" in line.split()[0]}
    assert "unavailable since 2026-11-28 12:05:00" in rows["18@2.5"]
    assert "Over 1.85" in rows["18@2.5"]
    assert "available" in rows["1@_"] and "2026-11-28 12:05:00" in rows["1@_"]  # last confirmed
    assert "16@0.0" in rows  # a handicap of zero is its own market, not "no line"
    assert "suspended" in rows["11@_"]  # suspended is not unavailable


async def test_inspect_json_has_the_contract_field_names(one_event: MarketCache, redis_url: str,
                                                         key_prefix: str) -> None:
    result = availability("--prefix", key_prefix, "inspect", str(EVENT), "--json", REDIS_URL=redis_url)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    (snap,) = report["snapshots"]
    assert snap["bookmaker"] == "betpawa"
    assert snap["last_confirmed_at"] == "2026-11-28T12:05:00.000000Z"
    by_key = {m["key"]: m for m in snap["markets"]}
    gone = by_key["18@2.5"]
    assert gone["is_available"] is False
    assert gone["unavailable_at"] == "2026-11-28T12:05:00.000000Z"
    assert by_key["1@_"]["line"] is None and by_key["16@0.0"]["line"] == 0.0
    assert by_key["11@_"]["is_available"] is True and by_key["11@_"]["suspended"] is True
    assert set(gone) >= {"betpawa_market_id", "betpawa_market_name", "line", "handicap_type", "handicap_home",
                         "handicap_away", "outcomes", "market_groups", "unavailable_at"}


async def test_inspect_of_an_event_nothing_is_cached_for_exits_1(cache: MarketCache, redis_url: str,
                                                                   key_prefix: str) -> None:
    result = availability("--prefix", key_prefix, "inspect", "999", "bet9ja", REDIS_URL=redis_url)
    assert result.returncode == 1
    assert "event 999 at bet9ja: nothing cached" in one_error_line(result)


# ---------------------------------------------------------------- stats


async def test_stats_counts_stream_backlog_pending_and_memory(one_event: MarketCache, redis_url: str,
                                                              key_prefix: str) -> None:
    stream = one_event.keys.changes(2)
    await one_event.client.xgroup_create(stream, "flushers", id="0")
    await one_event.client.xreadgroup("flushers", "someone", {stream: ">"}, count=1)  # delivered, never acked
    result = availability("--prefix", key_prefix, "stats", "--json", REDIS_URL=redis_url)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    shard = report["per_shard"][2]
    assert shard | {"groups": ["flushers"]} == shard
    assert (shard["stream_length"], shard["pending"], shard["lag"]) == (2, 1, 1)
    assert report["totals"]["events"] == 1 and report["totals"]["markets"] == 4
    assert report["totals"]["unavailable"] == 1
    assert report["totals"]["cold_shards"] == []
    assert report["memory"]["bytes_per_market"] > 0

    text = availability("--prefix", key_prefix, "stats", REDIS_URL=redis_url)
    assert text.returncode == 0, text.stderr
    assert "bytes per cached market" in text.stdout


async def test_stats_refuses_a_shard_count_the_deployment_was_not_created_with(
    one_event: MarketCache, redis_url: str, key_prefix: str
) -> None:
    result = availability("--prefix", key_prefix, "--shards", "8", "stats", REDIS_URL=redis_url)
    assert result.returncode == 2
    assert "created with 16 shards" in one_error_line(result)


# ---------------------------------------------------------------- demo


def test_demo_runs_end_to_end_and_verifies_clean(redis_url: str, database_url: str, key_prefix: str,
                                                 redis_client) -> None:
    started = time.monotonic()
    result = availability("--prefix", key_prefix, "demo", "--events", "8", "--cycles", "3", "--workers", "2",
                          "--flushers", "1", "--json", REDIS_URL=redis_url, DATABASE_URL=database_url,
                          timeout=240)
    elapsed = time.monotonic() - started
    assert "Traceback" not in result.stderr, result.stderr
    report = json.loads(result.stdout)
    assert report["verify"] == {"ok": True, "mismatches": 0, "examples": []}, report["verify"]
    assert report["expected"]["ok"], report["expected"]
    assert result.returncode == 0 and report["ok"]
    scrapes = report["scrapes"]
    assert scrapes["applied"] > 0 and scrapes["stale"] > 0  # the slow worker's late and duplicate deliveries
    assert scrapes["results"] == sum(scrapes[k] for k in ("applied", "stale", "failed_fetches", "ignored_empty"))
    assert scrapes["invalid"] == scrapes["errors"] == scrapes["cold"] == 0
    # every row delivered is accounted for: a market of an applied scrape, merged into one, or refused as stale
    assert scrapes["market_observations"] == (scrapes["markets_new"] + scrapes["markets_changed"]
                                              + scrapes["markets_unchanged"] + scrapes["rows_merged"]
                                              + scrapes["rows_in_stale_scrapes"]) > 0
    assert scrapes["rows_merged"] > 0 and scrapes["rows_in_stale_scrapes"] > 0
    pg, transitions = report["postgres"], report["transitions"]
    assert pg["market_odds"] > 0 and pg["competitor_market_odds"] > 0
    assert pg["market_availability_history"] == transitions["became_unavailable"] + transitions["became_available"]
    assert pg["availability_snapshots"] == report["cache"]["snapshots"]
    assert pg["market_odds"] + pg["competitor_market_odds"] == report["cache"]["markets"]
    assert report["servers"]["embedded"] == []  # the given servers were used, none started
    print(f"demo --events 8 --cycles 3: {elapsed:.1f} s")

    # the ending: one busy event compared, and the alert count, the same as a scan of every snapshot says
    assert report["compare"]["same_in_postgres"] and report["compare"]["event_id"] in range(1_000_001, 1_000_009)
    alerts = report["alerts"]
    assert alerts["same_in_postgres"]
    scanned = asyncio.run(_events_with_unavailable_by_scan(redis_url, key_prefix, datetime.fromisoformat(alerts["now"])))
    assert (alerts["events"], alerts["events_any_kickoff"]) == scanned
    assert alerts["events"] > 0

    # the same report for people
    from rich.console import Console

    console = Console(record=True, width=200)
    render_report(report, console)
    text = console.export_text()
    for label in ("scrapes", "transitions", "flush", "postgres", "expected", "verify", "timings"):
        assert f"\n  {label}" in text
    *_, compare_line, alerts_line, verdict = text.rstrip().splitlines()
    assert compare_line.startswith(f"  compare     busiest event {report['compare']['event_id']}: ")
    assert alerts_line.startswith(f"  alerts      {alerts['events']:,} events with unavailable markets, kickoff after ")
    assert "same count from PostgreSQL" in alerts_line
    assert (f"{scrapes['market_observations']:,} rows delivered = {scrapes['markets_new']:,} new + "
            f"{scrapes['markets_changed']:,} odds changed + {scrapes['markets_unchanged']:,} unchanged") in text
    assert text.rstrip().endswith("OK")


async def _events_with_unavailable_by_scan(redis_url: str, prefix: str, now: datetime) -> tuple[int, int]:
    """Events of the demo's feed with an unavailable market in the cache, read
    snapshot by snapshot (not from the alerts index): (kickoff after ``now``, any kickoff)."""
    from availability.demo.feed import Feed, FeedConfig

    feed = Feed(FeedConfig(seed=1, events=8))
    async with MarketCache.from_url(redis_url, prefix=prefix) as cache:
        snapshots = await cache.get_snapshots(feed.event_ids())
    alerting = {e for (e, _), snap in snapshots.items() if any(m.unavailable_at for m in snap.markets)}
    return len({e for e in alerting if feed.kickoff(e) > now}), len(alerting)


async def test_demo_never_writes_into_a_prefix_that_holds_a_deployment(one_event: MarketCache, redis_url: str,
                                                                       database_url: str, key_prefix: str) -> None:
    result = availability("--prefix", key_prefix, "demo", "--events", "2", "--cycles", "1",
                          REDIS_URL=redis_url, DATABASE_URL=database_url)
    assert result.returncode == 2
    assert f"prefix '{key_prefix}'" in one_error_line(result)
    assert "already holds a deployment" in result.stderr


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_ctrl_c_stops_every_server_and_process_the_demo_started() -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "DATABASE_URL") and not k.startswith("AVAILABILITY_")}
    proc = subprocess.Popen([sys.executable, "-m", "availability", "demo", "--events", "8", "--cycles", "500",
                             "--workers", "2", "--flushers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        seen: set[int] = set()
        deadline = time.monotonic() + 90
        lines = []
        while time.monotonic() < deadline:  # until the second cycle runs: servers, workers, flushers all up
            line = proc.stderr.readline()
            lines.append(line)
            seen |= _descendants(proc.pid)
            if line.startswith("cycle 2/"):
                break
            assert line or proc.poll() is None, "".join(lines)
        seen |= _descendants(proc.pid)
        assert len(seen) >= 5, seen  # redis, postgres, 2 workers, 1 flusher (and helpers)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130  # as a shell reports SIGINT
    assert "interrupted" in err and "Traceback" not in err, err
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in seen) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in seen if _alive(p)]


@pytest.mark.slow
def test_ctrl_c_while_the_children_still_start_prints_no_traceback_of_theirs(redis_url: str, database_url: str,
                                                                          key_prefix: str, redis_client) -> None:
    """Ctrl-C reaches the whole process group, children that are still importing
    included: they must not each print a ``KeyboardInterrupt`` traceback."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "DATABASE_URL") and not k.startswith("AVAILABILITY_")}
    env.update(REDIS_URL=redis_url, DATABASE_URL=database_url)
    proc = subprocess.Popen([sys.executable, "-m", "availability", "--prefix", key_prefix, "demo", "--events", "4",
                             "--cycles", "50", "--workers", "4", "--flushers", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, process_group=0)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _descendants(proc.pid):  # the first child was spawned
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "interrupted" in err


# ---------------------------------------------------------------- flush with metrics


async def test_flush_serves_prometheus_metrics_and_stops_cleanly_on_sigterm(
        one_event: MarketCache, redis_url: str, database_url: str, key_prefix: str) -> None:
    import urllib.request

    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "DATABASE_URL") and not k.startswith("AVAILABILITY_")}
    env.update(REDIS_URL=redis_url, DATABASE_URL=database_url)
    proc = subprocess.Popen([sys.executable, "-m", "availability", "--prefix", key_prefix, "flush",
                             "--metrics-port", str(port), "--block-ms", "100"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        body, deadline = "", time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
            except OSError:
                body = ""
            if 'availability_flusher_records_total{outcome="flushed"} 2.0' in body:
                break  # both of the event's scrapes were written
            assert proc.poll() is None, proc.communicate()[1]
            time.sleep(0.2)
        assert 'availability_flusher_records_total{outcome="flushed"} 2.0' in body, body[-2000:]
        assert "availability_flusher_transitions_total" in body
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
