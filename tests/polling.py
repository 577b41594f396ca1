"""Waiting on state that can only be read, not awaited (Redis keys, a metrics page), and on
log records (``LogEvent``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

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
