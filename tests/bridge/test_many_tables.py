"""Many tables (issue 17): a worker following 300 tables holds at most
CHANGEFLOW_FEED_CONNECTIONS connections for their feeds (plus its few others),
delivers the changes of every table, and once its connections are cut (the server
drops them: a crash and restart for a real one) every feed comes back in a new epoch.

On the ReQL test server and on a real RethinkDB (``faulty_rethinkdb``)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from rethinkdb import RethinkDB

from changeflow_channels.testing.processes import start_worker

from ..conftest import save_output
from .conftest import REPO

pytestmark = pytest.mark.slow

DATABASE = "many"
TABLES = [f"t{n}" for n in range(300)]
FEED_CONNECTIONS = 4
# Besides the feeds': table discovery, writes, autoclean.
OTHER_CONNECTIONS = 3


def connections_to(pid: int, port: int) -> int:
    """The established TCP connections of process ``pid`` to 127.0.0.1:``port``."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as lines:
            for line in lines.readlines()[1:]:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if remote_port == port and fields[3] == "01" and fields[9] in inodes:
                    count += 1
    return count


class Member:
    """A raw member of every table's group: the changes and epochs the worker sends."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.changes: dict[str, list[dict[str, Any]]] = {}
        self.epochs: dict[str, list[str]] = {}
        self.arrived = asyncio.Event()

    async def join(self, streams: list[str]) -> list[asyncio.Task[None]]:
        """A channel per table: a channel holds at most the layer's capacity (100)."""
        tasks = []
        for stream in streams:
            channel = await self.layer.new_channel()
            await self.layer.group_add(stream, channel)
            tasks.append(asyncio.ensure_future(self._read(channel)))
        return tasks

    async def _read(self, channel: str) -> None:
        while True:
            message = await self.layer.receive(channel)
            batch = message["changes"] if message["type"] == "changeflow.batch" else [message]
            for item in batch:
                stream = f"{item['database']}.{item['table']}"
                if item["type"] == "changeflow.epoch":
                    self.epochs.setdefault(stream, []).append(item["epoch"])
                elif item["type"] == "changeflow.change":
                    self.changes.setdefault(stream, []).append(item)
            self.arrived.set()

    async def until(self, done: Any, timeout: float, what: str) -> None:
        async def wait() -> None:
            while not done():
                self.arrived.clear()
                await self.arrived.wait()

        try:
            await asyncio.wait_for(wait(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(
                f"timed out waiting for {what}: epochs of {len(self.epochs)} tables, "
                f"changes of {len(self.changes)}"
            ) from None


@pytest.fixture
async def member(layer) -> AsyncIterator[Member]:
    joined = Member(layer)
    tasks = await joined.join([f"{DATABASE}.{table}" for table in TABLES])
    yield joined
    for task in tasks:
        task.cancel()


def write_everywhere(r: RethinkDB, url_host: str, port: int, marker: str) -> None:
    with r.connect(host=url_host, port=port) as conn:
        for table in TABLES:
            r.db(DATABASE).table(table).insert({"id": marker}).run(conn)


async def test_a_worker_follows_300_tables_on_a_few_connections_and_recovers_them_all(
    faulty_rethinkdb, process_env, member
):
    r = RethinkDB()
    host, port = faulty_rethinkdb.host, faulty_rethinkdb.port
    with r.connect(host=host, port=port) as conn:
        r.db_create(DATABASE).run(conn)
        for start in range(0, len(TABLES), 50):
            r.expr([r.db(DATABASE).table_create(t) for t in TABLES[start : start + 50]]).run(conn)
        r.db(DATABASE).wait().run(conn)
    env = {
        **process_env,
        "CHANGEFLOW_TEST_RETHINKDB_URL": faulty_rethinkdb.url,
        "CHANGEFLOW_TEST_WATCH": f"{DATABASE}.*",
        "CHANGEFLOW_TEST_FEED_CONNECTIONS": str(FEED_CONNECTIONS),
        "CHANGEFLOW_TEST_CHANNEL": "many-tables",
        "CHANGEFLOW_TEST_HANDLERS": "",
        # The member's channels share one Redis list (one process): room for all.
        "CHANGEFLOW_TEST_CAPACITY": "10000",
    }
    worker = start_worker("-q", env=env, cwd=str(REPO))
    try:
        # -q: no ready line; every table's first epoch is announced once its feed is open.
        streams = {f"{DATABASE}.{table}" for table in TABLES}
        await member.until(lambda: set(member.epochs) == streams, 120, "300 feeds open")
        pid = worker.process.pid
        held = connections_to(pid, port)
        assert 1 <= held <= FEED_CONNECTIONS + OTHER_CONNECTIONS, held

        await asyncio.to_thread(write_everywhere, r, host, port, "first")
        await member.until(lambda: set(member.changes) == streams, 60, "a change of every table")
        first = {stream: changes[-1]["epoch"] for stream, changes in member.changes.items()}

        await asyncio.to_thread(faulty_rethinkdb.drop_connections)
        await member.until(
            lambda: all(member.epochs[s][-1] != first[s] for s in streams),
            120,
            "a new epoch of every table",
        )
        await asyncio.to_thread(write_everywhere, r, host, port, "second")
        await member.until(
            lambda: all(
                member.changes[s][-1]["change"]["new_val"]["id"] == "second" for s in streams
            ),
            60,
            "a change of every table after the cut",
        )
        for stream in streams:
            last = member.changes[stream][-1]
            assert last["epoch"] == member.epochs[stream][-1] != first[stream]
            assert last["seq"] == 1  # the new epoch counts from 1
        held = connections_to(pid, port)
        assert 1 <= held <= FEED_CONNECTIONS + OTHER_CONNECTIONS, held
    finally:
        worker.stop()
        save_output("worker-many-tables", worker)
