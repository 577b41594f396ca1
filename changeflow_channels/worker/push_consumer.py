"""The worker's consumer of its push channel (and of the sync channel beside it)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels.consumer import AsyncConsumer
from channels.exceptions import ChannelFull

from ..redis_layer import ResilientChannelMixin
from ..sync import SYNC_TYPE, SyncError, parse_sync
from .push_batches import PushPipeline

logger = logging.getLogger("changeflow_channels")

# Tries (with backoff, about 5 s in all) to answer on a full reply channel.
REPLY_ATTEMPTS = 10


class PushConsumer(ResilientChannelMixin, AsyncConsumer):
    """Runs in the worker on ``CHANGEFLOW_CHANNEL``: writes pushes in order and
    answers each (``push_batches.PushPipeline``: several per query where that is free).

    The worker puts its ``Flow`` in ``scope["changeflow"]`` and, on the push
    channel, the window that bounds what it takes from Redis in
    ``scope["changeflow_window"]``. Nothing a sender puts in a message can stop
    this consumer: bad pushes are answered with an error (on ``reply_channel``
    when given) and logged.
    """

    pipeline: PushPipeline | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self.pipeline is not None:
                self.pipeline.close()

    async def dispatch(self, message: dict[str, Any]) -> None:
        try:
            await self._dispatch(message)
        except Exception:  # a bug of ours must not end the consumer and its queue
            logger.exception("push consumer failed on a message of type %r", message.get("type"))

    async def _dispatch(self, message: dict[str, Any]) -> None:
        if message.get("type") == SYNC_TYPE:
            self._spawn_sync(message)
            window = self.scope.get("changeflow_window")
            if window is not None:
                window.release(1)
            return
        # Pushes, anything unknown (answered with an error) and the worker's drain marker.
        if self.pipeline is None:
            self.pipeline = PushPipeline(
                self.scope["changeflow"], self._send_reply, self.scope.get("changeflow_window")
            )
        self.pipeline.put(message)

    def _spawn_sync(self, message: dict[str, Any]) -> None:
        # Answered concurrently: a snapshot must not wait behind queued pushes.
        tasks = self.__dict__.setdefault("_sync_tasks", set())
        task = asyncio.ensure_future(self._sync(message))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _sync(self, message: dict[str, Any]) -> None:
        try:
            request = parse_sync(message)
        except SyncError as error:
            logger.error("sync request refused: %s", error)
            return
        try:
            answer = await self.scope["changeflow"].sync(request, message)
        except Exception:
            logger.exception("sync request for %s failed", request.stream)
            return  # the consumer's timeout turns this into a resync
        if answer is not None:  # None: forwarded to the worker following the table
            await self._send_reply(request.reply_channel, answer)

    async def _send_reply(self, channel: str, result: dict[str, Any]) -> None:
        # A reply channel can be full for a moment (a Daphne process's consumers
        # share one in channels_redis, and a burst fills it): try for a while.
        delay = 0.05
        for attempt in range(REPLY_ATTEMPTS):
            try:
                await self.channel_layer.send(channel, result)
                return
            except ChannelFull:
                if attempt + 1 < REPLY_ATTEMPTS:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)
            except Exception as error:
                logger.warning("could not answer on %s: %r", channel, error)
                return
        logger.warning("could not answer on %s: the channel stayed full", channel)
