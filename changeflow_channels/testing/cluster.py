"""A real RethinkDB cluster for tests: three servers and a ``rethinkdb proxy``.

Each server has its own data directory, driver and cluster ports, all on loopback,
no web admin, and ``--join``s the others (so that a server started again finds
the cluster whichever is up). The proxy joins every server; applications (the
worker, Daphne, the tests) connect to it, as RethinkDB recommends for application
servers. Faults act on the real processes: ``kill`` is SIGKILL, ``start`` brings a
server back on its ports and data.

A supervisor thread (``supervise``) restarts a server or the proxy that exits on its
own, as systemd's ``Restart=`` would in production, and keeps a record of it
(``crashes``). RethinkDB 2.4.4 needs one: when a server dies, a peer that gets a
connection to it closed mid-handshake ("Received invalid clustering header") drops
the address from its reconnect loop and retries with none, then aborts ("Guarantee
failed: [peer.ips().size() > 0]", src/clustering/administration/servers/
auto_reconnect.cc checks the wrong copy of the address). Four SIGKILLs of 38
took the proxy or a second server down with it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

from rethinkdb import RethinkDB
from rethinkdb.errors import ReqlDriverError

from .processes import ManagedProcess, RethinkDBServer, reusable_port

logger = logging.getLogger(__name__)

PROXY_READY = r"^Proxy ready"
READY_TIMEOUT = 60.0
PROXY = "proxy"


class Crash(NamedTuple):
    """A process of the cluster that exited without being told to, then restarted."""

    name: str
    returncode: int | None
    at: float  # time.monotonic()
    last_lines: str


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
        self.crashes: list[Crash] = []
        self._down: set[str] = set()  # the servers a test took down on purpose
        self._lock = threading.Lock()  # between the supervisor and kill
        self._stop_supervising = threading.Event()
        self._supervisor: threading.Thread | None = None

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
        """Start the proxy; return once it sees every server that runs."""
        self._launch_proxy().wait_for(PROXY_READY, timeout=READY_TIMEOUT)
        self.wait_servers(sum(1 for server in self.servers.values() if server.alive()))

    def _launch_proxy(self) -> ManagedProcess:
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
        return self.proxy

    def _run(self, build: Any, timeout: float = 10.0) -> Any:
        r = RethinkDB()
        with r.connect(**self.connect_kwargs(), timeout=timeout) as conn:
            return build(r).run(conn)

    def wait_servers(self, count: int, timeout: float = READY_TIMEOUT) -> None:
        """Until the cluster (seen from the proxy) has ``count`` servers, each connected to
        every other one. Peers go on connecting to one another after each is ready, and a
        server lost in the middle of that can bring down another (see the module's
        docstring): no fault before the whole mesh is there. A proxy the supervisor is
        starting again refuses connections meanwhile."""
        deadline = time.monotonic() + timeout
        seen = "no answer from the proxy"
        while True:
            try:
                rows = self._run(
                    lambda r: (
                        r.db("rethinkdb")
                        .table("server_status")
                        .pluck("name", {"network": "connected_to"})
                        .coerce_to("array")
                    )
                )
            except ReqlDriverError as error:  # refused, or closed by a proxy that crashed
                seen = f"no answer from the proxy: {error}"
            else:
                names = {row["name"] for row in rows}
                meshed = all(
                    all(
                        row["network"]["connected_to"].get(other) for other in names - {row["name"]}
                    )
                    for row in rows
                )
                if len(rows) == count and meshed:
                    return
                seen = f"{len(rows)} servers connected (all to each other: {meshed})"
            if time.monotonic() > deadline:
                raise TimeoutError(seen)
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
        """The primary's server; None while none is known, or the proxy does not answer
        (being started again: see ``supervise``)."""
        try:
            return self.primary_of(database, table)
        except (LookupError, ReqlDriverError):
            return None

    def replica_count(self, database: str, table: str) -> int:
        config = self._run(lambda r: r.db(database).table(table).config())
        return len(config["shards"][0]["replicas"])

    def kill(self, name: str) -> None:
        """SIGKILL server ``name``: a crash, which the supervisor leaves alone."""
        with self._lock:
            self._down.add(name)
            self.servers[name].kill()
        logger.info("RethinkDB server %s killed", name)

    def start_server(self, name: str) -> None:
        """Server ``name`` back on its ports and data, joining the others; returns once
        it is ready."""
        self.start_servers([name])

    def start_servers(self, names: list[str]) -> None:
        """Servers ``names`` back, all started before any wait: with two of three down,
        the first back cannot have every replica of its tables ready alone."""
        with self._lock:  # the supervisor leaves them to this
            self._down.update(names)
            for name in names:
                if not self.servers[name].alive():
                    self._launch(name)
        for name in names:
            self.servers[name].wait_ready(wait_tables=False)
        if self.proxy is not None:
            self.wait_servers(sum(1 for other in self.servers.values() if other.alive()))
        for name in names:
            self.servers[name]._wait_tables_ready()
            with self._lock:
                self._down.discard(name)

    def _launch(self, name: str) -> None:
        server = self.servers[name]
        server.extra_args = ["--server-name", name, *self._joins(name)]
        server.launch()

    def supervise(self, interval: float = 0.2) -> None:
        """Restart, from a thread, any server or proxy that exits on its own."""
        self._supervisor = threading.Thread(
            target=self._supervise, args=(interval,), name="rethinkdb-supervisor", daemon=True
        )
        self._supervisor.start()

    def _supervise(self, interval: float) -> None:
        while not self._stop_supervising.wait(interval):
            try:
                self.restart_crashed()
            except Exception:  # the thread's boundary: try again at the next round
                logger.exception("restarting a crashed RethinkDB process failed")

    def restart_crashed(self) -> list[Crash]:
        """Start again each server (not taken down by a test) and the proxy whose process
        has exited, without waiting for them (a server is ready only once it reached a
        peer: several may be down); returns them (also kept in ``crashes``)."""
        found = []
        with self._lock:
            for name, server in self.servers.items():
                if name not in self._down and server.process is not None and not server.alive():
                    found.append(self._crash(name, server.process))
                    self._launch(name)
            if self.proxy is not None and self.proxy.process.poll() is not None:
                found.append(self._crash(PROXY, self.proxy))
                self._launch_proxy()
        return found

    def _crash(self, name: str, process: ManagedProcess) -> Crash:
        crash = Crash(name, process.process.poll(), time.monotonic(), process.output[-3000:])
        self.crashes.append(crash)
        logger.warning(
            "RethinkDB %s exited on its own (%s); started again. Its last lines:\n%s",
            name,
            crash.returncode,
            crash.last_lines[-1500:],
        )
        return crash

    def output(self) -> dict[str, str]:
        """Each process's output, after the last lines of its runs that crashed."""
        outputs = {name: server.output for name, server in self.servers.items()}
        if self.proxy is not None:
            outputs[PROXY] = self.proxy.output
        for crash in reversed(self.crashes):
            outputs[crash.name] = (
                f"{crash.last_lines}\n--- exited on its own ({crash.returncode}); started"
                f" again ---\n{outputs.get(crash.name, '')}"
            )
        return outputs

    def close(self) -> None:
        self._stop_supervising.set()
        if self._supervisor is not None:
            self._supervisor.join(READY_TIMEOUT)
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
            cluster.supervise()
            yield cluster
        finally:
            cluster.close()
