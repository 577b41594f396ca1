"""The channel layer's limit for pushes: channels_redis ``send`` of push-sized
messages to one channel, drained by a bare ``receive`` loop in a process of its
own (``python -m bench.ceiling_send``).

The sender is the one ``bench.pushes`` uses (``send_all``: several concurrent
sending tasks), so this ceiling and ``push_per_s`` differ only in what reads the
channel: a bare loop here, the worker there.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from channels.exceptions import ChannelFull
from channels_redis.core import RedisChannelLayer

from changeflow_channels.pushes import build_push

from . import receiver, stack
from .receiver import receive_and_time

NAME = "ceiling_send"
DESCRIPTION = "channels_redis send of push-sized messages/s to one channel, bare receive loop"

CHANNEL = "bench.send"
CAPACITY = 1_000_000  # no ChannelFull: the slower side's pace is what is measured
# Concurrent sending tasks: one task waits for four Redis round trips per send;
# several keep the sending process busy instead (more gain nothing on 2 cores).
SENDERS = 8


def layer(url: str, capacity: int = CAPACITY) -> RedisChannelLayer:
    return RedisChannelLayer(hosts=[{"address": url, "socket_timeout": None}], capacity=capacity)


def push_message(n: int, reply_channel: str | None = None) -> dict[str, Any]:
    """A one-document push, as ``bench.pushes`` sends it."""
    return build_push(
        stack.DATABASE, "pushes", {"n": n, "t": time.time()}, reply_channel=reply_channel
    )


async def send_all(
    sender: RedisChannelLayer, channel: str, messages: list[list[dict[str, Any]]]
) -> int:
    """Send each list of ``messages`` in order from a task of its own, all tasks at
    once; return how often a full channel made a task wait."""
    full = 0

    async def send_in_order(own: list[dict[str, Any]]) -> None:
        nonlocal full
        for message in own:
            while True:
                try:
                    await sender.send(channel, message)
                    break
                except ChannelFull:  # the reader's pace: wait for room
                    full += 1
                    await asyncio.sleep(0.002)

    await asyncio.gather(*(send_in_order(own) for own in messages))
    return full


def split(count: int, tasks: int = SENDERS) -> list[range]:
    """``range(count)`` in ``tasks`` interleaved parts."""
    return [range(start, count, tasks) for start in range(tasks)]


async def receive(url: str, count: int) -> None:
    """The receiver process: receives and times ``count`` messages."""
    await receive_and_time(layer(url), CHANNEL, count)


async def run(quick: bool = False) -> dict[str, float]:
    count = 3_000 if quick else 10_000
    url = stack.get().redis.url
    process = await receiver.start("bench.ceiling_send", url, count)
    sender = layer(url)
    messages = [[push_message(n) for n in part] for part in split(count)]
    started = time.monotonic()
    await send_all(sender, CHANNEL, messages)
    sent = time.monotonic() - started
    received = await receiver.elapsed(process)
    await sender.close_pools()
    # Sender and receiver each pay per message; the slower of the two sets the pace.
    return {
        "ceiling_send_per_s": count / max(sent, received),
        "ceiling_send_sender_per_s": count / sent,
        "ceiling_send_receiver_per_s": count / received,
    }


if __name__ == "__main__":
    asyncio.run(receive(sys.argv[1], int(sys.argv[2])))
