"""Pushes: ``channel_layer.send`` of ``changeflow.push`` messages (one document
each), written by the worker; per second from the first sent to the last answered."""

from __future__ import annotations

import asyncio
import time

from channels.exceptions import ChannelFull
from channels_redis.core import RedisChannelLayer

from changeflow_channels.pushes import build_push

from . import stack

NAME = "pushes"
DESCRIPTION = "channel_layer.send pushes/s written by the worker (one document each)"


async def run(quick: bool = False) -> dict[str, float]:
    count = 3_000 if quick else 10_000
    url = stack.get().redis.url
    layer = RedisChannelLayer(hosts=[{"address": url, "socket_timeout": None}])
    reply = await layer.new_channel()
    full = 0
    started = time.monotonic()
    for n in range(count):
        last = n == count - 1
        push = build_push(
            stack.DATABASE,
            "pushes",
            {"n": n, "t": time.time()},
            reply_channel=reply if last else None,
        )
        while True:
            try:
                await layer.send(stack.PUSH_CHANNEL, push)
                break
            except ChannelFull:  # the worker's channel holds 100: wait for room
                full += 1
                await asyncio.sleep(0.005)
    answer = await asyncio.wait_for(layer.receive(reply), 120)
    elapsed = time.monotonic() - started
    await layer.close_pools()
    if not answer.get("ok"):
        raise RuntimeError(f"the last push failed: {answer}")
    return {"push_per_s": count / elapsed, "push_channel_full_waits": full}
