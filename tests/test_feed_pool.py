"""The connections the table feeds share (``worker/feed_pool.py``).

Units without a network (``feed_pool.connect`` replaced by a fake): how many
connections, who shares which, one connect attempt per connection however many
feeds wait for it. Then feeds on one shared connection of the suite's RethinkDB
(the test server, or a real one): the driver multiplexes their changefeeds, and
stopping one feed closes its cursor, not the connection the others read."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from rethinkdb import RethinkDB
from rethinkdb.errors import ReqlDriverError

from changeflow_channels.rethink import new_driver
from changeflow_channels.worker import feed_pool
from changeflow_channels.worker.feed_pool import SharedConnections, Slot, least_used
from changeflow_channels.worker.feeds import TableFeed

from .test_follower import ADDRESS


class Conn:
    def __init__(self) -> None:
        self.open = True

    def is_open(self) -> bool:
        return self.open

    async def close(self, noreply_wait: bool = True) -> None:
        self.open = False


class Server:
    def __init__(self) -> None:
        self.attempts = 0
        self.failing = False
        self.gate = asyncio.Event()
        self.gate.set()

    async def connect(self, r: Any, address: Any) -> Conn:
        self.attempts += 1
        await self.gate.wait()
        if self.failing:
            raise ReqlDriverError("Could not connect to 127.0.0.1:1.")
        return Conn()


@pytest.fixture
def server(monkeypatch) -> Server:
    fake = Server()
    monkeypatch.setattr(feed_pool, "connect", fake.connect)
    return fake


def pool(size: int) -> SharedConnections:
    return SharedConnections(new_driver(), ADDRESS, size, ping_every=3600)


def test_a_new_user_goes_to_the_least_used_slot():
    slots = [Slot(n) for n in range(3)]
    slots[0].users, slots[1].users, slots[2].users = 2, 1, 1
    assert least_used(slots) is slots[1]


async def test_feeds_share_at_most_size_connections_evenly(server):
    shared = pool(4)
    conns = await asyncio.gather(*(shared.acquire() for _ in range(40)))
    assert server.attempts == 4 and len({id(c) for c in conns}) == 4
    assert [slot.users for slot in shared.slots] == [10] * 4
    for conn in conns[:20]:
        await shared.release(conn)
    assert sum(slot.users for slot in shared.slots) == 20
    await shared.close()
    assert not any(conn.is_open() for conn in conns)


async def test_waiters_share_one_connect_attempt_and_its_failure(server):
    shared = pool(2)
    server.failing = True
    server.gate.clear()
    attempts = [asyncio.ensure_future(shared.acquire()) for _ in range(100)]
    await asyncio.sleep(0)  # every acquire is waiting on its slot's attempt
    server.gate.set()
    results = await asyncio.gather(*attempts, return_exceptions=True)
    assert all(isinstance(result, ReqlDriverError) for result in results)
    assert server.attempts == 2  # one per connection, not one per feed
    assert [slot.users for slot in shared.slots] == [0, 0]
    server.failing = False
    conn = await shared.acquire()
    assert conn.is_open() and server.attempts == 3


async def test_a_lost_connection_is_opened_again_by_the_next_acquire(server):
    shared = pool(1)
    lost = await shared.acquire()
    lost.open = False  # the server went away: every cursor on it ended
    again = await shared.acquire()
    assert again is not lost and again.is_open() and server.attempts == 2
    await shared.release(lost)
    await shared.release(again)
    assert shared.slots[0].users == 0


async def test_feeds_multiplexed_on_one_connection_stop_alone(rethinkdb_target, dbname):
    tables = [f"t{n}" for n in range(20)]
    r = RethinkDB()
    with r.connect(**rethinkdb_target.connect_kwargs()) as conn:
        for table in tables:
            r.db(dbname).table_create(table).run(conn)
    driver = new_driver()
    shared = SharedConnections(driver, rethinkdb_target.address, 1)
    got: dict[str, list[dict[str, Any]]] = {table: [] for table in tables}
    arrived = asyncio.Event()

    async def sink(message: dict[str, Any]) -> None:
        if message["type"] == "changeflow.change":
            got[message["table"]].append(message)
            arrived.set()

    feeds = [
        TableFeed(driver, rethinkdb_target.address, dbname, t, sink, connections=shared)
        for t in tables
    ]
    tasks = [asyncio.ensure_future(feed.run()) for feed in feeds]
    try:
        await asyncio.wait_for(asyncio.gather(*(feed.ready.wait() for feed in feeds)), 30)
        assert shared.open_connections == 1
        for feed in feeds[:10]:
            feed.stop()
        done, _ = await asyncio.wait(tasks[:10], timeout=10)
        assert len(done) == 10  # each stopped feed's cursor closed, and it ended
        conn = shared.slots[0].conn
        assert conn.is_open() and not any(task.done() for task in tasks[10:])

        def write() -> None:
            with r.connect(**rethinkdb_target.connect_kwargs()) as c:
                for table in tables:
                    r.db(dbname).table(table).insert({"id": "x"}).run(c)

        await asyncio.to_thread(write)

        async def all_live_fed() -> None:
            while not all(got[table] for table in tables[10:]):
                arrived.clear()
                await arrived.wait()

        await asyncio.wait_for(all_live_fed(), 15)
        assert all(got[table] == [] for table in tables[:10])
        assert shared.slots[0].conn is conn  # still the one connection
    finally:
        for feed in feeds:
            feed.stop()
        await asyncio.wait(tasks, timeout=10)
        await shared.close()
