"""The consumer's own events: an ASGI ``receive`` that also hands out timers' events.

What ``LocalEvents.put`` (or a timer of ``later``) queues reaches the consumer's
``dispatch`` like any message, one at a time with every other (``web/delivery.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any


class LocalEvents:
    """An ASGI ``receive`` that also hands out the consumer's own events.

    Passed to the consumer's ``__call__`` instead of the server's ``receive``:
    what ``put`` (or a timer of ``later``) queues then reaches ``dispatch`` like
    a message, one at a time with every other. The server's ``receive`` is never
    cancelled midway: its pending call is kept for the next turn."""

    def __init__(self, receive: Callable[[], Awaitable[Any]]) -> None:
        self.receive = receive
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.timers: set[asyncio.TimerHandle] = set()
        self.keyed: dict[Hashable, asyncio.TimerHandle] = {}
        self._next: asyncio.Future[Any] | None = None

    def put(self, event: dict[str, Any]) -> None:
        self.events.put_nowait(event)

    def later(self, delay: float, event: dict[str, Any], key: Hashable | None = None) -> None:
        """Put ``event`` after ``delay`` seconds (unless closed or cancelled first).
        With a ``key``: one timer per key, this one replaces the one before, and
        ``cancel(key)`` cancels it."""
        handle: asyncio.TimerHandle

        def fire() -> None:
            self.timers.discard(handle)
            if key is not None and self.keyed.get(key) is handle:
                del self.keyed[key]
            self.put(event)

        if key is not None:
            self.cancel(key)
        handle = asyncio.get_running_loop().call_later(delay, fire)
        self.timers.add(handle)
        if key is not None:
            self.keyed[key] = handle

    def cancel(self, key: Hashable) -> None:
        """Cancel the timer of ``key`` (if any is still to fire)."""
        handle = self.keyed.pop(key, None)
        if handle is not None:
            handle.cancel()
            self.timers.discard(handle)

    async def __call__(self) -> Any:
        if not self.events.empty():
            return self.events.get_nowait()
        if self._next is None:
            self._next = asyncio.ensure_future(self.receive())
        event = asyncio.ensure_future(self.events.get())
        try:
            await asyncio.wait((self._next, event), return_when=asyncio.FIRST_COMPLETED)
        finally:
            event.cancel()
        if event.done() and not event.cancelled():
            return event.result()
        received, self._next = self._next, None
        return received.result()

    def close(self) -> None:
        for handle in self.timers:
            handle.cancel()
        self.timers.clear()
        self.keyed.clear()
        if self._next is not None:
            self._next.cancel()
            self._next = None
