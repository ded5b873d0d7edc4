"""What an operator looks at: one event's markets, the shards' health, the key names.

The logic behind ``availability inspect``, ``availability stats`` and
``availability keys``; ``cli.py`` only wires options to these functions and
prints what they return. Each function returns plain data (what ``--json``
prints) and has a ``render_*`` twin that prints it for a human.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from availability import streams
from availability.cache import MarketCache, snapshot_from_hashes
from availability.keys import KeySchema, validate_bookmaker, validate_event_id
from availability.model import CachedSnapshot, format_ts, key_to_field, market_to_dict, parse_ts

__all__ = [
    "inspect_event",
    "render_inspect",
    "shard_stats",
    "render_stats",
    "key_listing",
    "render_keys",
    "stream_backlog",
]


def _ts(value: datetime | None) -> str | None:
    return format_ts(value) if value else None


def _short(value: datetime | str | None) -> str:
    """``2026-11-28 12:05:01`` for a table cell (full precision stays in --json)."""
    if value is None:
        return "-"
    if isinstance(value, str):
        value = parse_ts(value)
    return value.strftime("%Y-%m-%d %H:%M:%S")


# ---------------------------------------------------------------- inspect


async def inspect_event(cache: MarketCache, event_id: int, bookmaker: str | None = None) -> dict[str, Any]:
    """Every cached snapshot of the event (or only ``bookmaker``'s), markets decoded.

    ``{"event_id", "snapshots": [{"bookmaker", "last_scraped_at", "captured_at",
    "last_confirmed_at", "removed_at", "markets": [...], ...}]}``; ``snapshots``
    is empty when nothing is cached.
    """
    validate_event_id(event_id)
    bookmakers = [validate_bookmaker(bookmaker)] if bookmaker else await cache.bookmakers_of(event_id)
    out: list[dict[str, Any]] = []
    for b in bookmakers:
        keys = cache.keys
        meta = await cache.client.hgetall(keys.meta(event_id, b))
        markets = await cache.client.hgetall(keys.markets(event_id, b))
        stamps = await cache.client.hgetall(keys.unavailable(event_id, b))
        if not meta and not markets:
            continue
        undecodable: list[tuple[int, str, str, str]] = []
        snapshot = snapshot_from_hashes(event_id, b, meta, markets, stamps, undecodable)
        removed = meta.get(b"removed_at")
        entry = _snapshot_dict(snapshot, removed.decode() if removed else None, keys)
        entry["undecodable"] = [{"key": field, "error": error} for _, _, field, error in undecodable]
        out.append(entry)
    return {"event_id": event_id, "snapshots": out}


def _snapshot_dict(snapshot: CachedSnapshot, removed_at: str | None, keys: KeySchema) -> dict[str, Any]:
    markets = []
    for m in snapshot.markets:
        markets.append({
            "key": key_to_field(m.key),
            **market_to_dict(m),
            "is_available": m.is_available,
            "suspended": bool(m.outcomes) and not any(o["is_active"] for o in m.outcomes),
            "unavailable_at": _ts(m.unavailable_at),
        })
    return {
        "bookmaker": snapshot.bookmaker,
        "shard": keys.shard_of(snapshot.event_id),
        "last_scraped_at": _ts(snapshot.last_scraped_at),
        "captured_at": _ts(snapshot.captured_at),
        "last_confirmed_at": _ts(snapshot.last_confirmed_at),
        "removed_at": removed_at,
        "markets_total": len(markets),
        "markets_unavailable": sum(1 for m in markets if not m["is_available"]),
        "markets": markets,
    }


def _odds_text(outcomes: list[dict]) -> str:
    return "  ".join(f"{o['name']} {o['odds']:.2f}" + ("" if o["is_active"] else " (susp.)") for o in outcomes)


def render_inspect(report: dict[str, Any], console: Any) -> None:
    """Print one table per bookmaker to a ``rich`` console."""
    from rich import box
    from rich.table import Table

    for snap in report["snapshots"]:
        title = (
            f"event {report['event_id']} at {snap['bookmaker']} (shard {snap['shard']}): "
            f"{snap['markets_total']} markets, {snap['markets_unavailable']} unavailable"
        )
        caption = (
            f"last scraped {_short(snap['last_scraped_at'])} · odds last changed {_short(snap['captured_at'])}"
            f" · last confirmed {_short(snap['last_confirmed_at'])}"
        )
        if snap["removed_at"]:
            caption += f" · left the listing at {_short(snap['removed_at'])}"
        for bad in snap.get("undecodable", ()):
            caption += f"\nnot a market, skipped: {bad['key']} ({bad['error']})"
        table = Table(title=title, caption=caption, title_justify="left", caption_justify="left",
                      box=box.SIMPLE_HEAD)
        table.add_column("key", no_wrap=True)
        table.add_column("market", min_width=12)
        table.add_column("odds", min_width=16, overflow="fold")
        table.add_column("status", min_width=11)
        table.add_column("last confirmed", min_width=10)
        for m in snap["markets"]:
            if not m["is_available"]:
                status = f"[red]unavailable since {_short(m['unavailable_at'])}[/red]"
                confirmed = "-"
            else:
                status = "[yellow]suspended[/yellow]" if m["suspended"] else "[green]available[/green]"
                # the cache keeps the last confirmation per snapshot, not per market
                confirmed = _short(snap["last_confirmed_at"])
            table.add_row(m["key"], m["betpawa_market_name"], _odds_text(m["outcomes"]), status, confirmed)
        console.print(table)


# ---------------------------------------------------------------- stats


async def stream_backlog(cache: MarketCache, shards: range | list[int] | None = None) -> dict[int, dict[str, Any]]:
    """Per shard: stream length, lag, pending, dead letters and groups (see :func:`availability.streams.backlog`)."""
    return await streams.backlog(cache.client, cache.keys, shards)


async def shard_stats(cache: MarketCache, *, memory_samples: int = 20) -> dict[str, Any]:
    """Per-shard stream health and cache size, plus the memory cost of a market.

    ``memory_samples`` snapshots are measured with ``MEMORY USAGE`` (their
    three hashes) and divided by their market count: an estimate, not a census.
    """
    keys = cache.keys
    shards = list(keys.all_shards())
    backlog = await stream_backlog(cache, shards)
    pipe = cache.client.pipeline(transaction=False)
    for s in shards:
        pipe.zrange(keys.snapshots(s), 0, -1)
        pipe.exists(keys.ready(s))
    replies = await pipe.execute()
    per_shard: list[dict[str, Any]] = []
    all_pairs: list[tuple[int, str]] = []
    for i, s in enumerate(shards):
        members = [keys.parse_snapshot_member(m) for m in replies[2 * i]]
        all_pairs += members
        per_shard.append({"shard": s, "ready": bool(replies[2 * i + 1]), "snapshots": len(members),
                          "events": len({e for e, _ in members}), **backlog[s]})
    # market counts from each snapshot's meta (kept by the apply script)
    pipe = cache.client.pipeline(transaction=False)
    for e, b in all_pairs:
        pipe.hmget(keys.meta(e, b), "markets", "unavailable")
    counts = await pipe.execute() if all_pairs else []
    by_shard: dict[int, list[int]] = {s: [0, 0] for s in shards}
    for (e, _), (total, unavailable) in zip(all_pairs, counts):
        acc = by_shard[keys.shard_of(e)]
        acc[0] += int(total or 0)
        acc[1] += int(unavailable or 0)
    for row in per_shard:
        row["markets"], row["unavailable"] = by_shard[row["shard"]]
    memory = await _memory_per_market(cache, all_pairs, memory_samples)
    info = await cache.client.info("memory")
    totals = {
        name: sum(row[name] for row in per_shard)
        for name in ("stream_length", "lag", "pending", "dead_letters", "snapshots", "markets", "unavailable")
    }
    totals["events"] = len({e for e, _ in all_pairs})
    totals["cold_shards"] = [row["shard"] for row in per_shard if not row["ready"]]
    return {
        "prefix": keys.prefix,
        "shards": keys.shards,
        "totals": totals,
        "memory": {"used_memory": int(info.get("used_memory", 0)), **memory},
        "per_shard": per_shard,
    }


async def _memory_per_market(cache: MarketCache, pairs: list[tuple[int, str]], samples: int) -> dict[str, Any]:
    if not pairs or samples <= 0:
        return {"bytes_per_market": None, "sampled_snapshots": 0}
    step = max(1, len(pairs) // samples)
    sample = pairs[::step][:samples]
    keys = cache.keys
    pipe = cache.client.pipeline(transaction=False)
    for e, b in sample:
        for key in (keys.markets(e, b), keys.unavailable(e, b), keys.meta(e, b)):
            pipe.memory_usage(key, samples=0)
        pipe.hlen(keys.markets(e, b))
    replies = await pipe.execute()
    used = markets = 0
    for i in range(len(sample)):
        used += sum(int(x or 0) for x in replies[4 * i : 4 * i + 3])
        markets += int(replies[4 * i + 3] or 0)
    return {
        "bytes_per_market": round(used / markets) if markets else None,
        "sampled_snapshots": len(sample),
        "sampled_markets": markets,
    }


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def render_stats(report: dict[str, Any], console: Any) -> None:
    from rich import box
    from rich.table import Table

    table = Table(title=f"prefix {report['prefix']!r}, {report['shards']} shards", title_justify="left",
                  box=box.SIMPLE_HEAD)
    for name in ("shard", "ready", "stream", "lag", "pending", "dead", "events", "snapshots", "markets", "unavailable"):
        table.add_column(name, justify="left" if name == "ready" else "right")
    for row in report["per_shard"]:
        table.add_row(
            str(row["shard"]), "yes" if row["ready"] else "[red]COLD[/red]", str(row["stream_length"]),
            str(row["lag"]), str(row["pending"]),
            f"[red]{row['dead_letters']}[/red]" if row["dead_letters"] else "0",
            str(row["events"]), str(row["snapshots"]), str(row["markets"]), str(row["unavailable"]),
        )
    t = report["totals"]
    table.add_section()
    table.add_row("all", "-" if t["cold_shards"] else "yes", str(t["stream_length"]), str(t["lag"]),
                  str(t["pending"]), str(t["dead_letters"]), str(t["events"]), str(t["snapshots"]),
                  str(t["markets"]), str(t["unavailable"]))
    console.print(table)
    mem = report["memory"]
    per_market = mem["bytes_per_market"]
    console.print(
        f"Redis memory: {_size(mem['used_memory'])} in use; "
        + (f"~{per_market} bytes per cached market (MEMORY USAGE of {mem['sampled_snapshots']} sampled snapshots)"
           if per_market is not None else "no markets cached"),
        soft_wrap=True,
    )
    if t["cold_shards"]:
        console.print(f"[red]cold shards {t['cold_shards']}: scrapes are refused until `availability warm` runs[/red]",
                      soft_wrap=True)


# ---------------------------------------------------------------- keys


@dataclass(frozen=True)
class _Key:
    name: str
    type: str
    holds: str
    read: str  # the redis-cli command (without connection options)


def redis_cli_command(redis_url: str | None) -> str:
    """``redis-cli`` with the connection options of ``redis_url``, never its password."""
    if not redis_url:
        return "redis-cli"
    try:
        parts = urlsplit(redis_url)
    except ValueError:
        return "redis-cli"
    args = ["redis-cli"]
    if parts.scheme == "unix":
        args += ["-s", parts.path]
    else:
        if (parts.hostname and parts.hostname not in ("localhost", "127.0.0.1")) or (parts.port or 6379) != 6379:
            args += ["-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 6379)]
        if parts.scheme == "rediss":
            args.append("--tls")
        db = parts.path.strip("/")
        if db and db != "0":
            args += ["-n", db]
    if parts.username:
        args += ["--user", parts.username]
    if parts.password:
        args.append("--askpass")  # prompts; the password stays out of shell history and of this output
    return " ".join(shlex.quote(a) for a in args)


def key_listing(schema: KeySchema, event_id: int, bookmaker: str, redis_url: str | None = None) -> dict[str, Any]:
    """The exact key names of one (event, bookmaker) and of its shard, with the
    ``redis-cli`` command that reads each. Pure: needs no server."""
    validate_event_id(event_id)
    validate_bookmaker(bookmaker)
    shard = schema.shard_of(event_id)
    member = schema.snapshot_member(event_id, bookmaker)
    q = shlex.quote
    entries = [
        _Key(schema.markets(event_id, bookmaker), "hash",
             "market field '<id>@<line>' -> canonical msgpack of the market (decoded by `availability inspect`)",
             f"HGETALL {q(schema.markets(event_id, bookmaker))}"),
        _Key(schema.unavailable(event_id, bookmaker), "hash",
             "market field -> when it was first seen missing (absent = available)",
             f"HGETALL {q(schema.unavailable(event_id, bookmaker))}"),
        _Key(schema.meta(event_id, bookmaker), "hash",
             "last_scraped_at, captured_at, last_confirmed_at, removed_at, market counts",
             f"HGETALL {q(schema.meta(event_id, bookmaker))}"),
        _Key(schema.snapshots(shard), "zset", f"the shard's index of cached snapshots (member {member!r})",
             f"ZRANGEBYLEX {q(schema.snapshots(shard))} {q('[' + str(event_id) + ':')} "
             f"{q('[' + str(event_id) + ':~')}"),
        _Key(schema.changes(shard), "stream", "one change record per applied scrape, read by the flushers",
             f"XINFO GROUPS {q(schema.changes(shard))}"),
        _Key(schema.dead_letters(shard), "stream", "records the flusher could never write",
             f"XRANGE {q(schema.dead_letters(shard))} - + COUNT 10"),
        _Key(schema.ready(shard), "string", "set by warm-up: the shard's cache is not cold",
             f"GET {q(schema.ready(shard))}"),
        _Key(schema.config(), "hash", "shard count and schema version of the deployment",
             f"HGETALL {q(schema.config())}"),
    ]
    cli = redis_cli_command(redis_url)
    return {
        "event_id": event_id,
        "bookmaker": bookmaker,
        "prefix": schema.prefix,
        "shards": schema.shards,
        "shard": shard,
        "keys": [
            {"name": k.name, "type": k.type, "holds": k.holds, "command": f"{cli} {k.read}"} for k in entries
        ],
        "scan": f"{cli} --scan --pattern {q(schema.tag(shard) + ':ev:' + str(event_id) + ':*')}",
    }


def render_keys(report: dict[str, Any], console: Any) -> None:
    """Never wrapped: the commands must copy and paste whole."""
    from rich.markup import escape

    console.print(
        f"event {report['event_id']} at {report['bookmaker']}: shard {report['shard']} "
        f"= {report['event_id']} % {report['shards']} (prefix {report['prefix']!r})",
        soft_wrap=True,
    )
    for k in report["keys"]:
        console.print(f"\n[bold]{escape(k['name'])}[/bold]  {k['type']}: {escape(k['holds'])}", soft_wrap=True)
        console.print(f"  {k['command']}", markup=False, soft_wrap=True)
    console.print(f"\nevery key of the event, all bookmakers:\n  {report['scan']}", markup=False, soft_wrap=True)


# ---------------------------------------------------------------- read-only connection check


async def check_deployment(cache: MarketCache) -> bool:
    """Ping Redis and check the deployment's recorded shard count, writing nothing.

    Returns whether the prefix holds a deployment at all; raises
    :class:`~availability.errors.ConfigurationError` when it was created with
    another shard count (every key name would be wrong).
    """
    from availability.errors import ConfigurationError

    await cache.client.ping()
    stored = await cache.client.hget(cache.keys.config(), "shards")
    if stored is None:
        return False
    if int(stored) != cache.keys.shards:
        raise ConfigurationError(
            f"shards: the deployment {cache.keys.prefix!r} was created with {int(stored)} shards, "
            f"not {cache.keys.shards}: pass --shards {int(stored)}"
        )
    return True
