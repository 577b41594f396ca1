"""A thousand clients subscribing at once on one Daphne, and 500 leaving at once
(issue 14, case 12): no subscribe refused as ``unavailable`` (channels_redis's own
pool raised ``MaxConnectionsError`` beyond 100 commands at once), and no member of
a client gone left in its group."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from redis.asyncio import Redis

from ..polling import poll_until

pytestmark = pytest.mark.slow

CLIENTS = 1000


async def group_size(redis_url: str, stream: str) -> int:
    client = Redis.from_url(redis_url)
    try:
        return int(await client.zcard(f"asgi:group:{stream}"))
    finally:
        await client.aclose()


async def test_a_thousand_clients_subscribe_at_once_and_500_leave_at_once(
    daphne, redis_url, stream_db
):
    stream = f"{stream_db}.burst"
    origin = daphne.replace("ws://", "http://").split("/ws/")[0]

    async def subscriber() -> tuple[object, dict]:
        connection = await websockets.connect(daphne, open_timeout=60, origin=origin)
        await connection.send(json.dumps({"action": "subscribe", "stream": stream, "id": 1}))
        while True:
            frame = json.loads(await asyncio.wait_for(connection.recv(), 60))
            if frame.get("id") == 1:
                return connection, frame

    results = await asyncio.gather(*(subscriber() for _ in range(CLIENTS)), return_exceptions=True)
    connections = [result[0] for result in results if isinstance(result, tuple)]
    try:
        failures = [result for result in results if isinstance(result, BaseException)]
        refused = [
            frame
            for _, frame in (r for r in results if isinstance(r, tuple))
            if frame.get("event") != "subscribed"
        ]
        assert failures == [] and refused == [], (failures[:3], refused[:3])
        assert await group_size(redis_url, stream) == CLIENTS

        await asyncio.gather(*(connection.close() for connection in connections[:500]))

        async def members() -> int:
            return await group_size(redis_url, stream)

        await poll_until(members, lambda n: n == CLIENTS - 500, 30, lambda n: f"{n} members")
    finally:
        await asyncio.gather(
            *(connection.close() for connection in connections), return_exceptions=True
        )
