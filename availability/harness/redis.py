"""A throwaway ``redis-server`` (or Valkey) on 127.0.0.1."""

from __future__ import annotations

import os
import re
import shutil
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote


from availability.errors import ServerStartError
from availability.harness.binaries import ServerBinary, locate_redis_server
from availability.harness.process import LOOPBACK, _EmbeddedServer, _mkdtemp, _stop_process
from availability.logs import get_logger

_log = get_logger("availability.harness")


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
