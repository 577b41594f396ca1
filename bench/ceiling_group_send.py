"""The channel layer's limit: one ``group_send`` per message to a group with one
receiver, the receiver in a process of its own (``python -m bench.ceiling_group_send``)."""

from __future__ import annotations

import asyncio
import sys
import time

from channels_redis.core import RedisChannelLayer

from . import stack

NAME = "ceiling_group_send"
DESCRIPTION = "channels_redis group_send messages/s to one receiver, unbatched"

GROUP = "bench.group_send"
CAPACITY = 1_000_000  # no drops: the receiver's pace is what is measured


def layer(url: str) -> RedisChannelLayer:
    return RedisChannelLayer(hosts=[{"address": url, "socket_timeout": None}], capacity=CAPACITY)


async def receive(url: str, count: int) -> None:
    """The receiver: joins the group, says ``ready``, receives ``count`` messages,
    prints the seconds from the first to the last."""
    receiver = layer(url)
    channel = await receiver.new_channel()
    await receiver.group_add(GROUP, channel)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await receiver.receive(channel)
    started = time.monotonic()
    for _ in range(count - 1):
        await receiver.receive(channel)
    sys.stdout.write(f"{time.monotonic() - started}\n")
    sys.stdout.flush()
    await receiver.close_pools()


async def run(quick: bool = False) -> dict[str, float]:
    count = 3_000 if quick else 10_000
    url = stack.get().redis.url
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.ceiling_group_send", url, str(count),
        stdout=asyncio.subprocess.PIPE, cwd=str(stack.REPO),
    )  # fmt: skip
    assert process.stdout is not None
    await asyncio.wait_for(process.stdout.readline(), 30)
    sender = layer(url)
    message = {"type": "bench.message", "change": {"type": "add", "new_val": {"n": 0}}, "seq": 0}
    started = time.monotonic()
    for seq in range(count):
        await sender.group_send(GROUP, {**message, "seq": seq})
    sent = time.monotonic() - started
    received = float(await asyncio.wait_for(process.stdout.readline(), 120))
    await process.wait()
    await sender.close_pools()
    # Sender and receiver each pay per message; the slower of the two sets the pace.
    return {"ceiling_group_send_per_s": count / max(sent, received)}


if __name__ == "__main__":
    asyncio.run(receive(sys.argv[1], int(sys.argv[2])))
