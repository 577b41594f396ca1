"""The cluster tests' own writer stops in bounded time even when no write can land (a
cluster that lost its majority once kept a test's teardown waiting for ever)."""

from __future__ import annotations

import asyncio

from changeflow_channels.testing.processes import free_port

from ..polling import poll_until
from .direct_writer import DirectWriter


async def test_stop_gives_up_a_write_that_cannot_land():
    writer = DirectWriter({"host": "127.0.0.1", "port": free_port()}, "db", "t", rate=100.0)
    await writer.start()

    async def retried() -> int:  # nobody listens: every attempt fails and is tried again
        return writer.retried

    await poll_until(retried, lambda n: n >= 3, 10, lambda n: f"{n} attempts")
    await asyncio.wait_for(writer.stop(timeout=0.2), 5)
    assert writer.acknowledged == set()
