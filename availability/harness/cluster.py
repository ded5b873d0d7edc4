"""A throwaway Redis Cluster: :class:`RedisClusterServer` (not redis-py's ``RedisCluster`` client)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Collection, Mapping
from typing import Any, Self


from availability.errors import ServerStartError
from availability.harness.binaries import find_redis_cli, find_redis_server
from availability.harness.process import _port_is_free, _register, _unregister, free_port
from availability.harness.redis import RedisServer
from availability.logs import get_logger

_log = get_logger("availability.harness")


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


class RedisClusterServer:
    """A throwaway Redis Cluster of ``masters`` nodes (no replicas), as a context manager.

    Each node is a :class:`RedisServer` with ``--cluster-enabled yes``; the
    cluster is created with ``redis-cli --cluster create ... --cluster-yes`` and
    is ready once every node reports ``cluster_state:ok`` and knows every other
    node.

    Example::

        with RedisClusterServer() as cluster:
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
