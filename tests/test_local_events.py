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


async def test_a_keyed_timer_is_cancelled_or_replaced_by_its_key():
    """A sync request's timers go when it is answered (issue 14, item 6): a resend
    after its answer is traffic for nothing."""
    never: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
    events = LocalEvents(lambda: never)
    events.later(0.01, {"type": "resend", "n": 1}, key=("r1", "retry"))
    events.later(0.02, {"type": "timeout"}, key=("r1", "timeout"))
    events.later(0.03, {"type": "resend", "n": 2}, key=("r1", "retry"))  # replaces the first
    events.cancel(("r1", "timeout"))
    events.cancel(("nothing", "retry"))  # no such timer: nothing happens
    assert await asyncio.wait_for(events(), 2) == {"type": "resend", "n": 2}
    assert not events.timers and not events.keyed
    events.later(0.01, {"type": "resend", "n": 3}, key=("r2", "retry"))
    events.cancel(("r2", "retry"))
    await asyncio.sleep(0.05)
    assert events.events.empty() and not events.timers
    events.close()
    never.cancel()
