"""Where a change is delivered: the ``db.table`` group, then the hooks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from . import metrics
from .changes import BATCH_TYPE
from .hooks import HookRunner

logger = logging.getLogger("changeflow_channels")

MAX_PENDING = 1000  # changes waiting per stream before the feed waits


class Delivery:
    """Sends each change to its group and queues it for the handler hooks.

    One sender per stream keeps the changes in ``seq`` order. A change that
    finds its stream idle goes out at once; changes that pile up while a send
    is in flight travel together as one ``changeflow.batch`` (at most
    ``batch_size``, CHANGEFLOW_BATCH_SIZE): one channel-layer message instead of many, which is what
    lets a busy table outrun the channel layer's per-message cost. Beyond
    ``MAX_PENDING`` waiting changes the feed waits (backpressure), so memory
    stays bounded and RethinkDB holds the rest.

    A channel layer that fails (Redis down or restarting) is retried with
    backoff; nothing read from the feed is dropped.
    """

    def __init__(
        self, channel_layer: Any, hooks: HookRunner, *, verbose: bool, batch_size: int = 100
    ) -> None:
        self.channel_layer = channel_layer
        self.batch_size = max(1, batch_size)
        self.hooks = hooks
        self.verbose = verbose
        self._pending: dict[str, list[dict[str, Any]]] = {}
        self._senders: dict[str, asyncio.Task[None]] = {}
        self._room = asyncio.Event()
        self._room.set()
        # Several workers (table_sharing.py): a stream whose lease is no longer
        # safe is not sent (another worker may follow it by now).
        self.may_send: Callable[[str], bool] | None = None

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
        while len(self._pending.get(stream, ())) >= MAX_PENDING:
            self._room.clear()
            await self._room.wait()
        self._pending.setdefault(stream, []).append(message)
        if stream not in self._senders:
            self._senders[stream] = asyncio.ensure_future(self._send_all(stream))

    async def drain(self) -> None:
        """Until every change handed over has been sent."""
        while self._senders:
            await asyncio.wait(list(self._senders.values()))

    async def _send_all(self, stream: str) -> None:
        stream_metrics = metrics.for_stream(stream)
        try:
            while self._pending.get(stream):
                pending = self._pending[stream]
                batch, self._pending[stream] = (
                    pending[: self.batch_size],
                    pending[self.batch_size :],
                )
                self._room.set()
                if self.may_send is not None and not self.may_send(stream):
                    logger.warning("%s: %d change(s) not sent: lease lost", stream, len(batch))
                    continue
                first = batch[0]
                message = first
                if len(batch) > 1:
                    message = {
                        "type": BATCH_TYPE,
                        "database": first["database"],
                        "table": first["table"],
                        "changes": batch,
                    }
                if not await self._group_send(stream, message):
                    continue
                stream_metrics.sent(batch)
                for message in batch:
                    if self.verbose:
                        logger.info("%s #%d %s", stream, message["seq"], message["change"]["type"])
                    self.hooks.submit(message["database"], message["table"], message["change"])
        finally:
            self._pending.pop(stream, None)
            del self._senders[stream]
            self._room.set()

    async def _group_send(self, group: str, message: dict[str, Any]) -> bool:
        """Send, retrying while the layer fails; False if the lease was lost meanwhile."""
        delay = 0.1
        while True:
            try:
                await self.channel_layer.group_send(group, message)
                return True
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if self.may_send is not None and not self.may_send(group):
                    logger.warning("%s: changes not sent: lease lost (%r)", group, error)
                    return False
                logger.warning("channel layer unavailable (%r); retrying in %.1f s", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
