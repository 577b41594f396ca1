"""Waiting on state that can only be read, not awaited (Redis keys, a metrics page, room in
a full channel), and on log records (``LogEvent``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from channels.exceptions import ChannelFull

T = TypeVar("T")

POLL_EVERY = 0.05


async def poll_until(
    read: Callable[[], Awaitable[T]],
    predicate: Callable[[T], bool],
    timeout: float,
    failure: Callable[[T], str],
) -> T:
    """``await read()`` until ``predicate`` holds; ``AssertionError(failure(last))``
    after ``timeout`` seconds. Polled as a monitoring tool would poll."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await read()
        if predicate(value):
            return value
        if loop.time() > deadline:
            raise AssertionError(failure(value))
        await asyncio.sleep(POLL_EVERY)


async def send_when_room(
    layer: Any, channel: str, message: dict[str, Any], timeout: float = 30.0
) -> None:
    """Send, waiting for room while ``channel`` is full (the worker behind, as on a busy
    machine), as a sender keeping every message would; ``TimeoutError`` after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            await layer.send(channel, message)
            return
        except ChannelFull:
            if loop.time() > deadline:
                raise TimeoutError(f"{channel} stayed full for {timeout} s") from None
            await asyncio.sleep(POLL_EVERY)  # the layer has no event for room: poll


class LogEvent(logging.Handler):
    """Sets ``event`` when a record containing ``text`` is logged (from any thread)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.event = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        self.seen = False

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen = True
            self.loop.call_soon_threadsafe(self.event.set)
