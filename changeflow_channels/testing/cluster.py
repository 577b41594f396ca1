"""A real RethinkDB cluster for tests: three servers and a ``rethinkdb proxy``.

Each server has its own data directory, driver and cluster ports, all on loopback,
no web admin, and ``--join``s the others (so that a server started again finds
the cluster whichever is up). The proxy joins every server; applications (the
worker, Daphne, the tests) connect to it, as RethinkDB recommends for application
servers. Faults act on the real processes: ``kill`` is SIGKILL, ``start`` brings a
server back on its ports and data.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from rethinkdb import RethinkDB

from .processes import ManagedProcess, RethinkDBServer, reusable_port

logger = logging.getLogger(__name__)

PROXY_READY = r"^Proxy ready"
READY_TIMEOUT = 60.0


class RethinkDBCluster:
    """``size`` real servers named ``s1``, ``s2``... and a proxy in front of them."""

    host = "127.0.0.1"

    def __init__(self, binary: str, size: int = 3) -> None:
        self.binary = binary
        self.servers: dict[str, RethinkDBServer] = {}
        for index in range(1, size + 1):
            self.servers[f"s{index}"] = RethinkDBServer(binary)
        taken = [p for s in self.servers.values() for p in (s.port, s.cluster_port)]
        self.proxy_port = reusable_port(taken=taken)
        self.proxy_cluster_port = reusable_port(taken=[*taken, self.proxy_port])
        self.proxy: ManagedProcess | None = None

    @property
    def url(self) -> str:
        """The proxy's URL: where applications connect."""
        return f"rethinkdb://admin@{self.host}:{self.proxy_port}"

    @property
    def server_urls(self) -> str:
        """Every server's address in one ``CHANGEFLOW_RETHINKDB`` (no proxy)."""
        hosts = ",".join(f"{s.host}:{s.port}" for s in self.servers.values())
        return f"rethinkdb://admin@{hosts}"

    def connect_kwargs(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.proxy_port}

    def _joins(self, name: str, only: list[str] | None = None) -> list[str]:
        """``--join`` every other server (of ``only``). A server with ``--join`` is
        ready only once it reached one of them."""
        return [
            arg
            for other, server in self.servers.items()
            if other != name and (only is None or other in only)
            for arg in ("--join", f"{self.host}:{server.cluster_port}")
        ]

    def start(self) -> None:
        """Start the servers in order, each joining those before it (the first one
        alone), then the proxy; return once the proxy sees every server."""
        started: list[str] = []
        for name, server in self.servers.items():
            server.extra_args = ["--server-name", name, *self._joins(name, started)]
            server.start()
            started.append(name)
        self.start_proxy()

    def start_proxy(self) -> None:
        joins = [
            arg
            for server in self.servers.values()
            for arg in ("--join", f"{self.host}:{server.cluster_port}")
        ]
        self.proxy = ManagedProcess(
            [
                self.servers["s1"].binary,
                "proxy",
                "--bind",
                self.host,
                "--no-default-bind",
                "--driver-port",
                str(self.proxy_port),
                "--cluster-port",
                str(self.proxy_cluster_port),
                "--no-http-admin",
                # Without it the proxy writes ``log_file`` into the current directory.
                "--log-file",
                os.path.join(self.servers["s1"]._root, "proxy_log_file"),
                *joins,
            ]
        )
        self.proxy.wait_for(PROXY_READY, timeout=READY_TIMEOUT)
        self.wait_servers(len(self.servers))

    def _run(self, build: Any, timeout: float = 10.0) -> Any:
        r = RethinkDB()
        with r.connect(**self.connect_kwargs(), timeout=timeout) as conn:
            return build(r).run(conn)

    def wait_servers(self, count: int, timeout: float = READY_TIMEOUT) -> None:
        """Until the cluster (seen from the proxy) has ``count`` servers, each connected to
        every other one. Peers go on connecting to one another after each is ready, and a
        server lost in the middle of that can bring down another (RethinkDB 2.4.4: "Received
        invalid clustering header", then "Guarantee failed: [peer.ips().size() > 0]"): no
        fault before the whole mesh is there."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self._run(
                lambda r: (
                    r.db("rethinkdb")
                    .table("server_status")
                    .pluck("name", {"network": "connected_to"})
                    .coerce_to("array")
                )
            )
            names = {row["name"] for row in rows}
            meshed = all(
                all(row["network"]["connected_to"].get(other) for other in names - {row["name"]})
                for row in rows
            )
            if len(rows) == count and meshed:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(rows)} servers connected (all to each other: {meshed})")
            time.sleep(0.1)  # polling the cluster's own view: nothing to await

    def primary_of(self, database: str, table: str) -> str:
        """The name of the server holding the table's (first shard's) primary replica."""
        status = self._run(lambda r: r.db(database).table(table).status())
        # ``shards`` is null while the servers cannot tell the table's state (an election
        # under way after a server was lost): no primary known yet, as with none.
        shards = status.get("shards") or []
        primaries = shards[0]["primary_replicas"] if shards else []
        if not primaries:
            raise LookupError(f"{database}.{table} has no primary replica now")
        name: str = primaries[0]
        return name

    def wait_all_replicas_ready(
        self, database: str, table: str, timeout: float = READY_TIMEOUT
    ) -> None:
        """Until every replica of the table is ready (after a server came back)."""
        self._run(
            lambda r: (
                r.db(database)
                .table(table)
                .wait(wait_for="all_replicas_ready", timeout=int(timeout))
            ),
            timeout=timeout + 5,
        )

    def move_primary(self, database: str, table: str, to: str, timeout: float = 30.0) -> None:
        """Make server ``to`` the table's primary replica (as configured: a server back
        from a crash takes its configured primary role back); return once it serves."""
        config = self._run(lambda r: r.db(database).table(table).config())
        shards = [{**shard, "primary_replica": to} for shard in config["shards"]]
        self._run(lambda r: r.db(database).table(table).config().update({"shards": shards}))
        deadline = time.monotonic() + timeout
        while self.primary_or_none(database, table) != to:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{to} did not become the primary of {database}.{table}")
            time.sleep(0.1)  # polling the cluster's own view: nothing to await
        self._run(
            lambda r: (
                r.db(database).table(table).wait(wait_for="ready_for_writes", timeout=int(timeout))
            ),
            timeout=timeout + 5,
        )

    def wait_primary(self, database: str, table: str, timeout: float = 30.0) -> str:
        """The table's primary replica's server, once it has one."""
        deadline = time.monotonic() + timeout
        while (primary := self.primary_or_none(database, table)) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{database}.{table} has no primary replica")
            time.sleep(0.1)  # polling the cluster's own view: nothing to await
        return primary

    def primary_or_none(self, database: str, table: str) -> str | None:
        try:
            return self.primary_of(database, table)
        except LookupError:
            return None

    def replica_count(self, database: str, table: str) -> int:
        config = self._run(lambda r: r.db(database).table(table).config())
        return len(config["shards"][0]["replicas"])

    def kill(self, name: str) -> None:
        """SIGKILL server ``name``: a crash."""
        self.servers[name].kill()
        logger.info("RethinkDB server %s killed", name)

    def start_server(self, name: str) -> None:
        """Server ``name`` back on its ports and data, joining the others; returns once
        it is ready."""
        server = self.servers[name]
        server.extra_args = ["--server-name", name, *self._joins(name)]
        server.start()
        if self.proxy is not None:
            self.wait_servers(sum(1 for other in self.servers.values() if other.alive()))

    def output(self) -> dict[str, str]:
        outputs = {name: server.output for name, server in self.servers.items()}
        if self.proxy is not None:
            outputs["proxy"] = self.proxy.output
        return outputs

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        for server in self.servers.values():
            server.close()

    @classmethod
    @contextlib.contextmanager
    def running(cls, binary: str, size: int = 3) -> Iterator[RethinkDBCluster]:
        cluster = cls(binary, size)
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.close()
