"""The receiving side of the channel-layer ceilings: a bare ``receive`` loop in a
process of its own, so that sender and receiver each get a core's worth of time.

``python -m bench.<scenario> URL COUNT`` runs the scenario's ``receive``, which
calls ``receive_and_time``; the scenario starts it with ``start`` and reads its
time with ``elapsed``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from . import stack


async def receive_and_time(receiver: Any, channel: str, count: int) -> None:
    """Say ``ready``, receive ``count`` messages on ``channel``, print the seconds
    from the first to the last."""
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await receiver.receive(channel)
    started = time.monotonic()
    for _ in range(count - 1):
        await receiver.receive(channel)
    sys.stdout.write(f"{time.monotonic() - started}\n")
    sys.stdout.flush()
    await receiver.close_pools()


async def start(module: str, url: str, count: int) -> asyncio.subprocess.Process:
    """``python -m module url count``, once it said ``ready``."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, url, str(count),
        stdout=asyncio.subprocess.PIPE, cwd=str(stack.REPO),
    )  # fmt: skip
    assert process.stdout is not None
    await asyncio.wait_for(process.stdout.readline(), 30)
    return process


async def elapsed(process: asyncio.subprocess.Process) -> float:
    """The receiver's seconds from its first message to its last."""
    assert process.stdout is not None
    seconds = float(await asyncio.wait_for(process.stdout.readline(), 120))
    await process.wait()
    return seconds
