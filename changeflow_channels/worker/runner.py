"""The ``changeflow`` worker: the flow (feeds, hooks), and its channels' listeners.

The listeners hand pushes to the push pipeline (``push_batches.PushPipeline``)
and sync requests to the catch-up server (``catchup.Catchup``) directly; the
feeds run from the start, beside them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import uuid
from typing import Any

from channels.layers import get_channel_layer

from .. import metrics
from ..conf import ChangeflowSettings, get_settings
from ..names import InvalidName
from ..pushes import BATCH_TYPE, INVALID, READ_TYPE, PushError, batch_pushes, error_result
from ..redis_layer import LAYER_ERRORS, exclusive_pop, receive_forever
from ..rethink import first_of
from ..sync import SYNC_TYPE, sync_channel
from .catchup import Catchup
from .flow import READY_TIMEOUT, Flow, positive_seconds
from .hooks import HandlerError, load_handlers
from .leases import LeaseStore, redis_target
from .push_batches import POP_BATCH, PushPipeline, PushWindow
from .push_checked import PushReads
from .replies import send_reply
from .table_sharing import TICKS_PER_LEASE

logger = logging.getLogger(__name__)

# Seconds a receive in flight at shutdown may take to finish.
RECEIVE_GRACE = 1.0
# Seconds left to tasks that are still running when the worker exits.
EXIT_GRACE = 5.0


class ChangeflowWorker:
    """Receives pushes and sync requests on its channels and runs the flow until stopped."""

    def __init__(self, channel: str, channel_layer: Any, flow: Flow) -> None:
        self.channel = channel
        self.channel_layer = channel_layer
        self.flow = flow
        self.sync_channel = sync_channel(channel)
        # Several workers: sync requests for the tables this one follows, forwarded to it.
        self.own_sync_channel = flow.own_sync_channel
        self.stopping = asyncio.Event()
        # Several workers read the shared channels: each message must go to one only.
        self.pop = exclusive_pop(channel_layer) if flow.ownership.shared else None
        # Pushes received and not yet written: the listener takes no more than this.
        self.window = PushWindow()
        self.batches = itertools.count(1)  # numbers the batches received
        self.pipeline = PushPipeline(flow, self.reply, self.window)
        self.catchup = Catchup(flow, self.reply)
        # Reads before checked pushes (web/push_guard.py), answered beside the pushes.
        self.reads = PushReads(flow.writer, self.reply)

    async def reply(self, channel: str, answer: dict[str, Any]) -> bool:
        return await send_reply(self.channel_layer, channel, answer)

    def run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self.serve())
        finally:
            # Like asyncio.run(), but a task that ignores cancellation (a lost
            # cancel inside a library) cannot keep the worker from exiting.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=EXIT_GRACE))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def serve(self) -> None:
        """Run until SIGINT/SIGTERM (or ``stopping`` is set), then shut down cleanly."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, self.stopping.set)
        await self.arun()

    async def arun(self) -> None:
        """Run until ``stopping`` is set (on the caller's loop, without signal handlers)."""
        try:
            await self.handle()
        finally:
            self.pipeline.close()
            self.catchup.close()
            self.reads.close()

    async def handle(self) -> None:
        await self.flow.start()
        # Pushes are taken only once the feeds are open: a push written before
        # its table's feed is open would never be announced.
        started = asyncio.get_running_loop().time()
        opened = await self._wait_ready_unless_stopping()
        # The listeners (and the wait for feeds still opening) return once
        # ``stopping`` is set.
        listeners = [self.listener(self.channel), self.listener(self.sync_channel)]
        if self.own_sync_channel is not None:
            listeners.append(self.listener(self.own_sync_channel))
        if opened is False:
            listeners.append(self._ready_later(started))
        await asyncio.gather(*listeners)
        logger.info("changeflow worker stopping")
        await self._drain_pushes()
        # The changes of the pushes just written are on their way from
        # RethinkDB: deliver them before the feeds close.
        await self.flow.settle()
        await self._wait_receive_cleanup()
        await self.flow.stop()
        logger.info("changeflow worker stopped")

    async def _wait_ready_unless_stopping(self) -> bool | None:
        """Whether the feeds opened within READY_TIMEOUT (None: stopping first)."""
        first, opened = await first_of(self.flow.wait_ready(), self.stopping.wait())
        if first != 0:
            return None
        if opened:
            self._log_ready()
        else:
            logger.warning(
                "changeflow worker started, but the feeds were not all open within %g s",
                READY_TIMEOUT,
            )
        return bool(opened)

    async def _ready_later(self, started: float) -> None:
        """After that warning: say when the feeds are all open after all (many
        tables on a real RethinkDB take minutes). Pushes were taken meanwhile: each
        waits for its own table's feed (``feed_gate.py``)."""
        while not self.stopping.is_set():
            first, opened = await first_of(self.flow.wait_ready(), self.stopping.wait())
            if first == 0 and opened:
                self._log_ready(asyncio.get_running_loop().time() - started)
                return

    def _log_ready(self, after: float | None = None) -> None:
        logger.info(
            "changeflow worker ready: pushes on %r, following %d table(s)%s",
            self.channel,
            len(self.flow.feeds),
            "" if after is None else f", {after:.1f} s after its start",
        )

    async def listener(self, channel: str) -> None:
        """Receive until stopped; a bad message or a failing layer never stops it.

        On the push channel, what is received and not yet written stays within
        ``self.window``: every message taken takes one place of it."""
        window = self.window if channel == self.channel else None
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            while not self.stopping.is_set():
                limit = POP_BATCH
                if window is not None:
                    if not await self._room_unless_stopping(window, stop):
                        return
                    limit = window.take(POP_BATCH)
                messages = await self._receive_unless_stopping(channel, stop, limit)
                if window is not None:
                    window.release(limit - len(messages or ()))
                if messages is None:
                    return
                for message in messages:
                    await self.take(message, window)
        finally:
            stop.cancel()

    async def take(self, message: Any, window: PushWindow | None = None) -> None:
        """One message received: a sync request to the catch-up server, anything else
        to the push pipeline (which answers what is not a push with an error).
        ``window``: the message took one place of it, freed once it is written."""
        if not isinstance(message, dict) or not message.get("type"):
            if window is not None:
                window.release(1)
            await self._refuse(message, "message has no type; expected 'changeflow.push'")
        elif message["type"] == SYNC_TYPE:
            if window is not None:
                window.release(1)
            self.catchup.take(message)
        elif message["type"] == READ_TYPE:
            if window is not None:
                window.release(1)
            self.reads.take(message)
        elif message["type"] == BATCH_TYPE:
            await self._take_batch(message, window)
        else:
            self.pipeline.put(message)

    async def _take_batch(self, message: dict[str, Any], window: PushWindow | None) -> None:
        """A ``changeflow.push.batch``: each of its pushes goes to the pipeline as if
        it came alone (checked there, answered on its own reply channel); the batch
        took one place of ``window``, each push takes one."""
        try:
            pushes = batch_pushes(message)
        except PushError as error:
            if window is not None:
                window.release(1)
            given = message.get("pushes")
            for push in given if isinstance(given, list) and given else [message]:
                await self._refuse(push, str(error))
            return
        if window is not None:
            window.hold(len(pushes) - 1)
        batch = next(self.batches)
        for push in pushes:
            if isinstance(push, dict):
                self.pipeline.put(push, batch)
            else:
                if window is not None:
                    window.release(1)
                await self._refuse(push, "a push of a batch must be a push message (a dict)")

    async def _room_unless_stopping(self, window: PushWindow, stop: asyncio.Future[Any]) -> bool:
        """Wait until the window has room; False once stopping."""
        if window.room.is_set():
            return True
        await first_of(window.room.wait(), stop)
        return not self.stopping.is_set()

    async def _receive_unless_stopping(
        self, channel: str, stop: asyncio.Future[Any], limit: int = 1
    ) -> list[Any] | None:
        """The next messages (up to ``limit`` where several can be taken at once),
        or None once stopping.

        A receive is never cut short while it may be taking a message: a
        cancelled ``receive()`` can lose the message it was popping from Redis.
        On stop, an in-flight receive gets ``RECEIVE_GRACE`` seconds to finish;
        only an idle one (nothing to pop) is cancelled. Shared channels (several
        workers) are read in short pops instead, none of them ever cancelled.
        """
        pop = self.pop
        if pop is not None and channel != self.own_sync_channel:
            while not self.stopping.is_set():
                messages = await receive_forever(
                    self.channel_layer,
                    channel,
                    receive=lambda name: pop(name, limit),
                    should_stop=self.stopping.is_set,
                )
                if messages:
                    return messages
            return None
        receiving = asyncio.ensure_future(receive_forever(self.channel_layer, channel))
        await first_of(receiving, stop)
        if not receiving.done():
            await asyncio.wait([receiving], timeout=RECEIVE_GRACE)
        if receiving.done():
            return [receiving.result()]
        receiving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiving
        return None

    async def _wait_receive_cleanup(self) -> None:
        """channels_redis removes received messages from its backup queue in
        background tasks; cancelled, they would hand the messages out again."""
        wait_received = getattr(self.channel_layer, "wait_received", None)
        if wait_received is not None:
            with contextlib.suppress(*LAYER_ERRORS):
                await asyncio.wait_for(wait_received(), 5)

    async def _drain_pushes(self) -> None:
        """Wait until every push already received has been written and answered."""
        try:
            await asyncio.wait_for(self.pipeline.drain(), self.flow.settings.push_timeout + 5)
        except asyncio.TimeoutError:
            logger.error("pushes still being written at shutdown; gave up waiting")

    async def _refuse(self, message: Any, error: str) -> None:
        logger.error("refused a message on %r: %s", self.channel, error)
        metrics.count_push(None)
        reply = message.get("reply_channel") if isinstance(message, dict) else None
        if isinstance(reply, str) and reply:
            await self.reply(reply, error_result(message.get("id"), error, INVALID))


class WorkerConfigError(Exception):
    """The worker cannot start with these settings; the message says why."""


def lease_store(settings: ChangeflowSettings, layer: str) -> LeaseStore | None:
    """Leases in the channel layer's Redis (or CHANGEFLOW_REDIS); None without Redis."""
    lease_time = positive_seconds(settings.lease_time, "CHANGEFLOW_LEASE_TIME")
    target = redis_target(layer, settings.redis, settings.channel)
    if target is None:
        return None
    worker_id = uuid.uuid4().hex[:12]
    return LeaseStore(
        target,
        worker_id,
        lease_time,
        timeout=lease_time / TICKS_PER_LEASE,
        replicas=settings.lease_replicas,
    )


def create_worker(
    *, watch: list[str] | None = None, verbose: bool | None = None, layer: str = "default"
) -> ChangeflowWorker:
    """A worker built from the settings (what ``manage.py changeflow`` runs)."""
    settings = get_settings()
    channel_layer = get_channel_layer(layer)
    if channel_layer is None:
        raise WorkerConfigError("No channel layer is configured (CHANNEL_LAYERS).")
    try:
        handlers = load_handlers(settings.handlers, os.environ.get("DJANGO_SETTINGS_MODULE"))
        leases = lease_store(settings, layer)
        flow = Flow(settings, channel_layer, handlers, watch=watch, verbose=verbose, leases=leases)
    except (HandlerError, InvalidName, ValueError) as error:
        raise WorkerConfigError(str(error)) from error
    if leases is not None:
        logger.info(
            "changeflow worker %s: sharing tables through leases in %s (lease time %g s)",
            leases.worker_id,
            leases.description,
            settings.lease_time,
        )
    logger.info(
        "changeflow worker starting: RethinkDB %s, pushes on %r, watching %s, %d handler(s)",
        flow.address.where,
        settings.channel,
        ", ".join(flow.patterns.patterns),
        len(handlers),
    )
    return ChangeflowWorker(settings.channel, channel_layer, flow)
