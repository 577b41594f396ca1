"""The catch-up server: answers consumers' ``changeflow.sync`` requests.

A consumer that found a gap asks for the changes it missed; a snapshot
subscription asks for the table's documents. Each request is answered by
``Flow.sync``, from the followed table's history and documents, in the
background (a snapshot must not wait behind pushes). After a Redis restart every
subscription asks at once, so the traffic is bounded:

- identical requests (same table, same ``since``, same ``snapshot``) that arrive
  while one is waiting for its answer join it: the answer is computed once and
  sent to each of their reply channels, each with its own ``id``;
- at most ``SYNC_CONCURRENCY`` answers are computed at a time (the others wait
  their turn; waiting for a restarting feed takes no turn);
- at most ``SYNC_PER_STREAM`` answers of one stream are sent at a time
  (``sync_pacing.StreamTurns``): the others wait, their pages shared, not copied;
- an answer is sent in pages of about ``CHANGEFLOW_BATCH_BYTES`` at most
  (``sync.answer_pages``, cut once for all its targets): no channel message is
  unbounded; a page goes to a Daphne process's channel only when fewer than
  ``PAGES_AHEAD`` pages sent to it are still there (``sync_pacing.Pacer``): Redis holds
  a few pages per process, never whole answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..sync import SyncError, SyncRequest, answer_pages, parse_sync
from .flow import Flow
from .sync_pacing import Pacer, StreamTurns

logger = logging.getLogger(__name__)

Reply = Callable[[str, dict[str, Any]], Awaitable[object]]

# Sync answers computed and sent at once; further requests wait their turn.
SYNC_CONCURRENCY = 8

# What makes two requests identical: the same answer serves both.
Key = tuple[str, str, tuple[str | None, int] | None, bool]


def request_key(request: SyncRequest) -> Key:
    return (request.database, request.table, request.since, request.snapshot)


@dataclass
class Waiting:
    """The requests one answer is for: the first, and those that joined it."""

    request: SyncRequest
    message: dict[str, Any]
    joined: list[tuple[SyncRequest, dict[str, Any]]] = field(default_factory=list)

    def add(self, request: SyncRequest, message: dict[str, Any]) -> None:
        targets = [(self.request.reply_channel, self.request.id)] + [
            (other.reply_channel, other.id) for other, _ in self.joined
        ]
        if (request.reply_channel, request.id) not in targets:  # a resend: answered already
            self.joined.append((request, message))


class Catchup:
    """Answers sync requests concurrently (at most ``concurrency`` at a time),
    identical ones once; ``close()`` cancels those still running."""

    def __init__(self, flow: Flow, reply: Reply, *, concurrency: int = SYNC_CONCURRENCY) -> None:
        self.flow = flow
        self.reply = reply
        self.page_bytes = flow.settings.batch_bytes
        self._turns = asyncio.Semaphore(concurrency)
        self._stream_turns = StreamTurns()
        self._pacer = Pacer(getattr(flow, "channel_layer", None))
        # Requests whose answer is not computed yet: identical ones join them.
        self._waiting: dict[Key, Waiting] = {}
        self._answering: set[asyncio.Task[None]] = set()

    def take(self, message: dict[str, Any]) -> None:
        """Answer ``message`` (a ``changeflow.sync`` request) in the background."""
        try:
            request = parse_sync(message)
        except SyncError as error:
            logger.error("sync request refused: %s", error)
            return
        key = request_key(request)
        waiting = self._waiting.get(key)
        if waiting is not None:
            waiting.add(request, message)
            return
        waiting = self._waiting[key] = Waiting(request, message)
        self._start(self._answer(key, waiting))

    def _start(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    def close(self) -> None:
        for task in self._answering:
            task.cancel()
        self._waiting.clear()

    async def _answer(self, key: Key, waiting: Waiting) -> None:
        request = waiting.request
        try:
            # A (re)starting feed is waited for without taking a turn (identical
            # requests still join meanwhile).
            await self.flow.sync_ready(request)
            async with self._turns:
                try:
                    answer = await self.flow.sync(request, waiting.message)
                finally:
                    # Computed (or failed): later requests need an answer of their own.
                    if self._waiting.get(key) is waiting:
                        del self._waiting[key]
            if answer is None:  # forwarded to the worker following the table
                for other, message in waiting.joined:
                    self._start(self._forward(other, message))
                return
            pages = list(answer_pages(answer, self.page_bytes))  # cut once for all
            # Sent without a turn (a paced answer must not hold up the others' reads),
            # at most SYNC_PER_STREAM answers of a stream at once.
            async with self._stream_turns(request.stream):
                # Joined requests of a Daphne process whose channel stayed full (one
                # channel per process in channels_redis) would each wait as long again.
                stuck: set[str] = set()
                for target in [request, *(other for other, _ in waiting.joined)]:
                    process = _process_of(target.reply_channel)
                    if process not in stuck and not await self._send(pages, target):
                        stuck.add(process)
        except Exception:  # the task's boundary: the consumer's timeout turns this into a resync
            logger.exception("sync request for %s failed", request.stream)

    async def _forward(self, request: SyncRequest, message: dict[str, Any]) -> None:
        """A joined request whose table another worker follows: forwarded on its own."""
        try:
            answer = await self.flow.sync(request, message)
            if answer is not None:
                await self._send(list(answer_pages(answer, self.page_bytes)), request)
        except Exception:  # the task's boundary, as in _answer
            logger.exception("sync request for %s failed", request.stream)

    async def _send(self, pages: list[dict[str, Any]], request: SyncRequest) -> bool:
        """An answer's ``pages`` to ``request``'s reply channel, with its ``id``, each
        once the channel has room (``Pacer``). A page that could not be sent (``reply``
        says False: the channel stayed full, or the layer stayed down) ends it: the
        answer is incomplete anyway, and the consumer asks again; the rest would only
        hold up the other answers."""
        for page in pages:
            await self._pacer.room(request.reply_channel)
            if await self.reply(request.reply_channel, {**page, "id": request.id}) is False:
                return False
            self._pacer.sent(request.reply_channel)
        return True


def _process_of(channel: str) -> str:
    """The process part of a reply channel (``specific.abc!`` of ``specific.abc!xyz``):
    channels_redis keeps one Redis list per process, full or not for all its channels."""
    head, bang, _ = channel.partition("!")
    return head + bang if bang else channel
