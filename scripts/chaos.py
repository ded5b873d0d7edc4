#!/usr/bin/env python3
"""The project's own fault-and-bad-input soak: nothing may be lost, duplicated or wrong.

    python scripts/chaos.py --duration 120 --seed 1

It starts its own Redis (append-only file, ``appendfsync always``) and
PostgreSQL (``fsync`` and ``synchronous_commit`` on), then for ``--duration`` seconds:

* feeds the demo's synthetic bookmaker feed through ``--workers`` worker
  processes (each scrape sometimes delivered twice, to two workers, or held
  back a cycle and delivered after a newer one);
* runs ``--flushers`` real ``availability flush`` processes;
* injects, at random, every fault kind: SIGKILL of a worker or a flusher, Redis
  SIGSTOP/SIGCONT, Redis SIGKILL and restart from its AOF, Redis restarted
  empty and warmed from PostgreSQL, PostgreSQL stopped ``immediate`` and
  restarted, ``CLIENT KILL`` of every Redis client and ``pg_terminate_backend``
  of every PostgreSQL session;
* sends malformed scrapes (a 4,000-character market id, NUL in names, lone
  surrogates, raw script calls with payloads that are not markets), each of
  which must be refused with nothing written.

Ground truth comes from the change records themselves: an extra consumer group
(``audit``) reads every record, whose transitions are what PostgreSQL's history
must hold. Records that Redis lost when it was wiped before a flusher committed
them are excused (the next scrape re-derives them). At the end the flushers
drain and it checks: every audited transition is in the history table, no
history row lacks a record, no row is duplicated, every outcome a worker was
told matches its record, ``verify`` finds Redis and PostgreSQL equal, no
flusher exited on its own and no record is held back. One line of figures;
exit status 1 when anything is off.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

PREFIX = "chaos"
SHARDS = 8
AUDIT = "audit"
FAULT_KINDS = ("worker_kill", "flusher_kill", "redis_stop_cont", "redis_kill_aof", "redis_empty_warm",
               "pg_immediate", "redis_client_kill", "pg_terminate")
BAD_KINDS = ("long_id", "nul_name", "nul_outcome", "nul_group", "lone_surrogate", "raw_garbage_payload")


# ---------------------------------------------------------------- worker processes


def _bad_scrape(kind: str, event_id: int, at_us: int) -> dict[str, Any]:
    market = {"betpawa_market_id": "1", "betpawa_market_name": "1X2", "line": None,
              "outcomes": [{"name": "1", "odds": 1.9, "is_active": True}], "market_groups": ["main"]}
    if kind == "long_id":
        market["betpawa_market_id"] = "x" * 4000
    elif kind == "nul_name":
        market["betpawa_market_name"] = "1X\x002"
    elif kind == "nul_outcome":
        market["outcomes"] = [{"name": "1\x00", "odds": 1.9, "is_active": True}]
    elif kind == "nul_group":
        market["market_groups"] = ["ma\x00in"]
    elif kind == "lone_surrogate":
        market["betpawa_market_name"] = "bad \ud800 name"
    good = {"betpawa_market_id": "2", "betpawa_market_name": "Good", "line": None,
            "outcomes": [{"name": "Yes", "odds": 1.5, "is_active": True}], "market_groups": None}
    return {"event_id": event_id, "bookmaker": "betpawa", "markets": [good, market], "scraped_us": at_us}


def worker_main(index: int, redis_url: str, inbox: Any, out_path: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_worker(index, redis_url, inbox, out_path))


async def _worker(index: int, redis_url: str, inbox: Any, out_path: str) -> None:
    from availability.cache import MarketCache
    from availability.model import from_micros

    cache = MarketCache.from_url(redis_url, prefix=PREFIX, shards=SHARDS, socket_timeout=5)
    loop = asyncio.get_running_loop()
    with open(out_path, "a") as out:
        while True:
            item = await loop.run_in_executor(None, inbox.get)
            if item is None:
                break
            line: dict[str, Any] = {"worker": index, "event_id": item["event_id"], "bookmaker": item["bookmaker"],
                                    "scraped_us": item["scraped_us"], "bad": item.get("bad")}
            outcome = None
            for _ in range(200):  # Redis down or cold (being warmed): keep the scrape, try again
                try:
                    if item.get("removed"):
                        outcome = await cache.mark_event_removed(item["event_id"], item["bookmaker"],
                                                                 from_micros(item["scraped_us"]))
                    else:
                        outcome = await cache._apply(_scrape_of(item))
                    if outcome.status != "cold":
                        break
                except (RedisConnectionError, RedisTimeoutError, OSError):
                    pass
                await asyncio.sleep(0.1)
            if outcome is None:
                line["status"] = "gave_up"
            else:
                line.update(status=outcome.status, stream_id=outcome.stream_id,
                            unavailable=[list(k) for k in outcome.became_unavailable],
                            available=[list(k) for k in outcome.became_available],
                            error=str(outcome.error)[:200] if outcome.error else None)
            out.write(json.dumps(line) + "\n")
            out.flush()
    await cache.close()


def _scrape_of(item: dict[str, Any]) -> Any:
    from availability.cache import Scrape
    from availability.model import from_micros

    return Scrape(item["event_id"], item["bookmaker"], item["markets"], from_micros(item["scraped_us"]),
                  complete=item.get("complete", True), confirmed_empty=item.get("confirmed_empty", False))


# ---------------------------------------------------------------- the soak


class Chaos:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.tmp = Path(tempfile.mkdtemp(prefix="availability-chaos-"))
        self.faults: Counter = Counter()
        self.bad_sent: Counter = Counter()
        self.bad_refused = 0
        self.audit: dict[tuple[str, str], Any] = {}  # (stream, id) -> ChangeRecord
        self.excused: set[tuple[str, str]] = set()
        self.flusher_exits: list[str] = []
        self.workers: list[tuple[Any, Any]] = []
        self.flushers: list[subprocess.Popen] = []
        self.dropped_with_worker = 0

    # -- servers and processes

    def start_servers(self) -> None:
        from availability.db.migrate import upgrade
        from availability.servers import PostgresServer, RedisServer

        self.redis = RedisServer(extra_args=("--appendonly", "yes", "--appendfsync", "always")).start()
        # Production durability: the test harness's default (synchronous_commit off) loses
        # the last commits on a crash, which the flushers have already acknowledged.
        self.pg = PostgresServer(settings={"fsync": "on", "synchronous_commit": "on",
                                           "full_page_writes": "on"}).start()
        upgrade(self.pg.url)

    def start_worker(self, index: int) -> None:
        inbox = mp.Queue()
        proc = mp.Process(target=worker_main, args=(index, self.redis.url, inbox,
                                                     str(self.tmp / f"worker{index}-{time.monotonic_ns()}.jsonl")),
                          daemon=True)
        proc.start()
        if index < len(self.workers):
            self.workers[index] = (proc, inbox)
        else:
            self.workers.append((proc, inbox))

    def start_flusher(self, index: int) -> None:
        env = {**os.environ, "REDIS_URL": self.redis.url, "DATABASE_URL": self.pg.url,
               "AVAILABILITY_PREFIX": PREFIX, "AVAILABILITY_SHARDS": str(SHARDS)}
        log = open(self.tmp / f"flusher{index}.log", "a")
        proc = subprocess.Popen(
            [sys.executable, "-m", "availability", "flush", "--batch-size", "50", "--claim-idle-ms", "2000",
             "--block-ms", "200", "--consumer", f"chaos-flusher-{index}-{time.monotonic_ns()}"],
            env=env, stdout=log, stderr=subprocess.STDOUT)
        proc.started = time.monotonic()  # type: ignore[attr-defined]
        if index < len(self.flushers):
            self.flushers[index] = proc
        else:
            self.flushers.append(proc)

    def check_flushers(self) -> None:
        for i, proc in enumerate(self.flushers):
            if proc.poll() is not None:  # it ended on its own: a failure, and start another
                self.flusher_exits.append(f"flusher {i} exited {proc.returncode}")
                self.start_flusher(i)

    async def client(self) -> aioredis.Redis:
        return aioredis.Redis.from_url(self.redis.url, socket_timeout=5)

    # -- the audit group: every record, as ground truth

    async def audit_read(self) -> None:
        from availability.records import decode_record

        client = await self.client()
        try:
            streams = {f"{{{PREFIX}:{s}}}:changes": ">" for s in range(SHARDS)}
            for stream in streams:
                try:
                    await client.xgroup_create(stream, AUDIT, id="0", mkstream=True)
                except ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
            while True:
                reply = await client.xreadgroup(AUDIT, "auditor", streams, count=1000)
                if not reply:
                    return
                for stream, messages in reply:
                    for sid, fields in messages:
                        key = (stream.decode(), sid.decode())
                        self.audit[key] = decode_record(sid, fields)
                    await client.xack(stream, AUDIT, *[sid for sid, _ in messages])
        finally:
            await client.aclose()

    async def excuse_unflushed(self) -> None:
        """Before Redis is wiped: records the flushers have not committed are lost with it."""
        client = await self.client()
        try:
            for s in range(SHARDS):
                stream = f"{{{PREFIX}:{s}}}:changes"
                for sid, _ in await client.xrange(stream):
                    self.excused.add((stream, sid.decode()))  # refined below: acked ones were committed
                try:
                    groups = {g["name"].decode(): g for g in await client.xinfo_groups(stream)}
                except ResponseError:
                    continue
                flushers = groups.get("flushers")
                if flushers is None:
                    continue
                last = flushers["last-delivered-id"].decode()
                pending = {p["message_id"].decode()
                           for p in await client.xpending_range(stream, "flushers", "-", "+", 100_000)}
                for key in list(self.excused):
                    if key[0] == stream and _id(key[1]) <= _id(last) and key[1] not in pending:
                        self.excused.discard(key)  # acknowledged: it was committed
        finally:
            await client.aclose()

    # -- faults

    async def fault(self, kind: str) -> None:
        self.faults[kind] += 1
        if kind == "worker_kill":
            i = self.rng.randrange(len(self.workers))
            proc, inbox = self.workers[i]
            proc.kill()
            proc.join(5)
            self.start_worker(i)
        elif kind == "flusher_kill":
            i = self.rng.randrange(len(self.flushers))
            self.flushers[i].kill()
            self.flushers[i].wait(10)
            self.start_flusher(i)
        elif kind == "redis_stop_cont":
            os.kill(self.redis.pid, signal.SIGSTOP)
            await asyncio.sleep(self.rng.uniform(0.5, 2.0))
            os.kill(self.redis.pid, signal.SIGCONT)
        elif kind == "redis_kill_aof":
            self.redis.kill()
            await asyncio.sleep(0.3)
            self.redis.start()
        elif kind == "redis_empty_warm":
            await self.audit_read()
            await self.excuse_unflushed()
            self.redis.restart(empty=True)
            await asyncio.sleep(self.rng.uniform(0.2, 1.0))  # workers are refused as cold meanwhile
            from availability.cache import MarketCache
            from availability.warm import warm

            async with MarketCache.from_url(self.redis.url, prefix=PREFIX, shards=SHARDS) as cache:
                await warm(cache, self.pg.url)
        elif kind == "pg_immediate":
            self.pg.kill()
            await asyncio.sleep(self.rng.uniform(0.5, 2.0))
            self.pg.start()
        elif kind == "redis_client_kill":
            client = await self.client()
            try:
                await client.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            finally:
                await client.aclose()
        elif kind == "pg_terminate":
            with psycopg.connect(self.pg.url, autocommit=True) as conn:
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'")

    # -- bad input

    async def send_bad(self, at_us: int) -> None:
        kind = self.rng.choice(BAD_KINDS)
        self.bad_sent[kind] += 1
        event_id = 900_000 + self.bad_sent.total()
        if kind == "raw_garbage_payload":
            from availability.cache import MarketCache

            async with MarketCache.from_url(self.redis.url, prefix=PREFIX, shards=SHARDS) as cache:
                prepared = cache._prepare(_scrape_of(_bad_scrape("none", event_id, at_us)))
                args = list(prepared.args)
                args[-1] = b"garbage"
                try:
                    await cache.client.eval(cache.script.source, len(prepared.keys), *prepared.keys, *args)
                except ResponseError:
                    self.bad_refused += 1
                except (RedisConnectionError, RedisTimeoutError, OSError):
                    self.bad_refused += 1  # not applied either; checked at the end like the others
            return
        item = _bad_scrape(kind, event_id, at_us)
        item["bad"] = kind
        self.deliver(item)

    def deliver(self, item: dict[str, Any], worker: int | None = None) -> None:
        i = self.rng.randrange(len(self.workers)) if worker is None else worker
        self.workers[i][1].put(item)

    # -- the run

    async def run(self) -> dict[str, Any]:
        from availability.feed import Feed, FeedConfig
        from availability.model import market_to_dict, to_micros

        a = self.args
        self.start_servers()
        from availability.cache import MarketCache

        async with MarketCache.from_url(self.redis.url, prefix=PREFIX, shards=SHARDS) as cache:
            await cache.mark_ready()
        for i in range(a.workers):
            self.start_worker(i)
        for i in range(a.flushers):
            self.start_flusher(i)
        feed = Feed(FeedConfig(seed=a.seed, events=a.events, market_scale=a.market_scale))
        started = time.monotonic()
        deadline = started + a.duration
        next_fault = started + self.rng.uniform(1, 2 * a.duration / max(a.faults, 1))
        held: list[dict[str, Any]] = []
        cycle = 0
        scrapes = 0
        # Each fault kind at least once, then at random.
        kinds = list(FAULT_KINDS) + [self.rng.choice(FAULT_KINDS) for _ in range(max(0, a.faults - len(FAULT_KINDS)))]
        self.rng.shuffle(kinds)
        while time.monotonic() < deadline:
            cycle += 1
            batch = []
            for result in feed.scrapes(cycle):
                markets = None if result.markets is None else [
                    market_to_dict(m) if not isinstance(m, dict) else m for m in result.markets]
                if result.failed:
                    continue
                batch.append({"event_id": result.event_id, "bookmaker": result.bookmaker, "markets": markets,
                              "scraped_us": to_micros(result.scraped_at), "complete": result.complete,
                              "confirmed_empty": result.confirmed_empty})
            for item in held:
                self.deliver(item)  # held back a cycle: older than what was delivered since
            held = []
            for item in batch:
                scrapes += 1
                roll = self.rng.random()
                if roll < 0.05:
                    held.append(item)
                    continue
                self.deliver(item)
                if roll < 0.12:  # delivered twice, to two workers
                    self.deliver(item)
            cycle_end = time.monotonic() + a.cycle_s
            while time.monotonic() < min(cycle_end, deadline):
                await asyncio.sleep(0.2)
                self.check_flushers()
                if self.rng.random() < a.bad_rate:
                    await self.send_bad(to_micros(feed.cycle_start(cycle)))
                if kinds and time.monotonic() >= next_fault:
                    await self.fault(kinds.pop())
                    next_fault = time.monotonic() + self.rng.uniform(0.5, 2 * a.duration / max(a.faults, 1))
                try:
                    await self.audit_read()
                except (RedisConnectionError, RedisTimeoutError, OSError):
                    pass
        for kind in kinds:  # faults still owed when time ran out
            await self.fault(kind)
        return await self.finish(cycle, scrapes)

    async def finish(self, cycles: int, scrapes: int) -> dict[str, Any]:
        from availability.cache import MarketCache
        from availability.verify import verify

        for proc, inbox in self.workers:
            inbox.put(None)
        for proc, _ in self.workers:
            proc.join(120)
            if proc.is_alive():
                proc.kill()
        # drain: every record written and acknowledged by the flushers
        held_back = -1
        for _ in range(600):
            self.check_flushers()
            held_back = await self._backlog()
            if held_back == 0:
                break
            await asyncio.sleep(0.1)
        for proc in self.flushers:
            # one restarted a moment ago may not have installed its signal handler yet
            await asyncio.sleep(max(0.0, proc.started + 3.0 - time.monotonic()))  # type: ignore[attr-defined]
            proc.send_signal(signal.SIGTERM)
        for i, proc in enumerate(self.flushers):
            try:
                rc = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = -9
            if rc != 0:
                self.flusher_exits.append(f"flusher {i} exited {rc} on SIGTERM")
        await self.audit_read()

        lines = []
        for path in self.tmp.glob("worker*.jsonl"):
            lines += [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        history = _history(self.pg.url)
        excused = self.excused
        expected = set()
        everything = set()
        for key, record in self.audit.items():
            rows = {(record.event_id, record.bookmaker, k.betpawa_market_id, k.line, kind, record.scraped_at)
                    for k, kind in record.transitions}
            everything |= rows
            if key not in excused:
                expected |= rows
        lost = expected - set(history)
        unexplained = set(history) - everything
        duplicated = sum(history.values()) - len(history)

        wrong: list[str] = [f"history row without a record: {r}" for r in sorted(unexplained, key=str)[:5]]
        wrong_count = len(unexplained)
        by_record = self.audit  # stream ids repeat across shards: keyed by (stream, id)
        applied_by_scrape = {}
        bad_accepted = 0
        for x in lines:
            if x.get("bad"):
                if x["status"] != "invalid":
                    bad_accepted += 1
                    wrong_count += 1
                    wrong.append(f"bad input {x['bad']} was {x['status']}")
                else:
                    self.bad_refused += 1
                continue
            if x["status"] == "applied":
                applied_by_scrape[(x["event_id"], x["bookmaker"], x["scraped_us"])] = x
                stream = f"{{{PREFIX}:{x['event_id'] % SHARDS}}}:changes"
                record = by_record.get((stream, x["stream_id"])) if x.get("stream_id") else None
                if record is not None:
                    told = {(tuple(k), "became_unavailable") for k in x["unavailable"]} | \
                           {(tuple(k), "became_available") for k in x["available"]}
                    if told != {(tuple(k), kind) for k, kind in record.transitions}:
                        wrong_count += 1
                        wrong.append(f"outcome differs from its record {x['stream_id']}: told {sorted(told, key=str)[:3]}, "
                                     f"recorded {sorted(record.transitions, key=str)[:3]}")
            elif x["status"] in ("invalid", "error"):
                wrong_count += 1
                wrong.append(f"a good scrape was {x['status']}: {x.get('error')}")
        for x in lines:
            if x["status"] == "duplicate":
                first = applied_by_scrape.get((x["event_id"], x["bookmaker"], x["scraped_us"]))
                if first is not None and (first["stream_id"], first["unavailable"], first["available"]) != (
                        x["stream_id"], x["unavailable"], x["available"]):
                    wrong_count += 1
                    wrong.append(f"duplicate told something else than its application: {x}")
        # nothing of a bad scrape was written
        with psycopg.connect(self.pg.url) as conn:
            (bad_rows,) = conn.execute("SELECT count(*) FROM availability_snapshots WHERE event_id BETWEEN 900000 AND 999999").fetchone()
        if bad_rows:
            wrong_count += bad_rows
            wrong.append(f"{bad_rows} snapshots of bad scrapes reached PostgreSQL")
        async with MarketCache.from_url(self.redis.url, prefix=PREFIX, shards=SHARDS) as cache:
            mismatches = await verify(cache, self.pg.url)
        wrong_count += len(mismatches)
        wrong += [str(m) for m in mismatches[:5]]
        statuses = Counter(x["status"] for x in lines if not x.get("bad"))
        return {
            "seed": self.args.seed, "duration_s": self.args.duration, "cycles": cycles, "scrapes": scrapes,
            "deliveries": dict(statuses), "faults": dict(self.faults), "bad_inputs": self.bad_sent.total(),
            "bad_refused": self.bad_refused, "bad_accepted": bad_accepted,
            # queued to a worker that was then killed: never applied nor answered
            "bad_unanswered": self.bad_sent.total() - self.bad_refused - bad_accepted,
            "transitions": len(history), "records_audited": len(self.audit),
            "records_excused": len(excused & set(self.audit)),
            "lost": len(lost), "duplicated": duplicated, "wrong": wrong_count, "held_back": held_back,
            "flusher_exits": self.flusher_exits, "examples": wrong[:5] + [f"lost: {r}" for r in sorted(lost, key=str)[:5]],
        }

    async def _backlog(self) -> int:
        client = await self.client()
        total = 0
        try:
            for s in range(SHARDS):
                try:
                    for g in await client.xinfo_groups(f"{{{PREFIX}:{s}}}:changes"):
                        if g["name"] == b"flushers":
                            total += int(g["pending"]) + int(g.get("lag") or 0)
                except ResponseError:
                    pass
        except (RedisConnectionError, RedisTimeoutError, OSError):
            return -1
        finally:
            await client.aclose()
        return total

    def close(self, keep_logs: bool = False) -> None:
        for proc, _ in self.workers:
            if proc.is_alive():
                proc.kill()
        for proc in self.flushers:
            if proc.poll() is None:
                proc.kill()
        for server in (getattr(self, "redis", None), getattr(self, "pg", None)):
            if server is not None:
                server.close()
        if not keep_logs:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _id(text: str) -> tuple[int, int]:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _history(url: str) -> Counter:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT event_id, bookmaker, betpawa_market_id, line, transition, at "
                            "FROM market_availability_history").fetchall()
    return Counter(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of feeding and faults (default 120)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--events", type=int, default=40)
    parser.add_argument("--market-scale", type=float, default=0.3)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--flushers", type=int, default=2)
    parser.add_argument("--faults", type=int, default=23, help="faults to inject (every kind at least once)")
    parser.add_argument("--bad-rate", type=float, default=0.25, help="chance of a malformed scrape every 0.2 s")
    parser.add_argument("--cycle-s", type=float, default=2.0, help="seconds between feed cycles")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    from availability.logs import configure_logging

    configure_logging("CRITICAL")
    chaos = Chaos(args)
    report: dict[str, Any] = {}
    try:
        report = asyncio.run(chaos.run())
    finally:
        ok = bool(report) and not (report["lost"] or report["duplicated"] or report["wrong"]
                                   or report["held_back"] or report["flusher_exits"])
        chaos.close(keep_logs=not ok)
        if not ok:
            print(f"chaos: logs kept in {chaos.tmp}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, default=str))
    else:
        faults = " ".join(f"{k}={v}" for k, v in sorted(report["faults"].items()))
        print(f"chaos: seed {report['seed']}, {report['duration_s']:.0f} s, {report['cycles']} cycles, "
              f"{report['scrapes']} scrapes ({', '.join(f'{k} {v}' for k, v in sorted(report['deliveries'].items()))}); "
              f"faults {sum(report['faults'].values())} ({faults}); bad inputs {report['bad_inputs']}, "
              f"refused {report['bad_refused']}, accepted {report['bad_accepted']}, "
              f"dropped with a killed worker {report['bad_unanswered']}; transitions {report['transitions']}, records audited "
              f"{report['records_audited']} ({report['records_excused']} lost with a wiped Redis, excused); "
              f"lost {report['lost']}, duplicated {report['duplicated']}, wrong {report['wrong']}, "
              f"held back {report['held_back']}, flusher exits {len(report['flusher_exits'])}")
        for line in report["examples"] + report["flusher_exits"]:
            print(f"  {line}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
