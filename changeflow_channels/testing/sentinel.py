"""A throwaway Redis Sentinel topology for tests: a master, replicas and Sentinels.

Every process is Debian's ``redis-server`` (a Sentinel is ``redis-server conf
--sentinel``) on loopback, on free ports, with a temporary directory of its own,
keeping nothing on disk. ``SentinelTopology.start`` returns once the replicas are in
sync with the master and every Sentinel knows the master, the replicas and the other
Sentinels (so a failover can start at once). ``kill_master`` is a crash (SIGKILL);
``wait_failover`` waits until every Sentinel names a new master and that server
answers as a master. ``cut_replicas`` before the kill makes the failover lose the
writes the master took since (a replica lagging behind).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from .processes import ManagedProcess, reusable_port

logger = logging.getLogger(__name__)

MASTER_NAME = "changeflow"
READY = r"[Rr]eady to accept connections"
SENTINEL_READY = r"Sentinel ID is|\+monitor master"
POLL = 0.05  # seconds between two looks at what the servers report


@dataclass
class SentinelSettings:
    """What the Sentinels are told (sentinel.conf): how soon a master is deemed down."""

    down_after_ms: int = 1000
    failover_timeout_ms: int = 3000
    quorum: int = 2


def _binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (make test installs it with apt-get)")
    return binary


@dataclass
class RedisNode:
    """One ``redis-server`` process (a data server or a Sentinel)."""

    name: str
    port: int
    directory: str
    sentinel: bool = False
    process: ManagedProcess | None = None
    config: list[str] = field(default_factory=list)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def conf_path(self) -> str:
        return os.path.join(self.directory, "sentinel.conf" if self.sentinel else "redis.conf")

    def start(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        with open(self.conf_path, "w", encoding="ascii") as conf:
            conf.write("\n".join(self.config) + "\n")
        args = [_binary(), self.conf_path]
        if self.sentinel:
            args.append("--sentinel")
        self.process = ManagedProcess(args, cwd=self.directory)
        self.process.wait_for(SENTINEL_READY if self.sentinel else READY, timeout=15)

    def client(self, timeout: float = 1.0) -> Redis:
        return Redis(*self.address, socket_timeout=timeout, socket_connect_timeout=timeout)

    def alive(self) -> bool:
        return self.process is not None and self.process.process.poll() is None

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    @property
    def output(self) -> str:
        return self.process.output if self.process is not None else ""


def _data_config(port: int, directory: str) -> list[str]:
    return [
        "bind 127.0.0.1",
        f"port {port}",
        f'dir "{directory}"',
        'save ""',
        "appendonly no",
        "loglevel notice",
        # A replica promoted by Sentinel takes writes at once; while the master is down
        # the replica still answers reads (the clients ask the Sentinels first anyway).
        "replica-serve-stale-data yes",
        # A replica's first sync starts at once (Redis 7 waits 5 s for more replicas).
        "repl-diskless-sync-delay 0",
    ]


class SentinelTopology:
    """A master, ``replicas`` replicas and ``sentinels`` Sentinels on loopback."""

    def __init__(
        self,
        *,
        replicas: int = 1,
        sentinels: int = 3,
        settings: SentinelSettings | None = None,
        master_name: str = MASTER_NAME,
    ) -> None:
        self.master_name = master_name
        self.settings = settings or SentinelSettings()
        self.root = tempfile.mkdtemp(prefix="changeflow-sentinel-")
        taken: list[int] = []

        def port() -> int:
            chosen = reusable_port(taken)
            taken.append(chosen)
            return chosen

        self.servers = [
            RedisNode(name, port(), os.path.join(self.root, name))
            for name in ["redis0", *[f"redis{n}" for n in range(1, replicas + 1)]]
        ]
        self.sentinels = [
            RedisNode(f"sentinel{n}", port(), os.path.join(self.root, f"sentinel{n}"), True)
            for n in range(1, sentinels + 1)
        ]
        self.master = self.servers[0]

    # -- what clients are given ---------------------------------------------------------

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [node.address for node in self.sentinels]

    def host(self, **options: Any) -> dict[str, Any]:
        """A channels_redis host (and a ``CHANGEFLOW_REDIS``) naming this master."""
        return {
            "sentinels": [list(address) for address in self.sentinel_addresses],
            "master_name": self.master_name,
            **options,
        }

    # -- starting ---------------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> None:
        master = self.master
        master.config = _data_config(master.port, master.directory)
        master.start()
        for replica in self.servers[1:]:
            replica.config = [
                *_data_config(replica.port, replica.directory),
                f"replicaof 127.0.0.1 {master.port}",
            ]
            replica.start()
        deadline = time.monotonic() + timeout
        self._wait(deadline, self._replicas_in_sync, "replicas in sync with the master")
        for sentinel in self.sentinels:
            sentinel.config = self._sentinel_config(sentinel)
            sentinel.start()
        self._wait(deadline, self._sentinels_know_everything, "Sentinels know the topology")
        logger.info(
            "Sentinel topology up: master %s, replicas %s, sentinels %s",
            master.port,
            [r.port for r in self.servers[1:]],
            [s.port for s in self.sentinels],
        )

    def _sentinel_config(self, sentinel: RedisNode) -> list[str]:
        s, name = self.settings, self.master_name
        return [
            "bind 127.0.0.1",
            f"port {sentinel.port}",
            f'dir "{sentinel.directory}"',
            "loglevel notice",
            f"sentinel monitor {name} 127.0.0.1 {self.master.port} {s.quorum}",
            f"sentinel down-after-milliseconds {name} {s.down_after_ms}",
            f"sentinel failover-timeout {name} {s.failover_timeout_ms}",
            f"sentinel parallel-syncs {name} 1",
        ]

    def _wait(self, deadline: float, ready: Any, what: str) -> None:
        while True:
            with contextlib.suppress(RedisError, OSError):
                if ready():
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"Sentinel topology: not ready ({what}):\n{self.output()}")
            time.sleep(POLL)  # polling the servers' own reports: nothing to await

    def _replicas_in_sync(self) -> bool:
        with self.master.client() as client:
            info = client.info("replication")
        online = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
        wanted = len(self.servers) - 1
        return len(online) >= wanted and all(v.get("state") == "online" for v in online)

    def _sentinels_know_everything(self) -> bool:
        replicas, others = len(self.servers) - 1, len(self.sentinels) - 1
        for sentinel in self.sentinels:
            with sentinel.client() as client:
                known = client.execute_command("SENTINEL", "REPLICAS", self.master_name)
                peers = client.execute_command("SENTINEL", "SENTINELS", self.master_name)
            if len(known) < replicas or len(peers) < others:
                return False
        return True

    def wait_replicated(self, timeout: float = 10.0) -> None:
        """Until every replica has everything the master has written so far."""
        with self.master.client() as client:
            offset = client.info("replication")["master_repl_offset"]

        def caught_up() -> bool:
            for replica in self.servers:
                if replica is self.master:
                    continue
                with replica.client() as client:
                    if client.info("replication").get("slave_repl_offset", -1) < offset:
                        return False
            return True

        self._wait(time.monotonic() + timeout, caught_up, "replicas caught up")

    # -- faults ---------------------------------------------------------------------------

    def master_address(self) -> tuple[str, int] | None:
        """The master as the first Sentinel that answers names it (None: none answers)."""
        for sentinel in self.sentinels:
            if not sentinel.alive():
                continue
            with contextlib.suppress(RedisError, OSError), sentinel.client() as client:
                host, port = client.execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
                )
                return (host.decode() if isinstance(host, bytes) else host, int(port))
        return None

    def cut_replicas(self) -> None:
        """The replicas stop replicating (their link to the master drops and cannot come
        back: a wrong ``masterauth``) while the master goes on taking writes: what the
        master takes from now on is lost in a failover, as with a replica lagging behind."""
        for replica in self.servers:
            if replica is not self.master:
                with replica.client() as client:
                    client.config_set("masterauth", "changeflow-cut-off")
                    client.execute_command("CLIENT", "KILL", "TYPE", "master")

    def heal_replicas(self) -> None:
        """Undo ``cut_replicas`` (for the replicas still alive)."""
        for replica in self.servers:
            if replica.alive():
                with replica.client() as client:
                    client.config_set("masterauth", "")

    def kill_master(self) -> RedisNode:
        """SIGKILL the current master; returns it."""
        killed = self.master
        killed.kill()
        logger.info("killed the Redis master on port %d", killed.port)
        return killed

    def wait_failover(self, timeout: float = 30.0) -> RedisNode:
        """Until every live Sentinel names one new master and it answers as a master."""
        old = self.master
        deadline = time.monotonic() + timeout
        self._wait(deadline, lambda: self._promoted(old) is not None, "a replica promoted")
        promoted = self._promoted(old)
        assert promoted is not None
        self.master = promoted
        return promoted

    def _promoted(self, old: RedisNode) -> RedisNode | None:
        names: set[int] = set()
        for sentinel in self.sentinels:
            if not sentinel.alive():
                continue
            with sentinel.client() as client:
                _, port = client.execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
                )
            names.add(int(port))
        if len(names) != 1 or old.port in names:
            return None
        node = next(n for n in self.servers if n.port in names)
        with node.client() as client:
            if client.info("replication").get("role") != "master":
                return None
        return node

    # -- stopping ---------------------------------------------------------------------------

    def output(self) -> str:
        nodes = [*self.servers, *self.sentinels]
        return "\n".join(f"--- {n.name} ({n.port}) ---\n{n.output[-3000:]}" for n in nodes)

    def stop(self) -> None:
        for node in [*self.sentinels, *self.servers]:
            node.stop()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    @classmethod
    @contextlib.contextmanager
    def running(cls, **options: Any) -> Iterator[SentinelTopology]:
        topology = cls(**options)
        try:
            topology.start()
            yield topology
        finally:
            topology.close()
