"""Where a change is delivered: the ``db.table`` group, then the hooks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from .. import metrics
from ..changes import BATCH_TYPE, EPOCH_TYPE, epoch_message
from ..redis_layer import LAYER_ERRORS
from .group_sender import GroupSender, MessageTooLarge, Sent
from .hooks import HookRunner

logger = logging.getLogger(__name__)

MAX_PENDING = 1000  # changes waiting per stream before the feed waits (at least a batch)
# A member channel with this many messages waiting: its consumer is behind. The
# next message then waits (BEHIND_WAIT per message waiting, at most BEHIND_WAIT_MAX)
# for a full batch: as late as it would be read anyway, and fewer, larger
# messages let the consumer catch up instead of overflowing its channel.
BEHIND = 3
BEHIND_WAIT = 0.001
BEHIND_WAIT_MAX = 0.05
# After a send found member channels full (their consumers lost that message), the
# stream's position is announced again this long after, then twice as long each
# time while channels are still full, at most REANNOUNCE_TIMES times (a dead
# consumer's channel frees itself within channels_redis's expiry, 60 s).
REANNOUNCE_DELAY = 0.25
REANNOUNCE_DELAY_MAX = 8.0
REANNOUNCE_TIMES = 12


class Delivery:
    """Sends each change to its group and queues it for the handler hooks.

    One sender per stream keeps the changes in ``seq`` order. A change that
    finds its stream idle goes out at once; changes that pile up while a send
    is in flight travel together as one ``changeflow.batch`` (at most
    ``batch_size``, CHANGEFLOW_BATCH_SIZE, and about ``batch_bytes``,
    CHANGEFLOW_BATCH_BYTES, serialized): one channel-layer message instead of
    many, which is what lets a busy table outrun the channel layer's
    per-message cost. How many changes fit in ``batch_bytes`` is learnt from
    the stream's last message; a batch found larger is split before anything
    is sent (a single change larger than the bound still goes, alone). Beyond
    ``max_pending`` waiting changes the feed waits (backpressure), so memory
    stays bounded and RethinkDB holds the rest.

    A ``changeflow.epoch`` message (a feed's new epoch) takes its place in the
    same order, but always travels alone: never in a batch, never to the hooks.

    A member channel found full (channels_redis's capacity: a consumer far
    behind, or 1,000 clients arriving at once on one Daphne) loses that message,
    and on a table that goes quiet its consumers would never notice. So the
    stream's position is announced again (``changeflow.epoch`` with ``again``)
    once the channels have had time to drain: a consumer that missed changes
    asks for them (``Subscription.epoch_started``).

    A channel layer that fails (Redis down or restarting) is retried with
    backoff; nothing read from the feed is dropped, unless ``may_send`` says
    the stream is no longer this worker's to send (several workers: its lease
    is not safe any more, another worker may follow it by now).
    """

    def __init__(
        self,
        channel_layer: Any,
        hooks: HookRunner,
        *,
        verbose: bool,
        batch_size: int = 1000,
        batch_bytes: int = 262_144,
        may_send: Callable[[str], bool] = lambda stream: True,
    ) -> None:
        self.channel_layer = channel_layer
        self.sender = GroupSender(channel_layer)
        self.batch_size = max(1, batch_size)
        self.batch_bytes = max(1, batch_bytes)
        self.max_pending = max(MAX_PENDING, self.batch_size)
        self.hooks = hooks
        self.verbose = verbose
        self._pending: dict[str, list[dict[str, Any]]] = {}
        self._senders: dict[str, asyncio.Task[None]] = {}
        # Bytes per change of each stream's last message: how many fit in batch_bytes.
        self._change_bytes: dict[str, float] = {}
        # Streams whose sender waits for a full batch: (batch size, set when there).
        self._gathering: dict[str, tuple[int, asyncio.Event]] = {}
        self._room = asyncio.Event()
        self._room.set()
        self._may_send = may_send
        # The last message sent per stream, and the position re-announcements due.
        self._last: dict[str, dict[str, Any]] = {}
        self._reannouncing: dict[str, asyncio.Task[None]] = {}
        self._reannounced: dict[str, int] = {}  # re-announcements in a row that found channels full

    @property
    def busy(self) -> bool:
        return bool(self._senders)

    async def drain_stream(self, stream: str) -> None:
        """Until every change of ``stream`` handed over has been sent."""
        while stream in self._senders:
            await asyncio.wait([self._senders[stream]])

    def pending(self, stream: str) -> int:
        """Changes of ``stream`` read from its feed and not sent yet."""
        return len(self._pending.get(stream, ()))

    async def __call__(self, message: dict[str, Any]) -> None:
        stream = f"{message['database']}.{message['table']}"
        while len(self._pending.get(stream, ())) >= self.max_pending:
            self._room.clear()
            await self._room.wait()
        pending = self._pending.setdefault(stream, [])
        pending.append(message)
        gathering = self._gathering.get(stream)
        if gathering is not None and len(pending) >= gathering[0]:
            gathering[1].set()
        if stream not in self._senders:
            self._senders[stream] = asyncio.ensure_future(self._send_all(stream))

    async def drain(self) -> None:
        """Until every change handed over has been sent."""
        while self._senders:
            await asyncio.wait(list(self._senders.values()))

    def forget(self, stream: str) -> None:
        """``stream``'s table is gone: its position is not announced again."""
        task = self._reannouncing.pop(stream, None)
        if task is not None:
            task.cancel()
        self._last.pop(stream, None)
        self._reannounced.pop(stream, None)

    def close(self) -> None:
        """Stop the position re-announcements still due (shutting down)."""
        for task in self._reannouncing.values():
            task.cancel()
        self._reannouncing.clear()

    async def _send_all(self, stream: str) -> None:
        stream_metrics = metrics.for_stream(stream)
        try:
            while self._pending.get(stream):
                pending = self._pending[stream]
                limit = _before_epoch(pending, self._limit(stream))
                batch, self._pending[stream] = pending[:limit], pending[limit:]
                self._room.set()
                if not self._may_send(stream):
                    logger.warning("%s: %d change(s) not sent: lease lost", stream, len(batch))
                    continue
                if batch[0]["type"] == EPOCH_TYPE:
                    alone = await self._group_send(stream, batch[0], None)
                    if alone is not None:
                        self._after_send(stream, batch[0], alone.over, bool(batch[0].get("again")))
                    continue
                result = await self._send_batch(stream, batch)
                if result is None:
                    continue
                sent, backlog, over = result
                self._after_send(stream, sent[-1], over)
                stream_metrics.sent(sent)
                if self.verbose or self.hooks.handlers:  # else nothing to do per change
                    for message in sent:
                        if self.verbose:
                            logger.info(
                                "%s #%d %s", stream, message["seq"], message["change"]["type"]
                            )
                        self.hooks.submit(message["database"], message["table"], message["change"])
                if backlog >= BEHIND:
                    await self._gather(stream, min(BEHIND_WAIT_MAX, backlog * BEHIND_WAIT))
        finally:
            self._pending.pop(stream, None)
            del self._senders[stream]
            self._room.set()

    def _limit(self, stream: str) -> int:
        """Changes of ``stream`` for its next message: ``batch_size``, fewer when
        they would not fit in ``batch_bytes``."""
        change_bytes = self._change_bytes.get(stream)
        if not change_bytes:
            return self.batch_size
        return max(1, min(self.batch_size, int(self.batch_bytes / change_bytes)))

    async def _gather(self, stream: str, seconds: float) -> None:
        """Until a full batch of ``stream`` is pending, for at most ``seconds``."""
        limit = self._limit(stream)
        if len(self._pending.get(stream, ())) >= limit:
            return
        full = asyncio.Event()
        self._gathering[stream] = (limit, full)
        try:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(full.wait(), seconds)
        finally:
            del self._gathering[stream]

    def _after_send(
        self, stream: str, last: dict[str, Any], over: int, again: bool = False
    ) -> None:
        """Remember the stream's position; when member channels were full, announce
        it again later (see the class's docstring)."""
        self._last[stream] = last
        if not over:
            if again:
                self._reannounced.pop(stream, None)  # every channel had room: done
            return
        times = self._reannounced.get(stream, 0) if again else 0
        if times >= REANNOUNCE_TIMES:
            logger.warning("%s: member channels still full; position not announced again", stream)
            self._reannounced.pop(stream, None)
            return
        self._reannounced[stream] = times + 1
        if stream not in self._reannouncing:
            delay = min(REANNOUNCE_DELAY * 2**times, REANNOUNCE_DELAY_MAX)
            task = asyncio.ensure_future(self._reannounce(stream, delay))
            self._reannouncing[stream] = task

    async def _reannounce(self, stream: str, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
        finally:
            self._reannouncing.pop(stream, None)
        last = self._last.get(stream)
        if last is None or not self._may_send(stream):
            return
        again = epoch_message(
            last["database"], last["table"], last["epoch"], last["seq"], since_creation=False
        )
        again["again"] = True
        try:
            await self(again)
        except Exception:  # the task's boundary: logged, the next full channel tries again
            logger.exception("%s: position not announced again", stream)

    async def _send_batch(
        self, stream: str, batch: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], int, int] | None:
        """Send ``batch`` as one message, or only its head when the whole is over
        ``batch_bytes`` (the rest goes back in front of the pending changes).
        Returns the changes sent, the receivers' backlog and the member channels
        found full (see ``Sent``); None if the lease was lost meanwhile."""
        while True:
            first = batch[0]
            message = first
            if len(batch) > 1:
                message = {
                    "type": BATCH_TYPE,
                    "database": first["database"],
                    "table": first["table"],
                    "changes": batch,
                }
            try:
                sent = await self._group_send(
                    stream, message, self.batch_bytes if len(batch) > 1 else None
                )
            except MessageTooLarge as error:
                self._change_bytes[stream] = error.size / len(batch)
                keep = max(1, min(len(batch) - 1, len(batch) * self.batch_bytes // error.size))
                self._pending[stream] = batch[keep:] + self._pending.get(stream, [])
                batch = batch[:keep]
                continue
            if sent is None:
                return None
            if sent.size:
                self._change_bytes[stream] = sent.size / len(batch)
            return batch, sent.backlog, sent.over

    async def _group_send(
        self, group: str, message: dict[str, Any], max_bytes: int | None
    ) -> Sent | None:
        """Send, retrying while the layer fails; None if the lease was lost meanwhile."""
        delay = 0.1
        while True:
            try:
                return await self.sender.send(group, message, max_bytes)
            except LAYER_ERRORS as error:
                if not self._may_send(group):
                    logger.warning("%s: changes not sent: lease lost (%r)", group, error)
                    return None
                logger.warning("channel layer unavailable (%r); retrying in %.1f s", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                if not self._may_send(group):
                    # Lost while waiting: another worker follows the table now, and a
                    # late message of ours (an epoch) would move its subscribers back.
                    logger.warning("%s: changes not sent: lease lost", group)
                    return None


def _before_epoch(pending: list[dict[str, Any]], limit: int) -> int:
    """How many of the first ``limit`` pending messages go next: those before the
    first epoch message, or that message alone when it comes first."""
    for index, message in enumerate(pending[:limit]):
        if message["type"] == EPOCH_TYPE:
            return max(index, 1)
    return limit
