"""Rough edges a new user hit, each driven as a user drives it (a real ``python -m
availability`` process against the suite's real servers, or the library in a
process of its own) and checked by what that user sees: exit status, the one
``Error:`` line, stdout."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import textwrap
from collections import Counter

import pytest
from factory import T0
from test_cli import EVENT, ONE_X_TWO, availability, one_error_line

from availability import InvalidRead, InvalidScrape, MarketCache
from availability.harness import RedisServer

# ---------------------------------------------------------------- malformed URLs: one line, exit 2


def _with_database(redis_url: str, db: str) -> str:
    base = redis_url.rsplit("/", 1)[0] if redis_url.count("/") >= 3 else redis_url
    return f"{base}/{db}"


@pytest.mark.parametrize("url, says", [
    ("foo://127.0.0.1:6379/0", "must specify one of the following schemes"),
    ("not a url", "must specify one of the following schemes"),
    ("redis://127.0.0.1:6379/abc", "database index"),
])
def test_a_malformed_redis_url_is_one_line_and_exit_2(url: str, says: str) -> None:
    result = availability("--redis-url", url, "stats")
    assert result.returncode == 2, result.stderr
    line = one_error_line(result)
    assert "--redis-url" in line and says in line


def test_a_database_index_the_server_does_not_have_is_one_line_and_exit_2(redis_url: str) -> None:
    result = availability("--redis-url", _with_database(redis_url, "99999"), "stats")
    assert result.returncode == 2, result.stderr
    assert "database 99999 does not exist" in one_error_line(result)


@pytest.mark.parametrize("url", ["not a url", "foo://user@host/db", "redis://127.0.0.1:6379/0"])
def test_a_malformed_database_url_for_migrate_is_one_line_and_exit_2(url: str) -> None:
    result = availability("--database-url", url, "migrate")
    assert result.returncode == 2, result.stderr
    line = one_error_line(result)
    assert "--database-url" in line and "PostgreSQL URL" in line


def test_migrate_prints_no_alembic_plugin_lines(database_url: str) -> None:
    result = availability("--database-url", database_url, "migrate")
    assert result.returncode == 0, result.stderr
    assert "setup plugin" not in result.stderr, result.stderr
    assert result.stdout.startswith("migrated ")


def test_migrate_records_the_configured_home_bookmaker(empty_database_url: str) -> None:
    """The view market_odds_confirmed joins the home bookmaker's snapshots: `migrate`
    records AVAILABILITY_HOME_BOOKMAKER in the database (revision 0007)."""
    from availability.db import migrate

    result = availability("--database-url", empty_database_url, "migrate", AVAILABILITY_HOME_BOOKMAKER="homebook")
    assert result.returncode == 0, result.stderr
    assert "home bookmaker homebook" in result.stdout
    assert migrate.home_bookmaker(empty_database_url) == "homebook"


# ---------------------------------------------------------------- a mistyped prefix or event


@pytest.mark.parametrize("command", [["stats"], ["inspect", str(EVENT)], ["flush", "--once"], ["compare", str(EVENT)],
                                     ["verify"]])
async def test_commands_that_must_not_create_a_deployment_refuse_an_unknown_prefix(
        command: list[str], redis_url: str, database_url: str, key_prefix: str, redis_client) -> None:
    result = availability("--prefix", key_prefix, *command, REDIS_URL=redis_url, DATABASE_URL=database_url)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"prefix {key_prefix!r}" in one_error_line(result)
    assert result.stdout == ""
    assert not [k async for k in redis_client.scan_iter(match=f"*{key_prefix}*")]  # nothing was created


async def test_verify_refuses_an_event_stored_nowhere(redis_url: str, database_url: str, key_prefix: str,
                                                      redis_client) -> None:
    cache = MarketCache(redis_client, prefix=key_prefix)
    await cache.mark_ready()
    await cache.apply_scrape(EVENT, "betpawa", [ONE_X_TWO], T0)
    result = availability("--prefix", key_prefix, "verify", "--event", "999", "--event", str(EVENT),
                          REDIS_URL=redis_url, DATABASE_URL=database_url)
    assert result.returncode == 2, result.stdout + result.stderr
    line = one_error_line(result)
    assert "--event 999:" in line and str(EVENT) not in line.split(":")[0]


# ---------------------------------------------------------------- Redis auth, busy metrics port


def test_a_redis_that_needs_a_password_says_so() -> None:
    with RedisServer(password="s3cret-pw") as server:
        without = f"redis://127.0.0.1:{server.port}/0"
        result = availability("--redis-url", without, "stats")
        assert result.returncode == 2, result.stderr
        assert "needs a password" in one_error_line(result)
        wrong = f"redis://:wrong@127.0.0.1:{server.port}/0"
        result = availability("--redis-url", wrong, "stats")
        assert result.returncode == 2, result.stderr
        line = one_error_line(result)
        assert "refused the user name or password" in line and "wrong" not in line


async def test_a_busy_metrics_port_is_named(redis_url: str, database_url: str, key_prefix: str,
                                            redis_client) -> None:
    await MarketCache(redis_client, prefix=key_prefix).mark_ready()
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = availability("--prefix", key_prefix, "flush", "--once", "--metrics-port", str(port),
                              REDIS_URL=redis_url, DATABASE_URL=database_url)
        demo = availability("--prefix", key_prefix + "d", "demo", "--events", "1", "--cycles", "1",
                            "--metrics-port", str(port), REDIS_URL=redis_url, DATABASE_URL=database_url)
    assert result.returncode == 2, result.stderr
    assert f":{port}" in one_error_line(result)
    assert demo.returncode == 2, demo.stderr
    assert f"port {port}" in one_error_line(demo)


# ---------------------------------------------------------------- output: text by default, sorted, unpadded


async def test_flush_and_warm_print_text_unless_json(redis_url: str, database_url: str, key_prefix: str,
                                                     redis_client) -> None:
    cache = MarketCache(redis_client, prefix=key_prefix)
    await cache.mark_ready()
    await cache.apply_scrape(EVENT, "betpawa", [ONE_X_TWO], T0)
    env = {"REDIS_URL": redis_url, "DATABASE_URL": database_url}
    text = availability("--prefix", key_prefix, "flush", "--once", **env)
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("flushed: records 1,") and not text.stdout.startswith("{")
    as_json = availability("--prefix", key_prefix, "warm", "--json", **env)
    assert as_json.returncode == 0, as_json.stderr
    assert {"snapshots", "markets"} <= set(json.loads(as_json.stdout)["warmed"])
    warm_text = availability("--prefix", key_prefix, "warm", **env)
    assert warm_text.stdout.startswith("warmed: snapshots ")


async def test_inspect_sorts_market_ids_as_numbers_and_pads_no_line_in_a_pipe(
        redis_url: str, key_prefix: str, redis_client) -> None:
    cache = MarketCache(redis_client, prefix=key_prefix)
    await cache.mark_ready()
    ids = ["139", "14", "1", "10", "11", "2", "corners"]
    await cache.apply_scrape(EVENT, "betpawa", [dict(ONE_X_TWO, betpawa_market_id=i) for i in ids], T0)
    result = availability("--prefix", key_prefix, "inspect", str(EVENT), "betpawa", REDIS_URL=redis_url)
    assert result.returncode == 0, result.stderr
    keys = [line.split()[0] for line in result.stdout.splitlines() if "@_" in line]
    assert keys == ["1@_", "2@_", "10@_", "11@_", "14@_", "139@_", "corners@_"]
    assert all(line == line.rstrip() for line in result.stdout.splitlines()), result.stdout


# ---------------------------------------------------------------- the library


async def test_a_read_with_a_bad_event_id_raises_a_read_error(redis_client, key_prefix: str) -> None:
    cache = MarketCache(redis_client, prefix=key_prefix)
    with pytest.raises(InvalidRead, match="event_id") as raised:
        await cache.get_snapshot("1234", "betpawa")  # type: ignore[arg-type]
    assert not isinstance(raised.value, InvalidScrape) and isinstance(raised.value, ValueError)
    with pytest.raises(InvalidRead, match="bookmaker"):
        await cache.get_snapshots([EVENT], ["Not A Slug"])


def test_the_library_writes_nothing_to_stdout() -> None:
    """A library leaves output to the application: the pure rules log a
    transition, and importing the harness and the demo configures nothing."""
    code = textwrap.dedent("""
        from datetime import datetime, timezone
        import availability.harness, availability.demo
        from availability import detect_availability_changes, CachedMarket
        previous = [CachedMarket(betpawa_market_id="1", betpawa_market_name="1X2", line=None,
                                 handicap_type=None, handicap_home=None, handicap_away=None,
                                 outcomes=[{"name": "1", "odds": 2.0, "is_active": True}], market_groups=[])]
        gone, back, _ = detect_availability_changes(previous, [], datetime(2026, 11, 28, 12))
        assert len(gone) == 1, gone
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""


# ---------------------------------------------------------------- the demo's progress line


@pytest.mark.parametrize("width", [50, 80, 120, 149, 200])
def test_the_progress_line_keeps_its_counter_on_a_narrow_terminal(width: int) -> None:
    from rich.console import Console

    from availability.demo import Progress, ProgressDisplay

    out = io.StringIO()
    display = ProgressDisplay(Console(file=out, width=width, force_terminal=True, color_system=None))
    display(Progress(cycle=3, cycles=6, phase="draining", lag=1234, pending=56,
                     counts=Counter(applied=12_345, stale=77, became_unavailable=500)))
    display.stop()
    screen = out.getvalue()
    for control in ("\x1b[2K", "\x1b[?25l", "\x1b[?25h"):  # erase line, hide and show the cursor
        screen = screen.replace(control, "")
    last = screen.strip().splitlines()[-1]
    assert "3/6" in last and "applied 12,345" in last, last
    assert len(last) <= width


def test_the_readme_example_runs_as_written(redis_url: str, key_prefix: str, redis_client) -> None:
    """The README's library example, extracted and run as a script: it can never drift."""
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Using the library", 1)[1]
    script = section.split("```python\n", 1)[1].split("```", 1)[0]
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={"REDIS_URL": redis_url, "AVAILABILITY_PREFIX": key_prefix, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["applied", "()", "1 market(s) cached"]

