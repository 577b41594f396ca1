"""A thousand clients subscribing at once on one Daphne, and 500 leaving at once
(issue 14, case 12): no subscribe refused as ``unavailable`` (channels_redis's own
pool raised ``MaxConnectionsError`` beyond 100 commands at once), and no member of
a client gone left in its group. After a Redis restart (case 13), no subscribe is
refused by a stale pooled connection, and every client already there rejoins."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
import websockets
from redis.asyncio import Redis

from changeflow_channels.testing.processes import RedisServer

from ..polling import poll_until
from .conftest import running_daphne

pytestmark = pytest.mark.slow

CLIENTS = 1000


async def group_size(redis_url: str, stream: str) -> int:
    client = Redis.from_url(redis_url)
    try:
        return int(await client.zcard(f"asgi:group:{stream}"))
    finally:
        await client.aclose()


async def subscribe_all(url: str, stream: str, count: int) -> list:
    """``count`` clients subscribing to ``stream`` at once: their connections; every
    one must have been answered ``subscribed``."""
    origin = url.replace("ws://", "http://").split("/ws/")[0]

    async def subscriber() -> tuple[object, dict]:
        connection = await websockets.connect(url, open_timeout=60, origin=origin)
        await connection.send(json.dumps({"action": "subscribe", "stream": stream, "id": 1}))
        while True:
            frame = json.loads(await asyncio.wait_for(connection.recv(), 60))
            if frame.get("id") == 1:
                return connection, frame

    results = await asyncio.gather(*(subscriber() for _ in range(count)), return_exceptions=True)
    answered = [result for result in results if isinstance(result, tuple)]
    failures = [result for result in results if isinstance(result, BaseException)]
    refused = [frame for _, frame in answered if frame.get("event") != "subscribed"]
    if failures or refused:
        await asyncio.gather(*(c.close() for c, _ in answered), return_exceptions=True)
    assert failures == [] and refused == [], (
        len(failures),
        len(refused),
        failures[:2],
        refused[:2],
    )
    return [connection for connection, _ in answered]


async def test_a_thousand_clients_subscribe_at_once_and_500_leave_at_once(
    daphne, redis_url, stream_db
):
    stream = f"{stream_db}.burst"
    connections = await subscribe_all(daphne, stream, CLIENTS)
    try:
        assert await group_size(redis_url, stream) == CLIENTS

        await asyncio.gather(*(connection.close() for connection in connections[:500]))

        async def members() -> int:
            return await group_size(redis_url, stream)

        await poll_until(members, lambda n: n == CLIENTS - 500, 30, lambda n: f"{n} members")
    finally:
        await asyncio.gather(
            *(connection.close() for connection in connections), return_exceptions=True
        )


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    with RedisServer.running() as server:
        yield server


async def test_after_a_redis_restart_every_subscribe_succeeds_and_every_client_rejoins(
    process_env, own_redis, stream_db
):
    env = {**process_env, "CHANGEFLOW_TEST_REDIS_URL": own_redis.url}
    stream = f"{stream_db}.restart"
    with running_daphne(env, "daphne-redis-restart") as port:
        url = f"ws://127.0.0.1:{port}/ws/changeflow/"
        before = await subscribe_all(url, stream, 150)  # a pool of many connections
        try:
            await asyncio.to_thread(own_redis.restart)
            after = await subscribe_all(url, stream, 150)
            before += after

            async def members() -> int:
                return await group_size(own_redis.url, stream)

            # The 150 clients of before the restart rejoined the group Redis forgot.
            await poll_until(members, lambda n: n == 300, 30, lambda n: f"{n} members")
        finally:
            await asyncio.gather(*(c.close() for c in before), return_exceptions=True)
