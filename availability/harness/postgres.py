"""A throwaway PostgreSQL cluster on 127.0.0.1, and scratch databases on any server."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote, urlsplit, urlunsplit


from availability.errors import ServerStartError
from availability.harness.binaries import ServerBinary, locate_postgres_bin
from availability.harness.process import LOOPBACK, _EmbeddedServer, _mkdtemp, _stop_process
from availability.logs import get_logger

_log = get_logger("availability.harness")

_POSTGRES_OS_USER = "postgres"
_MAX_PG_IDENTIFIER = 63
_MAX_SOCKET_DIR = 80  # a Unix socket path must fit in ~107 bytes, ".s.PGSQL.65535" included


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
