"""The meta-hash field names, declared once in keys.py, against the two Lua scripts."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from availability.keys import META_EXPIRY_FIELD, META_FIELDS, META_SNAPSHOT_FIELDS, REDELIVERY_FIELDS
from availability.redis_adapter import load_lua
from availability.rules import SnapshotState, advance_meta, meta_hash

_STRING = re.compile(r"'([^']*)'")


def _meta_names(source: str) -> set[str]:
    """Every quoted name the script hands to a command on the meta hash (KEYS[3]),
    plus the names of the ``meta`` table it builds for one HSET."""
    names: set[str] = set()
    for line in _joined_statements(source):
        call = re.search(r"redis\.call\(\s*'(\w+)'\s*,\s*KEYS\[3\]\s*,?([^)]*)\)", line)
        if call:
            names.update(_STRING.findall(call.group(2)))
        table = re.search(r"local meta = \{(.*)\}", line)
        if table:
            names.update(_STRING.findall(table.group(1)))
        names.update(re.findall(r"meta\[#meta \+ 1\] = '([^']*)'", line))
    return names


def _joined_statements(source: str) -> list[str]:
    """Lines, with a statement continued over several lines (open brackets) joined;
    comments dropped."""
    out: list[str] = []
    pending = ""
    for raw in source.splitlines():
        line = raw.split("--", 1)[0]
        pending = f"{pending} {line.strip()}" if pending else line.strip()
        if pending.count("(") <= pending.count(")") and pending.count("{") <= pending.count("}"):
            out.append(pending)
            pending = ""
    return out + ([pending] if pending else [])


def test_apply_script_uses_exactly_the_declared_meta_fields() -> None:
    assert _meta_names(load_lua("apply_scrape.lua")) == META_FIELDS


def test_warm_script_reads_only_declared_meta_fields() -> None:
    # warm_snapshot.lua writes the pairs rules.meta_hash builds; the names it spells are
    # the clock and the kickoff (which scores the alerts index)
    used = _meta_names(load_lua("warm_snapshot.lua"))
    assert used == {"last_scraped_us", "kickoff_us"}
    assert used <= META_FIELDS


def test_both_scripts_together_use_exactly_the_declared_fields() -> None:
    used = _meta_names(load_lua("apply_scrape.lua")) | _meta_names(load_lua("warm_snapshot.lua"))
    assert used == set(META_SNAPSHOT_FIELDS) | {META_EXPIRY_FIELD, *REDELIVERY_FIELDS}


def test_the_parser_sees_a_name_it_was_not_told_about() -> None:
    source = load_lua("apply_scrape.lua").replace("'removed_at', scraped_iso", "'removed_on', scraped_iso")
    assert "removed_on" in _meta_names(source)


def test_meta_hash_writes_every_snapshot_field_and_nothing_else() -> None:
    t0 = datetime(2026, 11, 28, 12, tzinfo=timezone.utc)
    times = SnapshotState()
    advance_meta(times, t0, odds_changed=True, listed_markets=True, removed=False, complete=True)
    advance_meta(times, t0 + timedelta(seconds=5), odds_changed=False, listed_markets=False, removed=True)
    assert (times.captured_at, times.last_confirmed_at, times.removed_at) == (t0, t0, t0 + timedelta(seconds=5))
    assert times.last_complete_at == t0
    meta = meta_hash(7, "betpawa", times, markets=3, unavailable=1, kickoff=t0 + timedelta(hours=2))
    assert list(meta) == list(META_SNAPSHOT_FIELDS)
    assert meta["kickoff_us"] == str(int((t0 + timedelta(hours=2)).timestamp()) * 1_000_000)
    assert meta["last_scraped_at"] == "2026-11-28T12:00:05.000000Z"
    advance_meta(times, t0 + timedelta(seconds=9), odds_changed=False, listed_markets=True, removed=False)
    assert times.removed_at is None and "removed_at" not in meta_hash(7, "betpawa", times, markets=3, unavailable=1)
