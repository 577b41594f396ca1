"""The channel layer's connection pools against a real redis-server of the test's own:
a burst of commands at once, and the first commands after Redis restarted (issue 14,
cases 12 and 13).

channels_redis's own pool raises ``MaxConnectionsError`` beyond 100 commands at
once, and after a restart the first command on a pooled connection fails with
``ConnectionError``. ``redis_layer.RedisChannelLayer`` must do neither.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from changeflow_channels.redis_layer import (
    LAYER_ERRORS,
    OUTAGES,
    RedisChannelLayer,
    group_discard_retrying,
    receive_forever,
)
from changeflow_channels.testing.processes import RedisServer

from .polling import poll_until

PREFIX = "pools"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer.running() as server:
        yield server


@pytest.fixture
async def layer(redis_server: RedisServer) -> AsyncIterator[RedisChannelLayer]:
    channel_layer = RedisChannelLayer(
        hosts=[{"address": redis_server.url, "socket_timeout": None}], prefix=PREFIX
    )
    yield channel_layer
    await channel_layer.flush()


async def members(server: RedisServer, group: str) -> int:
    client = Redis.from_url(server.url)
    try:
        return int(await client.zcard(f"{PREFIX}:group:{group}"))
    finally:
        await client.aclose()


async def test_a_thousand_group_adds_at_once_on_one_layer(
    layer: RedisChannelLayer, redis_server: RedisServer
) -> None:
    channels = [f"specific.client!{index}" for index in range(1000)]
    results = await asyncio.gather(
        *(layer.group_add("burst", channel) for channel in channels), return_exceptions=True
    )
    failures = [result for result in results if isinstance(result, BaseException)]
    assert failures == []
    assert await members(redis_server, "burst") == 1000
    results = await asyncio.gather(
        *(layer.group_discard("burst", channel) for channel in channels), return_exceptions=True
    )
    assert [result for result in results if isinstance(result, BaseException)] == []
    assert await members(redis_server, "burst") == 0


async def test_the_first_commands_after_a_redis_restart_succeed(
    layer: RedisChannelLayer, redis_server: RedisServer
) -> None:
    # Many pooled connections, all of them to the Redis about to go away.
    await asyncio.gather(*(layer.group_add("before", f"c!{index}") for index in range(150)))
    await asyncio.to_thread(redis_server.restart)

    await layer.group_add("after", "specific.one!x")
    await layer.send("after.channel", {"type": "hello"})
    results = await asyncio.gather(
        *(layer.group_add("after", f"c!{index}") for index in range(150)), return_exceptions=True
    )
    assert [result for result in results if isinstance(result, BaseException)] == []
    assert await members(redis_server, "after") == 151
    assert (await layer.receive("after.channel"))["type"] == "hello"


RECOVERED = {"type": "changeflow.layer_recovered"}


async def test_every_consumer_of_a_process_hears_of_a_redis_restart_once(
    layer: RedisChannelLayer, redis_server: RedisServer
) -> None:
    """channels_redis's receives of one process share one pop: only one of them sees
    the connection fail. The reconnecting pool must not hide that from it either
    (a receive is never retried), and the others are told: all must rejoin their
    groups, which the restarted Redis forgot."""
    channels = [await layer.new_channel() for _ in range(100)]
    told: dict[str, int] = {channel: 0 for channel in channels}
    returned: dict[str, int] = {channel: 0 for channel in channels}
    for channel in channels:
        OUTAGES.listen(
            layer, channel, lambda channel=channel: told.__setitem__(channel, told[channel] + 1)
        )

    async def consumer(channel: str) -> None:
        while True:
            message = await receive_forever(layer, channel, recovered=RECOVERED)
            if message == RECOVERED:
                returned[channel] += 1

    consumers = [asyncio.ensure_future(consumer(channel)) for channel in channels]
    try:
        await asyncio.sleep(0.3)  # every receive waiting
        await asyncio.to_thread(redis_server.restart)

        async def heard() -> dict[str, int]:
            return {channel: told[channel] + returned[channel] for channel in channels}

        await poll_until(heard, lambda seen: all(seen.values()), 15, str)
        await asyncio.sleep(1.0)  # and nobody hears it twice
        assert await heard() == {channel: 1 for channel in channels}
        await layer.send(channels[2], {"type": "after"})  # receiving goes on
    finally:
        for task in consumers:
            task.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)
        for channel in channels:
            OUTAGES.forget(layer, channel)


async def test_group_discard_is_retried_until_redis_is_back(
    layer: RedisChannelLayer, redis_server: RedisServer
) -> None:
    await layer.group_add("leaving", "specific.gone!1")
    redis_server.stop()
    back = asyncio.ensure_future(asyncio.to_thread(redis_server.start))
    try:
        # The first attempts fail (nothing listens), a later one reaches the new Redis.
        await group_discard_retrying(layer, "leaving", "specific.gone!1", attempts=40)
    finally:
        await back
    assert await members(redis_server, "leaving") == 0


async def test_group_discard_gives_up_with_the_layer_error(
    layer: RedisChannelLayer, redis_server: RedisServer
) -> None:
    await layer.group_add("leaving", "specific.gone!1")
    redis_server.stop()
    try:
        with pytest.raises(LAYER_ERRORS):
            await group_discard_retrying(layer, "leaving", "specific.gone!1", attempts=2)
    finally:
        redis_server.start()
