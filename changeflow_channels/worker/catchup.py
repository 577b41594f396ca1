"""The catch-up server: answers consumers' ``changeflow.sync`` requests.

A consumer that found a gap asks for the changes it missed; a snapshot
subscription asks for the table's documents. Each request is answered on its
own (a snapshot must not wait behind another request, nor behind pushes) by
``Flow.sync``, from the followed table's history and documents.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..sync import SyncError, parse_sync
from .flow import Flow

logger = logging.getLogger(__name__)

Reply = Callable[[str, dict[str, Any]], Awaitable[None]]


class Catchup:
    """Answers sync requests concurrently; ``close()`` cancels those still running."""

    def __init__(self, flow: Flow, reply: Reply) -> None:
        self.flow = flow
        self.reply = reply
        self._answering: set[asyncio.Task[None]] = set()

    def take(self, message: dict[str, Any]) -> None:
        """Answer ``message`` (a ``changeflow.sync`` request) in the background."""
        task = asyncio.ensure_future(self._answer(message))
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    def close(self) -> None:
        for task in self._answering:
            task.cancel()

    async def _answer(self, message: dict[str, Any]) -> None:
        try:
            request = parse_sync(message)
        except SyncError as error:
            logger.error("sync request refused: %s", error)
            return
        try:
            answer = await self.flow.sync(request, message)
        except Exception:  # the task's boundary: the consumer's timeout turns this into a resync
            logger.exception("sync request for %s failed", request.stream)
            return
        if answer is not None:  # None: forwarded to the worker following the table
            await self.reply(request.reply_channel, answer)
