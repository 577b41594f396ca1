"""The channel layer's limit: one ``group_send`` per message to a group with one
receiver, the receiver in a process of its own (``python -m bench.ceiling_group_send``)."""

from __future__ import annotations

import asyncio
import sys
import time

from channels_redis.core import RedisChannelLayer

from . import receiver, stack
from .receiver import receive_and_time

NAME = "ceiling_group_send"
DESCRIPTION = "channels_redis group_send messages/s to one receiver, unbatched"

GROUP = "bench.group_send"
CAPACITY = 1_000_000  # no drops: the receiver's pace is what is measured


def layer(url: str) -> RedisChannelLayer:
    return RedisChannelLayer(hosts=[{"address": url, "socket_timeout": None}], capacity=CAPACITY)


async def receive(url: str, count: int) -> None:
    """The receiver process: joins the group, then receives and times ``count`` messages."""
    reader = layer(url)
    channel = await reader.new_channel()
    await reader.group_add(GROUP, channel)
    await receive_and_time(reader, channel, count)


async def run(quick: bool = False) -> dict[str, float]:
    count = 3_000 if quick else 10_000
    url = stack.get().redis.url
    process = await receiver.start("bench.ceiling_group_send", url, count)
    sender = layer(url)
    message = {"type": "bench.message", "change": {"type": "add", "new_val": {"n": 0}}, "seq": 0}
    started = time.monotonic()
    for seq in range(count):
        await sender.group_send(GROUP, {**message, "seq": seq})
    sent = time.monotonic() - started
    received = await receiver.elapsed(process)
    await sender.close_pools()
    # Sender and receiver each pay per message; the slower of the two sets the pace.
    return {"ceiling_group_send_per_s": count / max(sent, received)}


if __name__ == "__main__":
    asyncio.run(receive(sys.argv[1], int(sys.argv[2])))
