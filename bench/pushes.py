"""Pushes: ``channel_layer.send`` of ``changeflow.push`` messages (one document
each), written by the worker; per second from the first sent to the last answered.

The sender is ``ceiling_send``'s (several concurrent sending tasks, messages
built beforehand), so that the worker, not the sender, sets the pace, and
``ceiling_send_per_s`` is the channel layer's limit for the same sender.
"""

from __future__ import annotations

import asyncio
import os
import time

from channels_redis.core import RedisChannelLayer

from . import stack
from .ceiling_send import push_message, send_all, split

NAME = "pushes"
DESCRIPTION = "channel_layer.send pushes/s written by the worker (one document each)"


async def run(quick: bool = False) -> dict[str, float]:
    count = 3_000 if quick else 10_000
    url = stack.get().redis.url
    # The worker's channel has the README's default capacity (100), as in production.
    layer = RedisChannelLayer(hosts=[{"address": url, "socket_timeout": None}])
    reply = await layer.new_channel()
    # The last push of each sending task asks for an answer: the worker writes a
    # table's pushes in order, so once every task's last is answered, all are written.
    messages = [
        [push_message(n, reply if n == part[-1] else None) for n in part] for part in split(count)
    ]
    meter = stack.CpuMeter({**stack.get().part_pids(), "sender": os.getpid()})
    started = time.monotonic()
    full = await send_all(layer, stack.PUSH_CHANNEL, messages)
    answers = [await asyncio.wait_for(layer.receive(reply), 120) for _ in messages]
    elapsed = time.monotonic() - started
    cpu = meter.percentages("push")  # percent of one core per process: which part binds
    await layer.close_pools()
    failed = [answer for answer in answers if not answer.get("ok")]
    if failed:
        raise RuntimeError(f"a push failed: {failed[0]}")
    return {"push_per_s": count / elapsed, "push_channel_full_waits": full, **cpu}
