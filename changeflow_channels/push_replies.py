"""The answers to one process's waited-for pushes, on one reply channel.

``apush_to_flow(wait=True)`` without a reply channel of the caller's sends its push
with the process's reply channel (one per event loop and channel layer) and an
``id`` of ``{"push": n, "id": <the caller's id>}``; the worker answers a round's
pushes on that channel in one ``changeflow.push.results`` (``batch_answers``), and
one receiving task hands each answer to its push by ``n``, the caller's ``id`` put
back. One Redis receive per round of the worker, instead of one per push.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import weakref
from typing import Any

from .pushes import RESULT_TYPE, RESULTS_TYPE
from .redis_layer import LAYER_ERRORS

logger = logging.getLogger(__name__)

# Seconds before a receive is tried again after the channel layer failed.
RETRY_RECEIVE = 0.5


def tagged_id(number: int, request_id: Any) -> dict[str, Any]:
    """The ``id`` a push carries to the worker: its number here, and the caller's."""
    return {"push": number, "id": request_id}


class PushReplies:
    """The process's reply channel on one loop and layer, and the pushes awaiting answers."""

    def __init__(self, layer: Any, channel: str) -> None:
        self.layer = layer
        self.channel = channel
        self.numbers = itertools.count(1)
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._task: asyncio.Future[None] | None = None

    def expect(self) -> tuple[int, asyncio.Future[dict[str, Any]]]:
        """A number for a push, and the future of its answer (``forget`` it when done)."""
        number = next(self.numbers)
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[number] = answer
        if self._task is None:
            self._task = asyncio.ensure_future(self._receive())
        return number, answer

    def forget(self, number: int) -> None:
        self.waiting.pop(number, None)
        if not self.waiting and self._task is not None:
            # Nothing awaited: no receive left pending on the loop.
            self._task.cancel()
            self._task = None

    async def _receive(self) -> None:
        while self.waiting:
            try:
                message = await self.layer.receive(self.channel)
            except LAYER_ERRORS as error:  # the callers time out and retry as they choose
                logger.warning("receiving push answers failed (%r)", error)
                await asyncio.sleep(RETRY_RECEIVE)
                continue
            if message.get("type") == RESULTS_TYPE and isinstance(message.get("results"), list):
                for result in message["results"]:
                    self._deliver(result)
            elif message.get("type") == RESULT_TYPE:
                self._deliver(message)
        self._task = None

    def _deliver(self, result: Any) -> None:
        tag = result.get("id") if isinstance(result, dict) else None
        number = tag.get("push") if isinstance(tag, dict) else None
        answer = self.waiting.get(number) if isinstance(number, int) else None
        if answer is None or answer.done():
            return  # a late answer (a push that timed out, or answered already)
        assert isinstance(tag, dict)
        answer.set_result({**result, "id": tag.get("id")})


_replies: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[int, tuple[Any, PushReplies]]
] = weakref.WeakKeyDictionary()


async def replies_for(layer: Any) -> PushReplies:
    """The running loop's ``PushReplies`` for ``layer``."""
    per_loop = _replies.setdefault(asyncio.get_running_loop(), {})
    found = per_loop.get(id(layer))
    if found is not None and found[0] is layer:
        return found[1]
    replies = PushReplies(layer, await layer.new_channel("changeflow-reply."))
    found = per_loop.get(id(layer))  # another task made one meanwhile
    if found is not None and found[0] is layer:
        return found[1]
    per_loop[id(layer)] = (layer, replies)
    return replies
