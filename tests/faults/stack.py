"""The fault matrix's stack of real processes, shared by the scenarios of a run.

``FaultStack`` owns: a redis-server, a RethinkDB (a real ``rethinkdb`` process when
``CHANGEFLOW_TEST_RETHINKDB_BIN`` is set, else the embedded ReQL test server), one or
more ``manage.py changeflow`` workers and one or more Daphnes, all on their own free
ports, in a channel-layer namespace of their own, watching only the matrix's
database. Every fault acts on a real process (SIGKILL, SIGSTOP/SIGCONT, restarts);
the methods block, and are run with ``asyncio.to_thread`` by the scenarios.
"""

from __future__ import annotations

import logging
import re
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from changeflow_channels.testing import ReqlServer
from changeflow_channels.testing.faulty import FaultyRethinkDB
from changeflow_channels.testing.processes import (
    DAPHNE_READY,
    WORKER_READY,
    ManagedProcess,
    RedisServer,
    RethinkDBServer,
    free_port,
    start_daphne,
    start_worker,
    wait_stopped,
)

from ..conftest import RETHINKDB_BIN, save_output

logger = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
SERVER_NAME = "rethinkdb-2.4" if RETHINKDB_BIN else "test-server"


@contextmanager
def own_rethinkdb() -> Iterator[FaultyRethinkDB]:
    """A RethinkDB the matrix may break: a real process of the binary, else the test server."""
    if RETHINKDB_BIN:
        with RethinkDBServer.running(RETHINKDB_BIN) as real:
            yield real
    else:
        with ReqlServer.in_thread(port=0) as server:
            yield server


# CHANGEFLOW_FEED_QUEUE_SIZE of the matrix's workers (the feed overflow scenario fills it).
FEED_QUEUE_SIZE = 2000


class FaultStack:
    """Redis, RethinkDB, workers and Daphnes of the matrix's own (see the module doc)."""

    def __init__(self, base_env: dict[str, str], rethinkdb: FaultyRethinkDB, redis: RedisServer):
        self.rethinkdb = rethinkdb
        self.redis = redis
        self.database = "faults_" + uuid.uuid4().hex[:8]
        self.prefix = "fm" + uuid.uuid4().hex[:8]
        self.env = {
            **base_env,
            "CHANGEFLOW_TEST_RETHINKDB_URL": rethinkdb.url,
            "CHANGEFLOW_TEST_REDIS_URL": redis.url,
            "CHANGEFLOW_TEST_REDIS_PREFIX": self.prefix,
            "CHANGEFLOW_TEST_WATCH": f"{self.database}.*",
            "CHANGEFLOW_TEST_HANDLERS": "",
            "CHANGEFLOW_TEST_DEBUG_LOGS": "1",
            # Small enough for the overflow scenario to fill on a real server in CI time
            # (RethinkDB's default is 100,000), far above what the other faults queue.
            "CHANGEFLOW_TEST_FEED_QUEUE_SIZE": str(FEED_QUEUE_SIZE),
        }
        self.workers: list[ManagedProcess] = []
        self.daphnes: dict[int, ManagedProcess] = {}  # port -> process
        self.retired: list[tuple[str, ManagedProcess]] = []  # killed/stopped, output kept
        self._count = 0

    # -- processes -------------------------------------------------------------------------

    def start(self) -> None:
        self.start_workers(1)
        self.start_daphne()

    def start_workers(self, count: int) -> None:
        started = [start_worker(env=self.env, cwd=str(REPO)) for _ in range(count)]
        for worker in started:
            worker.wait_for(WORKER_READY, timeout=60)
        self.workers.extend(started)

    def start_daphne(self) -> int:
        port = free_port()
        process = start_daphne("tests.asgi:application", port, env=self.env, cwd=str(REPO))
        process.wait_for(DAPHNE_READY, timeout=60)
        self.daphnes[port] = process
        return port

    @property
    def port(self) -> int:
        """The Daphne clients connect to (the newest)."""
        return list(self.daphnes)[-1]

    def url(self, port: int | None = None) -> str:
        return f"ws://127.0.0.1:{port or self.port}/ws/changeflow/"

    def origin(self, port: int | None = None) -> str:
        return f"http://127.0.0.1:{port or self.port}"

    def _retire(self, kind: str, process: ManagedProcess) -> None:
        self._count += 1
        self.retired.append((f"{kind}{self._count}", process))

    def kill_worker(self, worker: ManagedProcess) -> None:
        worker.kill()
        self.workers.remove(worker)
        self._retire("worker", worker)

    def stop_workers_beyond(self, count: int) -> None:
        """Back to ``count`` workers (the newest ones are stopped cleanly)."""
        while len(self.workers) > count:
            worker = self.workers.pop()
            worker.stop()
            self._retire("worker", worker)

    def holder_of(self, stream: str) -> ManagedProcess:
        """The worker that followed ``stream`` last (its feed is the live one)."""
        pattern = re.compile(r"following " + re.escape(stream) + r" \(epoch")
        best: tuple[float, ManagedProcess] | None = None
        for worker in self.workers:
            for index, line in enumerate(worker.lines):
                if pattern.search(line) and (best is None or index >= best[0]):
                    best = (index, worker)
        if best is None:
            raise AssertionError(f"no worker follows {stream}")
        return best[1]

    def wait_followed(self, stream: str, timeout: float = 30.0) -> None:
        """Until some worker logged that it follows ``stream`` (blocking)."""
        pattern = r"following " + re.escape(stream) + r" \(epoch"
        deadline = time.monotonic() + timeout
        while True:
            for worker in list(self.workers):  # each waited on briefly, in turn
                try:
                    worker.wait_for(pattern, timeout=0.2, from_start=True)
                    return
                except TimeoutError:
                    pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"no worker follows {stream} within {timeout} s")

    def kill_daphne(self, port: int) -> None:
        process = self.daphnes.pop(port)
        process.kill()
        self._retire("daphne", process)

    # -- faults on Redis ---------------------------------------------------------------------

    def crash_redis(self) -> None:
        """SIGKILL and a start on the same port; its data is gone (it keeps nothing)."""
        process = self.redis.process
        assert process is not None
        process.kill()
        self._retire("redis", process)
        self.redis.process = None
        self.redis.start()

    def freeze_redis(self) -> None:
        process = self.redis.process
        assert process is not None
        process.signal(signal.SIGSTOP)
        wait_stopped(process.process.pid)

    def thaw_redis(self) -> None:
        assert self.redis.process is not None
        self.redis.process.signal(signal.SIGCONT)

    # -- the end -------------------------------------------------------------------------------

    def alive(self) -> list[str]:
        """Processes of the stack that died without being told to."""
        dead = [f"worker pid {w.process.pid}" for w in self.workers if w.process.poll() is not None]
        dead += [f"daphne :{p}" for p, d in self.daphnes.items() if d.process.poll() is not None]
        return dead

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
            self._retire("worker", worker)
        for process in self.daphnes.values():
            process.stop()
            self._retire("daphne", process)
        self.workers, self.daphnes = [], {}
        for name, process in self.retired:
            if process.process.poll() is None:
                process.stop()
            save_output(f"faults-{SERVER_NAME}-{name}", process)


def connect_kwargs(rethinkdb: Any) -> dict[str, Any]:
    return {"host": rethinkdb.host, "port": rethinkdb.port}
