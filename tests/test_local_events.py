"""The consumer's own events (its timers) share the server's ``receive``, one at a time."""

from __future__ import annotations

import asyncio

from changeflow_channels.web.delivery import LocalEvents


async def test_events_and_server_messages_come_out_one_by_one_and_none_is_lost():
    server: asyncio.Queue[dict] = asyncio.Queue()
    calls = 0

    async def receive() -> dict:
        nonlocal calls
        calls += 1
        return await server.get()

    events = LocalEvents(receive)
    events.put({"type": "first"})
    assert await events() == {"type": "first"}
    waiting = asyncio.ensure_future(events())
    await asyncio.sleep(0.01)
    events.put({"type": "timer"})
    assert await waiting == {"type": "timer"}
    assert calls == 1  # the server's receive still pending, not cancelled
    await server.put({"type": "websocket.receive"})
    assert await events() == {"type": "websocket.receive"}
    assert calls == 1
    events.close()


async def test_later_puts_its_event_after_the_delay_and_close_cancels_the_rest():
    never: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
    events = LocalEvents(lambda: never)
    events.later(0.01, {"type": "soon"})
    events.later(60, {"type": "never"})
    assert await asyncio.wait_for(events(), 2) == {"type": "soon"}
    assert len(events.timers) == 1
    waiting = asyncio.ensure_future(events())
    await asyncio.sleep(0.01)
    waiting.cancel()  # what the consumer's end does to its sources
    events.close()
    assert not events.timers
    await asyncio.sleep(0)
    assert never.cancelled()
