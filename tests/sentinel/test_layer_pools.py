"""The channel layer's pools with a Sentinel host, as with a plain one (tests/test_redis_pools.py):
a burst of commands at once waits for connections instead of failing (channels_redis's own
Sentinel pool: ``MaxConnectionsError`` for 900 of 1,000 group_adds), and after a failover
the layer's commands go to the promoted replica."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from changeflow_channels.redis_layer import RedisChannelLayer
from changeflow_channels.testing.sentinel import SentinelTopology

pytestmark = pytest.mark.slow
PREFIX = "sentinel-pools"


async def members(topology: SentinelTopology, group: str) -> int:
    host, port = topology.master.address
    client = Redis(host=host, port=port)
    try:
        return int(await client.zcard(f"{PREFIX}:group:{group}"))
    finally:
        await client.aclose()


async def test_a_burst_and_the_first_commands_after_a_failover_succeed(
    topology: SentinelTopology,
) -> None:
    layer = RedisChannelLayer(hosts=[topology.host(socket_timeout=None)], prefix=PREFIX)
    try:
        channels = [f"specific.client!{index}" for index in range(1000)]
        results = await asyncio.gather(
            *(layer.group_add("burst", channel) for channel in channels), return_exceptions=True
        )
        assert [result for result in results if isinstance(result, BaseException)] == []
        assert await members(topology, "burst") == 1000

        await asyncio.to_thread(topology.wait_replicated)
        await asyncio.to_thread(topology.kill_master)
        await asyncio.to_thread(topology.wait_failover)
        # Every pooled connection was to the dead master.
        await layer.send("after.channel", {"type": "hello"})
        results = await asyncio.gather(
            *(layer.group_add("after", f"c!{index}") for index in range(150)),
            return_exceptions=True,
        )
        assert [result for result in results if isinstance(result, BaseException)] == []
        assert await members(topology, "after") == 150
        assert await members(topology, "burst") == 1000  # replicated before the kill
        assert (await layer.receive("after.channel"))["type"] == "hello"
    finally:
        await layer.flush()
