"""Pushes of one process to one worker channel, sent together when they wait together.

A lone push is sent at once, as a plain ``changeflow.push``. While a send is in
flight, the pushes that come meanwhile wait, and go in the next send as one
``changeflow.push.batch`` (one channel-layer message, one Redis round trip),
in the order they came. Each caller learns whether its own push was sent (or
gets the send's error); its answer still comes on its own reply channel.

``coalescer_for(layer, channel)`` is the process's coalescer for that channel on
the running event loop: every ``apush_to_flow`` and every websocket consumer of
the process share it.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from .pushes import BATCH_TYPE, MAX_BATCH

logger = logging.getLogger(__name__)

# The documents one batch may carry at most (bytes of JSON, when the sender knows
# them): a larger push still goes, in a batch of its own.
MAX_BATCH_BYTES = 1 << 20

Send = Callable[[dict[str, Any]], Awaitable[None]]


def batch_message(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """What is sent for ``messages``: the push itself when it is alone."""
    if len(messages) == 1:
        return messages[0]
    return {"type": BATCH_TYPE, "pushes": messages}


class PushCoalescer:
    """Sends messages with ``send``, one send in flight at a time, coalescing
    those that wait (at most ``max_pushes`` messages and ``max_bytes`` per send)."""

    def __init__(
        self, send: Send, max_pushes: int = MAX_BATCH, max_bytes: int = MAX_BATCH_BYTES
    ) -> None:
        self._send = send
        self.max_pushes = max_pushes
        self.max_bytes = max_bytes
        self._waiting: deque[tuple[dict[str, Any], int, asyncio.Future[None]]] = deque()
        self._task: asyncio.Future[None] | None = None
        self.sends = 0  # messages sent (for tests and the bench)

    async def send(self, message: dict[str, Any], size: int = 0) -> None:
        """Send ``message`` (``size``: its documents' bytes, 0 if unknown) with the
        others waiting; return once sent, or raise the send's error."""
        sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((message, size, sent))
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        await sent

    def _next_batch(self) -> list[tuple[dict[str, Any], int, asyncio.Future[None]]]:
        batch = [self._waiting.popleft()]
        total = batch[0][1]
        while self._waiting and len(batch) < self.max_pushes:
            size = self._waiting[0][1]
            if total + size > self.max_bytes:
                break
            batch.append(self._waiting.popleft())
            total += size
        return batch

    async def _run(self) -> None:
        try:
            while self._waiting:
                batch = self._next_batch()
                live = [entry for entry in batch if not entry[2].done()]  # not cancelled
                if not live:
                    continue
                try:
                    await self._send(batch_message([message for message, _, _ in live]))
                except asyncio.CancelledError:
                    for _, _, sent in live:
                        sent.cancel()
                    raise
                except Exception as error:  # every caller of this send gets its error
                    for _, _, sent in live:
                        if not sent.done():
                            sent.set_exception(error)
                    continue
                self.sends += 1
                for _, _, sent in live:
                    if not sent.done():
                        sent.set_result(None)
        finally:
            self._task = None
            for _, _, sent in self._waiting:  # cancelled while waiting (loop closing)
                if not sent.done():
                    sent.cancel()
            self._waiting.clear()


# One coalescer per event loop, channel layer and channel.
_coalescers: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[int, str], tuple[Any, PushCoalescer]]
] = weakref.WeakKeyDictionary()


def coalescer_for(layer: Any, channel: str) -> PushCoalescer:
    """The running loop's coalescer of pushes sent with ``layer`` to ``channel``."""
    loop = asyncio.get_running_loop()
    per_loop = _coalescers.setdefault(loop, {})
    found = per_loop.get((id(layer), channel))
    if found is not None and found[0] is layer:
        return found[1]

    async def send(message: dict[str, Any]) -> None:
        await layer.send(channel, message)

    coalescer = PushCoalescer(send)
    per_loop[(id(layer), channel)] = (layer, coalescer)
    return coalescer
