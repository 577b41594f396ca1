"""Slow end-to-end tests: idle periods past redis-py's 5 s timeout, start-up and shutdown.

The start-up and shutdown tests run workers of their own in a channel-layer
namespace of their own (a Redis key prefix), so that the suite's worker, which
follows every table, cannot blur what they measure. The test joins the table's
group itself and counts what the workers deliver.
"""

from __future__ import annotations

import asyncio
import signal
import uuid

import pytest
from channels_redis.core import RedisChannelLayer

from .helpers import WsClient, receive

pytestmark = pytest.mark.slow


def push(database: str, table: str, data, **fields) -> dict:
    return {"type": "changeflow.push", "database": database, "table": table, "data": data, **fields}


@pytest.mark.usefixtures("worker")
async def test_worker_and_consumer_survive_idle_periods_longer_than_5_seconds(
    layer, ws_connect, stream_db
):
    """Plain CHANNEL_LAYERS config: redis-py's 5 s socket_timeout hits idle receives."""
    client: WsClient = await ws_connect()
    stream = f"{stream_db}.idle"
    await client.subscribe(stream)
    # Nothing happens for longer than the socket timeout: this wait is the test's subject.
    await asyncio.sleep(6.5)
    reply = await layer.new_channel()
    await layer.send("changeflow", push(stream_db, "idle", {"a": 1}, reply_channel=reply))
    assert (await receive(layer, reply))["ok"] is True
    [change] = await client.changes(stream, 1)
    assert change["new_val"]["a"] == 1
    # The connection is still open and usable after the idle period.
    assert (await client.request("unsubscribe", stream))["event"] == "unsubscribed"


@pytest.fixture
async def own_namespace(redis_url, stream_db):
    """A channel layer in a namespace of the test's own, and the env for its workers."""
    prefix = "lc" + uuid.uuid4().hex[:8]
    channel_layer = RedisChannelLayer(
        hosts=[{"address": redis_url, "socket_timeout": None}], prefix=prefix, capacity=1000
    )
    env = {
        "CHANGEFLOW_TEST_REDIS_PREFIX": prefix,
        "CHANGEFLOW_TEST_WATCH": f"{stream_db}.*",
        "CHANGEFLOW_TEST_HANDLERS": "",
    }
    yield channel_layer, env
    await channel_layer.close_pools()


class GroupMember:
    """Joins a table's group and reads it all the time: channels_redis drops
    group messages silently once a member's channel holds ``capacity`` of them.
    ``messages`` are the change messages, batches unpacked."""

    def __init__(self, channel_layer: RedisChannelLayer) -> None:
        self.channel_layer = channel_layer
        self.messages: list[dict] = []
        self._arrived = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def join(self, group: str) -> None:
        channel = await self.channel_layer.new_channel()
        await self.channel_layer.group_add(group, channel)
        self._task = asyncio.ensure_future(self._read(channel))

    async def _read(self, channel: str) -> None:
        while True:
            message = await self.channel_layer.receive(channel)
            # Under load the worker sends several changes as one batch; a feed's
            # new epoch is announced too (changeflow.epoch): not a change.
            if message["type"] == "changeflow.epoch":
                continue
            batch = message["changes"] if message["type"] == "changeflow.batch" else [message]
            self.messages.extend(batch)
            self._arrived.set()

    async def wait_for(self, count: int, timeout: float = 30) -> list[dict]:
        """Until ``count`` messages arrived in all; returns them."""

        async def enough() -> None:
            while len(self.messages) < count:
                self._arrived.clear()
                await self._arrived.wait()

        await asyncio.wait_for(enough(), timeout)
        return self.messages[:count]

    def leave(self) -> None:
        if self._task is not None:
            self._task.cancel()


async def test_pushes_waiting_before_start_up_are_written_and_announced(
    own_namespace, worker_factory, stream_db, rethinkdb_target, ar
):
    channel_layer, env = own_namespace
    conn = await ar.connect(**rethinkdb_target.connect_kwargs())
    try:
        await ar.db_create(stream_db).run(conn)
        await ar.db(stream_db).table_create("early").run(conn)
    finally:
        await conn.close(noreply_wait=False)
    member = GroupMember(channel_layer)
    await member.join(f"{stream_db}.early")
    for n in range(5):  # queued in Redis before any worker runs
        await channel_layer.send("changeflow", push(stream_db, "early", {"n": n}))
    worker_factory(**env)
    changes = await member.wait_for(5)
    member.leave()
    assert sorted(c["change"]["new_val"]["n"] for c in changes) == [0, 1, 2, 3, 4]
    assert [c["seq"] for c in changes] == [1, 2, 3, 4, 5]


async def test_sigterm_writes_and_announces_received_pushes_and_leaves_the_rest(
    own_namespace, worker_factory, stream_db
):
    channel_layer, env = own_namespace
    member = GroupMember(channel_layer)
    await member.join(f"{stream_db}.t")
    first = worker_factory(**env)
    total = 300
    for n in range(total):
        await channel_layer.send("changeflow", push(stream_db, "t", {"n": n}))
    await asyncio.to_thread(first.wait_for, r"push insert into", 30)
    first.signal(signal.SIGTERM)
    assert await asyncio.to_thread(first.process.wait, 30) == 0, first.output[-3000:]
    assert "changeflow worker stopped" in first.output
    written_by_first = first.output.count("push insert into")
    assert 0 < written_by_first
    # Every push the first worker wrote was also announced before it exited...
    announced = await member.wait_for(written_by_first, timeout=5)
    assert {m["epoch"] for m in announced} == {announced[0]["epoch"]}
    # ...and the second worker writes and announces the rest: nothing lost, nothing twice.
    worker_factory(**env)
    announced = await member.wait_for(total)
    member.leave()
    numbers = [message["change"]["new_val"]["n"] for message in announced]
    assert sorted(numbers) == list(range(total))
